"""What people see when they follow and control runs: status, lists, templates, logs, progress.

Pure functions of the domain model (like `bot.messages`), so every answer can be rendered and
checked without Slack, and so Slack's limits are kept in one place: 3000 characters per
section, 50 blocks per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.blocks import context, section
from bot.messages import (
    MAX_BLOCKS,
    PHASE_ICONS,
    SECTION_LIMIT,
    SlackMessage,
    code,
    escape,
    format_duration,
    run_root,
)
from bot.models import Phase, Run, RunAction, RunState, TemplateInfo, WorkflowStatus
from bot.store import RunControls

ICONS = {
    **PHASE_ICONS,
    Phase.PENDING: ":hourglass_flowing_sand:",
    Phase.RUNNING: ":arrow_forward:",
    Phase.UNKNOWN: ":hourglass_flowing_sand:",
}
MAX_LIST_ROWS = 20
LOG_TAIL_LINES = 40
MAX_LOG_LINE = 400  # characters of one line shown in the tail
_SHOWN_STEPS = 3


def note(text: str) -> SlackMessage:
    """A one-line answer (ephemeral or in a thread)."""
    return SlackMessage(text=text, blocks=[_section(text)])


def _section(text: str) -> dict:
    return section(_fit(text, SECTION_LIMIT))


def _context(parts: Sequence[str]) -> dict:
    return context(" · ".join(parts))


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def link_to(url: str | None, label: str) -> str | None:
    return f"<{url}|{escape(label)}>" if url else None


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "at an unknown time"
    return format_duration((now - moment).total_seconds()) + " ago"


def _elapsed(status: WorkflowStatus, fallback: datetime, now: datetime) -> float:
    end = status.finished_at or now
    return max(0.0, (end - (status.started_at or fallback)).total_seconds())


def _steps(names: Sequence[str]) -> str:
    shown = ", ".join(code(name) for name in names[:_SHOWN_STEPS])
    more = len(names) - _SHOWN_STEPS
    return shown + (f" +{more}" if more > 0 else "")


# -- progress on the thread root ---------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """The progress line of a running run; `key` leaves out the elapsed time, so an edit is
    only needed when something else changed (or, now and then, for the elapsed time)."""

    line: str
    key: str


def progress(
    status: WorkflowStatus, controls: RunControls | None, *, started: datetime, now: datetime
) -> Progress:
    phase = status.phase if status.phase in (Phase.PENDING, Phase.RUNNING) else Phase.RUNNING
    running = [step.name for step in status.running_steps]
    parts = [f"{ICONS[phase]} {phase.value}"]
    if phase is Phase.PENDING:
        parts.append("waiting for Argo to start it")
    if status.progress and phase is Phase.RUNNING:
        parts.append(f"{escape(status.progress)} steps done")
    if running:
        parts.append(f"now {_steps(running)}")
    stop = ""
    if controls is not None and controls.shutdown:
        verb = "Terminate" if controls.shutdown == RunAction.TERMINATE else "Stop"
        stop = f":octagonal_sign: {verb} requested by <@{controls.shutdown_by}>"
        parts.insert(0, stop)
    key = "|".join([phase.value, status.progress or "", ",".join(running), stop])
    parts.append(f"{format_duration(_elapsed(status, started, now))} elapsed")
    return Progress(line=" · ".join(parts), key=key)


def root_of(
    run: Run,
    ui_link: str | None,
    *,
    progress: str | None = None,
    status: WorkflowStatus | None = None,
) -> SlackMessage:
    """The run's thread root: with a progress line and Stop while it runs, or its end."""
    return run_root(
        user_id=run.user_id,
        template=run.template,
        name=run.name,
        parameters=run.parameters,
        ui_link=ui_link,
        progress=progress,
        status=status,
        inputs=run.inputs,
    )


# -- status -------------------------------------------------------------------------------


def status_message(
    run: Run,
    status: WorkflowStatus,
    *,
    now: datetime,
    thread_link: str | None,
    ui_link: str | None,
) -> SlackMessage:
    icon = ICONS.get(status.phase, ":grey_question:")
    phase = status.phase.value or "Pending"
    elapsed = format_duration(_elapsed(status, run.created_at, now))
    timing = f"took {elapsed}" if status.completed else f"{elapsed} elapsed"
    headline = f"{icon} {code(run.name)} · *{phase}*"
    if status.progress:
        headline += f" · {escape(status.progress)} steps"
    lines = [
        f"{headline} · {timing}",
        f"*Template:* {code(run.template)} · started by <@{run.user_id}> "
        f"{_ago(run.created_at, now)}",
    ]
    running = status.running_steps
    if running and not status.completed:
        lines.append(f"*Running now:* {_steps([step.name for step in running])}")
    for step in status.failed_steps[:3]:
        lines.append(f"*Failed step:* {code(step.name)}")
        if step.message:
            lines.append("> " + escape(_fit(step.message, 400)))
    if status.message and status.phase is not Phase.SUCCEEDED:
        lines.append(f"*Message:* {escape(_fit(status.message, 400))}")
    blocks = [_section("\n".join(lines))]
    links = [
        link for link in (link_to(thread_link, "Thread"), link_to(ui_link, "Open in Argo")) if link
    ]
    if links:
        blocks.append(_context(links))
    text = f"{run.name}: {phase}" + (f", {status.progress} steps" if status.progress else "")
    return SlackMessage(text=text, blocks=blocks)


# -- list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedRun:
    run: Run
    phase: Phase
    progress: str | None
    thread_link: str | None


def shown_phase(run: Run, status: WorkflowStatus | None) -> Phase:
    """Argo's phase when it answered, else what the store knows."""
    if status is not None:
        return status.phase
    if run.state is RunState.ANNOUNCED:
        return run.phase
    return Phase.RUNNING if run.state is RunState.RETRYING else Phase.PENDING


def runs_list(rows: Sequence[ListedRun], *, title: str, now: datetime, stale: bool) -> SlackMessage:
    if not rows:
        return note(f"{title}: none found.")
    lines = []
    for row in rows[:MAX_LIST_ROWS]:
        run = row.run
        state = row.phase.value or "Pending"
        if row.progress and not row.phase.is_final:
            state += f" {escape(row.progress)}"
        parts = [
            f"{ICONS.get(row.phase, ':grey_question:')} {code(run.name)}",
            escape(run.template),
            f"<@{run.user_id}>",
            state,
            _ago(run.created_at, now),
        ]
        if link := link_to(row.thread_link, "thread"):
            parts.append(link)
        lines.append(" · ".join(parts))
    blocks = [_section(f"*{title}*")]
    blocks += [_section(chunk) for chunk in _pack(lines, budget=MAX_BLOCKS - 2)]
    if stale:
        blocks.append(_context(["Argo did not answer: phases of unfinished runs may be stale."]))
    return SlackMessage(text=f"{title}: {len(lines)} run(s)", blocks=blocks)


def _pack(lines: Sequence[str], *, budget: int) -> list[str]:
    """Lines joined into as few sections as the per-section limit allows."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + 1 + len(line) > SECTION_LIMIT:
            if len(chunks) + 1 >= budget:
                break
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else _fit(line, SECTION_LIMIT)
    if current:
        chunks.append(current)
    return chunks


# -- templates ----------------------------------------------------------------------------


def templates_message(templates: Sequence[TemplateInfo], *, command: str) -> SlackMessage:
    if not templates:
        return note("There are no WorkflowTemplates to run in this namespace.")
    header = f"*Templates you can run* with `{escape(command)} run <template> [name=value ...]`"
    blocks = [_section(header)]
    room = MAX_BLOCKS - 2
    for template in templates[:room]:
        blocks.append(_section(_template_text(template)))
    if len(templates) > room:
        blocks.append(_context([f"…and {len(templates) - room} more"]))
    names = ", ".join(t.name for t in templates)
    return SlackMessage(text=f"Templates: {names}", blocks=blocks)


def _template_text(template: TemplateInfo) -> str:
    lines = [f"*{escape(template.name)}*"]
    if template.description:
        lines[0] += " — " + escape(_fit(template.description.strip(), 500))
    for parameter in template.parameters:
        line = f"• {code(parameter.name)}"
        if parameter.required:
            line += " (required)"
        elif parameter.default is not None:
            line += f" = {code(_fit(parameter.default, 100))}"
        if parameter.enum:
            line += " · one of " + ", ".join(code(choice) for choice in parameter.enum[:20])
        if parameter.description:
            line += " — " + escape(_fit(parameter.description, 200))
        lines.append(line)
    if template.input_artifacts:
        lines.append("• input files: " + ", ".join(code(a) for a in template.input_artifacts))
    return _fit("\n".join(lines), SECTION_LIMIT)


# -- logs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogTail:
    """The last lines of a log that fit in one section, and whether that is all of it."""

    lines: tuple[str, ...]
    total: int

    @property
    def complete(self) -> bool:
        return len(self.lines) == self.total


def log_tail(lines: Sequence[str], *, budget: int) -> LogTail:
    """As many of the last lines as fit in `budget` characters (and LOG_TAIL_LINES)."""
    shown: list[str] = []
    used = 0
    for line in reversed(lines):
        clean = _fit(line.replace("```", "'''"), MAX_LOG_LINE)
        if len(shown) >= LOG_TAIL_LINES or used + len(escape(clean)) + 1 > budget:
            break
        shown.append(clean)
        used += len(escape(clean)) + 1
    return LogTail(lines=tuple(reversed(shown)), total=len(lines))


def logs_message(
    name: str, step: str | None, lines: Sequence[str], *, asked_by: str, dropped: int
) -> tuple[SlackMessage, bool]:
    """The tail of a log as a code block for the run's thread; True when it is not the whole
    log (then the full log follows as a file)."""
    what = f"*Logs of {code(name)}*" + (f", step {code(step)}" if step else "")
    header_budget = 300
    tail = log_tail(lines, budget=SECTION_LIMIT - header_budget)
    complete = tail.complete and not dropped
    total = tail.total + dropped
    lines_word = "line" if total == 1 else "lines"
    count = (
        f"all {total} {lines_word}"
        if complete
        else f"last {len(tail.lines)} of {total} {lines_word}"
    )
    header = f":page_facing_up: {what} — {count} · asked by <@{asked_by}>"
    body = "```\n" + escape("\n".join(tail.lines)) + "\n```"
    blocks = [_section(header), _section(body)]
    if not complete:
        blocks.append(_context(["The full log is attached below as a file."]))
    return SlackMessage(text=f"Logs of {name}: {count}", blocks=blocks), not complete


def log_file_name(name: str, step: str | None) -> str:
    safe_step = "".join(c if c.isalnum() or c in "-_." else "-" for c in step or "")[:60]
    return f"{name}-{safe_step}.log" if safe_step else f"{name}.log"


# -- actions ------------------------------------------------------------------------------


def action_note(action: RunAction, name: str, user_id: str) -> SlackMessage:
    """What a stop, terminate or retry looks like in the run's thread."""
    text = {
        RunAction.STOP: f":octagonal_sign: <@{user_id}> asked Argo to stop {code(name)}; "
        "its exit handler still runs, then the result is posted here.",
        RunAction.TERMINATE: f":no_entry: <@{user_id}> terminated {code(name)}; "
        "the result is posted here shortly.",
        RunAction.RETRY: f":repeat: <@{user_id}> retried the failed steps of {code(name)}; "
        "the new result is posted here.",
    }[action]
    return note(text)


def resubmitted_note(new_name: str, user_id: str, new_thread: str | None) -> SlackMessage:
    where = link_to(new_thread, "its thread") or "a new thread in this channel"
    return note(f":repeat: <@{user_id}> resubmitted this run as {code(new_name)}: {where}.")


def resubmitted_from_note(old_name: str, old_thread: str | None) -> SlackMessage:
    where = f" ({link})" if (link := link_to(old_thread, "its thread")) else ""
    return note(f":leftwards_arrow_with_hook: Resubmitted from {code(old_name)}{where}.")
