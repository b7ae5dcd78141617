"""Which file from Slack becomes which input artifact of a run: checked before anything happens.

Everything here is pure, so every refusal (too big, wrong type, a file nobody can place) is
decided before the bot posts, records, downloads or creates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.filenames import extension, safe_file_name, unique_file_names
from bot.messages import code, format_size
from bot.models import TemplateInfo
from bot.slack_files import SlackFile


class InputError(Exception):
    """A file cannot become an input; the message says why, in plain words."""


@dataclass(frozen=True)
class RunInputs:
    """The files that came with a request to start a run, and what constrains them."""

    files: tuple[SlackFile, ...] = ()
    # The person's message whose thread the run lives in (mentions and drops); None: the
    # bot posts a thread root of its own (the run modal).
    thread_ts: str | None = None
    # Extensions a drop zone accepts (empty: any).
    allowed_types: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class PlannedInput:
    artifact: str
    file: SlackFile
    safe_name: str

    def key(self, workflow: str) -> str:
        return f"sessions/{workflow}/inputs/{self.safe_name}"


def split_assignments(
    template: TemplateInfo, given: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """`name=value` words naming a declared input artifact say which file goes there."""
    declared = set(template.input_artifacts)
    parameters = {k: v for k, v in given.items() if k not in declared}
    assignments = {k: v for k, v in given.items() if k in declared}
    return parameters, assignments


def file_problem(file: SlackFile, *, max_bytes: int, allowed_types: frozenset[str]) -> str | None:
    """Why this one file cannot be taken, judged from what Slack says about it."""
    safe = safe_file_name(file.name)
    if allowed_types and extension(safe) not in allowed_types:
        allowed = ", ".join(sorted(allowed_types))
        return f"{code(file.name)} is not a file type I take here (allowed: {allowed})."
    if file.size is not None and file.size > max_bytes:
        return (
            f"{code(file.name)} is {format_size(file.size)}; the limit is {format_size(max_bytes)}."
        )
    return None


def plan_inputs(
    template: TemplateInfo,
    inputs: RunInputs,
    assignments: Mapping[str, str],
    *,
    max_bytes: int,
) -> list[PlannedInput]:
    """Match files to the template's declared input artifacts, or raise InputError."""
    files, declared = list(inputs.files), list(template.input_artifacts)
    if files and not declared:
        raise InputError(
            f"{code(template.name)} takes no input files. Run it without attachments, "
            "or pick a template that takes files."
        )
    problems = [
        problem
        for file in files
        if (problem := file_problem(file, max_bytes=max_bytes, allowed_types=inputs.allowed_types))
    ]
    if problems:
        raise InputError("\n".join(problems))

    chosen: dict[str, SlackFile] = {}
    for artifact, wanted in assignments.items():
        matches = [f for f in files if wanted in (f.name, safe_file_name(f.name))]
        if not matches:
            names = ", ".join(code(f.name) for f in files) or "none"
            raise InputError(
                f"`{artifact}={wanted}`: no attached file is called {code(wanted)} "
                f"(attached: {names})."
            )
        if len(matches) > 1:
            raise InputError(f"Several attached files are called {code(wanted)}; rename one.")
        chosen[artifact] = matches[0]
    used = {id(f) for f in chosen.values()}
    if len(used) != len(chosen):
        raise InputError("One file cannot be given to two inputs.")
    rest_files = [f for f in files if id(f) not in used]
    rest_artifacts = [a for a in declared if a not in chosen]
    if len(rest_files) > len(rest_artifacts):
        raise InputError(
            f"{len(files)} files are attached but {code(template.name)} takes "
            f"{len(declared)} ({', '.join(code(a) for a in declared)}). "
            "Attach fewer, or say which is which with `<input>=<file name>`."
        )
    if len(rest_files) < len(rest_artifacts):
        missing = ", ".join(code(a) for a in rest_artifacts[len(rest_files) :])
        raise InputError(
            f"{code(template.name)} needs a file for {missing}: attach one "
            f"(several: say which is which with `<input>=<file name>`)."
        )
    chosen.update(zip(rest_artifacts, rest_files, strict=True))
    ordered = [(artifact, chosen[artifact]) for artifact in declared]
    safe_names = unique_file_names(file.name for _, file in ordered)
    return [
        PlannedInput(artifact=artifact, file=file, safe_name=safe)
        for (artifact, file), safe in zip(ordered, safe_names, strict=True)
    ]
