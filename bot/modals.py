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

from slack_sdk.models.blocks import (
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.blocks.block_elements import FileInputElement
from slack_sdk.models.views import View

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
    blocks: list[Any] = []
    if template.description:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=escape(template.description))))
    for artifact in template.input_artifacts:
        blocks.append(
            InputBlock(
                block_id=ARTIFACT_BLOCK + artifact,
                label=PlainTextObject(text=f"File for {artifact}"),
                element=FileInputElement(action_id=FILES_ACTION, max_files=1),
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
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        title=PlainTextObject(text=title),
        submit=PlainTextObject(text="Start"),
        close=PlainTextObject(text="Cancel"),
        private_metadata=context.dump(),
        blocks=blocks,
    )
    return view.to_dict()


def _parameter_block(spec: ParameterSpec, initial: str | None) -> InputBlock:
    element: Any
    if _fits_a_select(spec.enum):
        options = [Option(text=PlainTextObject(text=value), value=value) for value in spec.enum]
        chosen = next((o for o in options if o.value == initial), None)
        element = StaticSelectElement(
            action_id=VALUE_ACTION, options=options, initial_option=chosen
        )
    else:
        prefill = initial if initial and len(initial) <= MAX_TEXT_INPUT else None
        element = PlainTextInputElement(action_id=VALUE_ACTION, initial_value=prefill)
    hint = PlainTextObject(text=spec.description[:2000]) if spec.description else None
    return InputBlock(
        block_id=PARAMETER_BLOCK + spec.name,
        label=PlainTextObject(text=spec.name),
        element=element,
        hint=hint,
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
