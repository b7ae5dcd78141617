"""What people see in Slack: the thread root of a run and its result, as Block Kit.

Pure functions of the domain model, so every message can be rendered and checked
without a Slack workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot import buttons
from bot.blocks import context, section
from bot.models import Artifact, Phase, RunInput, TemplateInfo, WorkflowStatus

SECTION_LIMIT = 3000  # characters in one section's text
MAX_BLOCKS = 50
_MAX_VALUE_SHOWN = 200

PHASE_ICONS = {
    Phase.SUCCEEDED: ":white_check_mark:",
    Phase.FAILED: ":x:",
    Phase.ERROR: ":warning:",
}


@dataclass(frozen=True)
class SlackMessage:
    """Text (for notifications and screen readers) plus blocks."""

    text: str
    blocks: list[dict[str, Any]]


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so user text cannot become links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    return "`" + escape(text).replace("`", "'") + "`"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown time"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parameters_line(parameters: dict[str, str]) -> str | None:
    if not parameters:
        return None
    shown = " ".join(
        code(f"{name}={_shorten(value, _MAX_VALUE_SHOWN)}") for name, value in parameters.items()
    )
    return _shorten("*Parameters:* " + shown, SECTION_LIMIT)


def _inputs_line(inputs: Sequence[RunInput]) -> str:
    """`data` ← sales.csv (1.2 KB, sha256 `3f2a9c1e…`): what the run was given, verifiably."""
    lines = []
    for item in inputs:
        line = f"{code(item.artifact)} ← {escape(_shorten(item.file_name, 120))}"
        if item.size is not None:
            line += f" ({format_size(item.size)}"
            line += f", sha256 {code(item.sha256[:12] + '…')})" if item.sha256 else ")"
        lines.append(line)
    return _shorten("*Inputs:* " + " · ".join(lines), SECTION_LIMIT)


def _link(url: str, label: str) -> str:
    return f"<{url}|{escape(label)}>"


def run_root(
    *,
    user_id: str,
    template: str,
    name: str,
    parameters: dict[str, str],
    ui_link: str | None,
    status: WorkflowStatus | None = None,
    progress: str | None = None,
    inputs: Sequence[RunInput] = (),
) -> SlackMessage:
    """The run's thread root: who started what, its progress (with Stop), how it ended."""
    headline = f"<@{user_id}> started *{escape(template)}* → {code(name)}"
    if status is None:
        state = progress or ":hourglass_flowing_sand: Running"
        state_text = "running"
    else:
        icon = PHASE_ICONS.get(status.phase, ":grey_question:")
        state = f"{icon} {status.phase.value} in {format_duration(status.duration_seconds)}"
        state_text = f"{status.phase.value.lower()} in {format_duration(status.duration_seconds)}"
    blocks = [section(headline)]
    parameters_line = _parameters_line(parameters)
    if parameters_line:
        blocks.append(section(parameters_line))
    if inputs:
        blocks.append(section(_inputs_line(inputs)))
    footer = [state]
    if ui_link:
        footer.append(_link(ui_link, "Open in Argo"))
    blocks.append(context(" · ".join(footer)))
    if status is None:
        blocks.append(buttons.stop_block(name))
    text = f"{template} run {name} started by <@{user_id}>: {state_text}"
    return SlackMessage(text=text, blocks=blocks)


def run_result(
    status: WorkflowStatus,
    artifacts: Sequence[Artifact],
    *,
    ui_link: str | None,
    user_id: str | None = None,
    with_buttons: bool = False,
) -> SlackMessage:
    """The reply posted into the run's thread when it is over.

    `user_id` is mentioned when the run did not succeed, so the person who started it hears
    of it; `with_buttons` adds Logs, Retry, Resubmit and Open in Argo.
    """
    icon = PHASE_ICONS.get(status.phase, ":grey_question:")
    duration = format_duration(status.duration_seconds)
    verb = {Phase.SUCCEEDED: "succeeded", Phase.FAILED: "failed", Phase.ERROR: "ended in error"}
    outcome = verb.get(status.phase, status.phase.value.lower() or "ended")
    headline = f"{icon} {code(status.name)} *{outcome}* after {duration}"
    mention = user_id if user_id and status.phase is not Phase.SUCCEEDED else None
    if mention:
        headline += f" · <@{mention}>"
    blocks = [section(headline)]

    if status.phase is not Phase.SUCCEEDED:
        problem = []
        for step in status.failed_steps[:5]:
            line = f"*Failed step:* {code(step.name)}"
            if step.message:
                line += f"\n> {escape(_shorten(step.message, 500))}"
            problem.append(line)
        if status.message:
            problem.append(f"*Message:* {escape(_shorten(status.message, 500))}")
        if problem:
            blocks.append(section(_shorten("\n".join(problem), SECTION_LIMIT)))

    for text in _artifact_sections(artifacts, budget=MAX_BLOCKS - len(blocks) - 1):
        blocks.append(section(text))

    if ui_link and not with_buttons:
        blocks.append(context(_link(ui_link, "Open in Argo")))
    fallback = f"{status.name} {outcome} after {duration}"
    if artifacts:
        fallback += f", {len(artifacts)} artifact(s)"
    if mention:
        fallback += f" <@{mention}>"
    if with_buttons:
        blocks.append(buttons.result_block(status.name, status.phase, ui_link))
    return SlackMessage(text=fallback, blocks=blocks)


def _artifact_line(artifact: Artifact) -> str:
    where = f"{artifact.step} · {artifact.name}"
    if artifact.url:
        link = _link(artifact.url, artifact.file_name)
        size = "" if artifact.size is None else f" — {format_size(artifact.size)}"
        return f"• {link}{size} ({escape(where)})"
    reason = "deleted by artifact GC" if artifact.deleted else "no link"
    return f"• {code(artifact.file_name)} — {reason} ({escape(where)})"


def _artifact_sections(artifacts: Sequence[Artifact], *, budget: int) -> list[str]:
    """Artifact links packed into as few sections as Slack's per-section limit allows."""
    if not artifacts or budget <= 0:
        return []
    sections: list[str] = []
    current = "*Artifacts*"
    for index, artifact in enumerate(artifacts):
        line = _artifact_line(artifact)
        if len(current) + 1 + len(line) > SECTION_LIMIT:
            if len(sections) + 1 >= budget:
                remaining = len(artifacts) - index
                current += f"\n…and {remaining} more"
                break
            sections.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    sections.append(current)
    return sections


def inputs_received(count: int) -> str:
    return f":inbox_tray: Received {count} file{'s' if count != 1 else ''}, uploading…"


def inputs_uploaded(inputs: Sequence[RunInput]) -> str:
    total = sum(item.size or 0 for item in inputs)
    return f":outbox_tray: Uploaded {format_size(total)}, submitting…"


def command_error(message: str) -> str:
    return f":warning: {message}"


def unknown_template(name: str, available: Sequence[TemplateInfo]) -> str:
    names = ", ".join(code(t.name) for t in available) or "none"
    return f"There is no workflow template {code(name)}. Available templates: {names}."
