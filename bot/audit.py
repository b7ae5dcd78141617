"""The audit trail: who did what, where, to what, and how it went.

Every door records here: slash commands, button clicks, file-started runs, run forms and exit
hooks. Each entry is a structured log line at once and a row in the store written in the
background, so recording never delays an ack, and a failing write is logged, never passed on
to the person whose action it describes. Admins read the newest rows with `/argo audit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from bot.access import Access, AccessDenied
from bot.messages import SlackMessage, code, escape
from bot.models import AuditEntry, SlackOrigin
from bot.runs import UserError
from bot.store import Store
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

Action = Literal["command", "button", "file", "hook", "modal"]
Outcome = Literal["ok", "denied", "invalid", "error"]

TRAIL_LENGTH = 20
MAX_DETAIL = 500  # characters stored
SECTION_LIMIT = 3000  # Slack's limit on a section's text
_SHOWN_DETAIL = 120  # characters shown in Slack
# Callers without a Slack identity (exit hooks with a bad token, unknown workflows) can be
# anyone on the network: beyond this many rows a minute per replica they are only logged.
ANONYMOUS_ROWS_PER_MINUTE = 60
_ICONS = {"ok": ":white_check_mark:", "denied": ":no_entry:", "invalid": ":warning:"}


def outcome_of(error: BaseException | None) -> Outcome:
    """ok; denied by the policy; refused as invalid (a plain-words answer); or a bug."""
    if error is None:
        return "ok"
    if isinstance(error, AccessDenied):
        return "denied"
    if isinstance(error, UserError):
        return "invalid"
    return "error"


class Audit:
    def __init__(
        self,
        *,
        store: Store,
        tasks: BackgroundTasks,
        access: Access,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tasks = tasks
        self._access = access
        self._clock = clock
        self._anonymous_minute = 0
        self._anonymous_rows = 0

    def record(
        self,
        action: Action,
        outcome: Outcome,
        *,
        actor: str | None = None,
        channel: str | None = None,
        target: str | None = None,
        detail: str = "",
    ) -> None:
        """Log the entry now and store it in the background; never raises."""
        try:
            entry = AuditEntry(
                at=self._clock(),
                actor=_cut(actor, 64),
                channel=_cut(channel, 64),
                action=action,
                target=_cut(target, 253),
                outcome=outcome,
                detail=" ".join(detail.split())[:MAX_DETAIL],
            )
            logger.info(
                "audit: %s %s", action, outcome, extra={"audit": entry.model_dump(exclude={"at"})}
            )
            if actor is None and not self._anonymous_allowed(entry.at):
                return
            self._tasks.spawn(self._write(entry), name=f"audit:{action}")
        except Exception:
            logger.exception("could not record an audit entry")

    async def _write(self, entry: AuditEntry) -> None:
        try:
            await self._store.add_audit(entry)
        except Exception:
            logger.exception("could not store an audit entry (it is in the log)")

    def _anonymous_allowed(self, now: float) -> bool:
        minute = int(now // 60)
        if minute != self._anonymous_minute:
            self._anonymous_minute, self._anonymous_rows = minute, 0
        self._anonymous_rows += 1
        return self._anonymous_rows <= ANONYMOUS_ROWS_PER_MINUTE

    async def trail(self, origin: SlackOrigin, target: str | None) -> SlackMessage:
        """The newest entries (of one workflow or template), for admins only."""
        self._access.check_audit(origin)
        entries = await self._store.recent_audit(target=target, limit=TRAIL_LENGTH)
        return trail_message(entries, target)


def trail_message(entries: list[AuditEntry], target: str | None) -> SlackMessage:
    about = f" of {code(target)}" if target else ""
    if not entries:
        text = f"The audit trail{about} is empty."
        return SlackMessage(text=text, blocks=[_section(text)])
    header = f"*Audit trail{about}* · the newest {len(entries)}, newest first"
    blocks = [_section(header)]
    chunk: list[str] = []
    for line in (_line(entry) for entry in entries):
        if chunk and sum(len(part) + 1 for part in chunk) + len(line) > SECTION_LIMIT:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    blocks.append(_section("\n".join(chunk)))
    return SlackMessage(text=f"Audit trail{about}: {len(entries)} entries", blocks=blocks)


def _line(entry: AuditEntry) -> str:
    moment = datetime.fromtimestamp(entry.at, UTC)
    when = f"<!date^{int(entry.at)}^{{date_short}} {{time_secs}}|{moment:%Y-%m-%d %H:%M:%S} UTC>"
    who = f"<@{escape(entry.actor)}>" if entry.actor else "exit hook"
    where = f" in <#{escape(entry.channel)}>" if entry.channel else ""
    what = f"{entry.action}" + (f" {code(entry.target)}" if entry.target else "")
    icon = _ICONS.get(entry.outcome, ":x:")
    detail = escape(entry.detail[:_SHOWN_DETAIL]) if entry.detail else ""
    return f"{icon} {when} · {who}{where} · {what} · *{entry.outcome}*" + (
        f" · {detail}" if detail else ""
    )


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def _cut(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]
