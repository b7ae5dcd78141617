"""Parse the text after `/argo` (and after a mention) into a command.

Slack sends the text with `&`, `<` and `>` escaped and may turn straight quotes into curly
ones; both are undone here so that `msg="hello world"` means what the person typed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal, cast

from bot.models import RunAction

TEMPLATE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SMART_QUOTES = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"}
)
_QUOTING = re.compile(r"['\"\\]")
_SHELL_SPACE = re.compile(r"[ \t\r\n]+")  # shlex's whitespace, not every Unicode space
_SLACK_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|[^>]*)?>")


class CommandError(ValueError):
    """The command text cannot be understood; the message says how to fix it."""


@dataclass(frozen=True)
class RunCommand:
    template: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HelpCommand:
    unknown_verb: str | None = None


@dataclass(frozen=True)
class TemplatesCommand:
    pass


ListScope = Literal["mine", "all"]
ListPhase = Literal["running", "failed", "succeeded"]


@dataclass(frozen=True)
class ListCommand:
    scope: ListScope = "all"
    phase: ListPhase | None = None


@dataclass(frozen=True)
class StatusCommand:
    workflow: str


@dataclass(frozen=True)
class LogsCommand:
    workflow: str
    step: str | None = None


@dataclass(frozen=True)
class ActionCommand:
    """stop, terminate, retry or resubmit one workflow."""

    action: RunAction
    workflow: str


@dataclass(frozen=True)
class AuditCommand:
    """The newest audit entries, of one workflow (or template) or of everything: admins only."""

    target: str | None = None


LifecycleCommand = (
    TemplatesCommand | ListCommand | StatusCommand | LogsCommand | ActionCommand | AuditCommand
)
Command = RunCommand | HelpCommand | LifecycleCommand


def unescape_slack(text: str) -> str:
    if "<" not in text and "&" not in text:  # most commands: nothing to undo
        return text
    text = _SLACK_LINK.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse_command(text: str) -> Command:
    words = _split(text)
    if not words or words[0].lower() in ("help", "-h", "--help"):
        return HelpCommand()
    verb, rest = words[0].lower(), words[1:]
    if verb == "run":
        return _parse_run(rest)
    if verb in _LIFECYCLE_VERBS:
        return _parse_lifecycle(verb, rest)
    return HelpCommand(unknown_verb=words[0])


def split_words(text: str) -> list[str]:
    """Words as a POSIX shell splits them (quotes group, backslashes escape).

    Text with no quote or backslash (most commands) is split on shlex's own whitespace
    directly: the same words at a fraction of shlex's cost, on the path Slack times.
    """
    if not _QUOTING.search(text):
        return [word for word in _SHELL_SPACE.split(text) if word]
    return shlex.split(text, posix=True)


def _split(text: str) -> list[str]:
    if not text.isascii():  # smart quotes are not: ASCII text skips the translation
        text = text.translate(_SMART_QUOTES)
    cleaned = unescape_slack(text).strip()
    try:
        return split_words(cleaned)
    except ValueError as error:
        raise CommandError(
            f"I could not read that command: {error} (check your quotes)."
        ) from error


def _parse_run(words: list[str]) -> RunCommand:
    if not words:
        raise CommandError("Which template? Usage: `run <template> [name=value ...]`.")
    template, assignments = words[0], words[1:]
    if not TEMPLATE_NAME.match(template):
        raise CommandError(
            f"`{template[:80]}` is not a template name (lowercase letters, digits, `-` and `.`)."
        )
    parameters: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            raise CommandError(
                f"`{assignment[:80]}` is not a parameter: write `name=value` "
                '(quote values with spaces: `msg="hello world"`).'
            )
        if not PARAMETER_NAME.match(name):
            raise CommandError(f"`{name[:80]}` is not a valid parameter name.")
        if name in parameters:
            raise CommandError(f"Parameter `{name}` is given twice.")
        parameters[name] = value
    return RunCommand(template=template, parameters=parameters)


_LIFECYCLE_VERBS = (
    "templates",
    "list",
    "status",
    "logs",
    "audit",
    *(action.value for action in RunAction),
)
_LIST_SCOPES: tuple[ListScope, ...] = ("mine", "all")
_LIST_PHASES: tuple[ListPhase, ...] = ("running", "failed", "succeeded")


def _parse_lifecycle(verb: str, words: list[str]) -> LifecycleCommand:
    if verb == "templates":
        _no_more(verb, words)
        return TemplatesCommand()
    if verb == "list":
        return _parse_list(words)
    if verb == "audit":
        _no_more(verb, words[1:])
        return AuditCommand(target=_target_name(words[0]) if words else None)
    if not words:
        usage = "logs <workflow> [step]" if verb == "logs" else f"{verb} <workflow>"
        raise CommandError(f"Which workflow? Usage: `{usage}`.")
    workflow = _workflow_name(words[0])
    if verb == "logs":
        _no_more(verb, words[2:])
        return LogsCommand(workflow=workflow, step=words[1][:253] if len(words) > 1 else None)
    _no_more(verb, words[1:])
    if verb == "status":
        return StatusCommand(workflow=workflow)
    return ActionCommand(action=RunAction(verb), workflow=workflow)


def _parse_list(words: list[str]) -> ListCommand:
    scope: ListScope = "all"
    phase: ListPhase | None = None
    for word in (w.lower() for w in words):
        if word in _LIST_SCOPES:
            scope = cast(ListScope, word)
        elif word in _LIST_PHASES:
            phase = cast(ListPhase, word)
        else:
            raise CommandError(
                f"`{word[:40]}` is not a list filter. Usage: "
                "`list [mine|all] [running|failed|succeeded]`."
            )
    return ListCommand(scope=scope, phase=phase)


def _workflow_name(word: str) -> str:
    """A workflow name as people paste it: `csv-summary-x7k2p`, with or without backticks."""
    name = word.strip("`*_ ").lower()
    if len(name) > 63 or not TEMPLATE_NAME.match(name):
        raise CommandError(f"`{word[:80]}` is not a workflow name.")
    return name


def _target_name(word: str) -> str:
    """A workflow or template name, as `_workflow_name` reads it but up to 253 characters."""
    name = word.strip("`*_ ").lower()
    if len(name) > 253 or not TEMPLATE_NAME.match(name):
        raise CommandError(f"`{word[:80]}` is not a workflow or template name.")
    return name


def _no_more(verb: str, extra: list[str]) -> None:
    if extra:
        raise CommandError(f"`{verb}` does not take `{' '.join(extra)[:80]}`. Try `help`.")
