"""The run form: `/argo run <template>` for a template that takes files opens it.

A slash command cannot carry files, so the form asks for them: one `file_input` per declared
input artifact and one field per declared parameter (defaults filled in, an `enum` as a
select, optional ones marked so by Slack). Pure functions: the view, reading a submission,
and the per-field errors that keep the form open (`response_action: errors`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.blocks import (
    file_input,
    input_block,
    modal,
    plain_text_input,
    section,
    static_select,
)
from bot.inputs import file_problem
from bot.messages import escape
from bot.models import ParameterSpec, TemplateInfo
from bot.parameters import parameter_problems
from bot.slack_files import SlackFile

CALLBACK_ID = "argo_run_modal"
ARTIFACT_BLOCK = "artifact:"
PARAMETER_BLOCK = "parameter:"
FILES_ACTION = "files"
VALUE_ACTION = "value"
TITLE_LIMIT = 24
MAX_BLOCKS = 100
MAX_SELECT_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_TEXT_INPUT = 3000


class FormError(ValueError):
    """The template cannot be shown as a form (the message says what to do instead)."""


@dataclass(frozen=True)
class FormContext:
    """Carried in `private_metadata`: where the command was typed, and its response_url."""

    template: str
    channel_id: str
    response_url: str | None = None

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str) -> FormContext:
        data = json.loads(text or "{}")
        if not isinstance(data, dict) or not data.get("template") or not data.get("channel_id"):
            raise ValueError("private_metadata does not describe a run form")
        return cls(
            template=str(data["template"]),
            channel_id=str(data["channel_id"]),
            response_url=data.get("response_url") or None,
        )


@dataclass(frozen=True)
class Submission:
    context: FormContext
    parameters: dict[str, str] = field(default_factory=dict)  # fields left empty are absent
    files: dict[str, list[SlackFile]] = field(default_factory=dict)  # artifact -> files


def run_form(template: TemplateInfo, given: Mapping[str, str], context: FormContext) -> dict:
    """The modal view for one template, pre-filled with defaults and `given` values."""
    blocks: list[dict[str, Any]] = []
    if template.description:
        blocks.append(section(escape(template.description)))
    for artifact in template.input_artifacts:
        blocks.append(
            input_block(
                ARTIFACT_BLOCK + artifact,
                f"File for {artifact}",
                file_input(FILES_ACTION, max_files=1),
                optional=False,
            )
        )
    for spec in template.parameters:
        blocks.append(_parameter_block(spec, given.get(spec.name, spec.default)))
    if len(blocks) > MAX_BLOCKS:
        raise FormError(
            f"`{template.name}` has too many parameters for a form; mention me with the files "
            "attached instead."
        )
    title = f"Run {template.name}"
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1] + "…"
    return modal(
        callback_id=CALLBACK_ID,
        title=title,
        submit="Start",
        close="Cancel",
        private_metadata=context.dump(),
        blocks=blocks,
    )


def _parameter_block(spec: ParameterSpec, initial: str | None) -> dict[str, Any]:
    if _fits_a_select(spec.enum):
        element = static_select(VALUE_ACTION, spec.enum, initial=initial)
    else:
        prefill = initial if initial and len(initial) <= MAX_TEXT_INPUT else None
        element = plain_text_input(VALUE_ACTION, initial_value=prefill)
    return input_block(
        PARAMETER_BLOCK + spec.name,
        spec.name,
        element,
        hint=spec.description[:2000] if spec.description else None,
        optional=not spec.required,
    )


def _fits_a_select(choices: tuple[str, ...]) -> bool:
    return 0 < len(choices) <= MAX_SELECT_OPTIONS and all(
        0 < len(c) <= MAX_OPTION_TEXT for c in choices
    )


def read_submission(view: Mapping[str, Any]) -> Submission:
    """What the person filled in; ValueError when the view is not one of our forms."""
    context = FormContext.load(str(view.get("private_metadata") or ""))
    values = (view.get("state") or {}).get("values") or {}
    parameters: dict[str, str] = {}
    files: dict[str, list[SlackFile]] = {}
    for block_id, actions in values.items():
        if block_id.startswith(PARAMETER_BLOCK):
            state = actions.get(VALUE_ACTION) or {}
            value = state.get("value")
            if state.get("type") == "static_select":
                value = (state.get("selected_option") or {}).get("value")
            if value not in (None, ""):
                parameters[block_id.removeprefix(PARAMETER_BLOCK)] = str(value)
        elif block_id.startswith(ARTIFACT_BLOCK):
            raw = (actions.get(FILES_ACTION) or {}).get("files") or []
            files[block_id.removeprefix(ARTIFACT_BLOCK)] = [
                SlackFile.from_api(item) for item in raw if isinstance(item, dict)
            ]
    return Submission(context=context, parameters=parameters, files=files)


def submission_errors(
    template: TemplateInfo, submission: Submission, *, max_bytes: int
) -> dict[str, str]:
    """Problems by block id, in plain text (no mrkdwn in modal errors); empty when valid."""
    errors: dict[str, str] = {}
    for artifact in template.input_artifacts:
        chosen = submission.files.get(artifact, [])
        if len(chosen) != 1:
            errors[ARTIFACT_BLOCK + artifact] = "Attach one file."
        elif problem := file_problem(chosen[0], max_bytes=max_bytes, allowed_types=frozenset()):
            errors[ARTIFACT_BLOCK + artifact] = problem
    for name, problems in parameter_problems(template, submission.parameters).items():
        if template.parameter(name) is not None and name not in submission.parameters:
            problems = ["Required."]
        errors[PARAMETER_BLOCK + name] = " ".join(problems)
    return {block: text.replace("`", "") for block, text in errors.items()}


def files_in_declared_order(
    template: TemplateInfo, submission: Submission
) -> tuple[SlackFile, ...]:
    return tuple(submission.files[a][0] for a in template.input_artifacts)
