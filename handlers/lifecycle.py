"""`/argo templates|list|status|logs|stop|terminate|retry|resubmit`: ack at once, answer privately.

The slash-command handler hands these verbs here. Nothing slow happens before the ack; the
answer replaces the ack through the command's `response_url` (only the asker sees it), while
what belongs to a run (its logs, who stopped or retried it) goes into the run's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from bot.audit import Audit, outcome_of
from bot.commands import (
    ActionCommand,
    AuditCommand,
    LifecycleCommand,
    ListCommand,
    LogsCommand,
    StatusCommand,
    TemplatesCommand,
)
from bot.lifecycle import LifecycleService
from bot.lifecycle_messages import note
from bot.messages import SlackMessage, code, command_error
from bot.models import RunAction, SlackOrigin
from bot.runs import UserError
from bot.slack import SlackError, SlackMessenger
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

_ACTION_WORDS = {
    RunAction.STOP: "Asking Argo to stop",
    RunAction.TERMINATE: "Asking Argo to terminate",
    RunAction.RETRY: "Asking Argo to retry",
    RunAction.RESUBMIT: "Resubmitting",
}


async def answer(work: Awaitable[SlackMessage], what: str) -> SlackMessage:
    """The reply to a command or a click: the result, or the problem in plain words."""
    reply, _ = await answer_and_error(work, what)
    return reply


async def answer_and_error(
    work: Awaitable[SlackMessage], what: str
) -> tuple[SlackMessage, Exception | None]:
    """`answer`, and the error that made it a refusal (None when it went well), for the audit."""
    try:
        return await work, None
    except UserError as error:
        return note(command_error(str(error))), error
    except Exception as error:
        logger.exception("%s failed", what)
        return note(
            command_error(f"Something went wrong ({what}). The bot's logs have the details.")
        ), error


@dataclass(frozen=True)
class LifecycleCommands:
    lifecycle: LifecycleService
    slack: SlackMessenger
    tasks: BackgroundTasks
    audit: Audit | None = None

    async def handle(self, ack: Any, parsed: LifecycleCommand, command: dict[str, Any]) -> None:
        await ack(text=_ack_text(parsed), response_type="ephemeral")
        origin = SlackOrigin(
            user_id=command["user_id"],
            channel_id=command["channel_id"],
            team_id=command.get("team_id"),
            response_url=command.get("response_url"),
        )
        self.tasks.spawn(self._answer(parsed, origin), name=f"command:{type(parsed).__name__}")

    async def _answer(self, parsed: LifecycleCommand, origin: SlackOrigin) -> None:
        reply, error = await answer_and_error(self._dispatch(parsed, origin), _describe(parsed))
        if self.audit is not None:
            self.audit.record(
                "command",
                outcome_of(error),
                actor=origin.user_id,
                channel=origin.channel_id,
                target=getattr(parsed, "workflow", None) or getattr(parsed, "target", None),
                detail=_verb_of(parsed) + (f": {error}" if error is not None else ""),
            )
        try:
            await self.slack.tell_user(
                user_id=origin.user_id,
                channel_id=origin.channel_id,
                text=reply.text,
                blocks=reply.blocks,
                response_url=origin.response_url,
            )
        except SlackError:
            logger.warning("could not answer %s privately", origin.user_id, exc_info=True)

    async def _dispatch(self, parsed: LifecycleCommand, origin: SlackOrigin) -> SlackMessage:
        lifecycle = self.lifecycle
        if isinstance(parsed, TemplatesCommand):
            return await lifecycle.templates(origin)
        if isinstance(parsed, AuditCommand):
            if self.audit is None:
                raise UserError("This bot keeps no audit trail.")
            return await self.audit.trail(origin, parsed.target)
        if isinstance(parsed, ListCommand):
            return await lifecycle.list_runs(origin, parsed)
        if isinstance(parsed, StatusCommand):
            return await lifecycle.status(parsed.workflow)
        if isinstance(parsed, LogsCommand):
            return await lifecycle.logs(parsed.workflow, parsed.step, origin)
        return await lifecycle.act(parsed.action, parsed.workflow, origin)


def _ack_text(parsed: LifecycleCommand) -> str:
    if isinstance(parsed, TemplatesCommand):
        return ":mag: Listing the templates…"
    if isinstance(parsed, AuditCommand):
        return ":mag: Reading the audit trail…"
    if isinstance(parsed, ListCommand):
        return ":mag: Looking up the runs…"
    if isinstance(parsed, StatusCommand):
        return f":mag: Looking up {code(parsed.workflow)}…"
    if isinstance(parsed, LogsCommand):
        return f":page_facing_up: Fetching the logs of {code(parsed.workflow)}…"
    return f":hourglass_flowing_sand: {_ACTION_WORDS[parsed.action]} {code(parsed.workflow)}…"


def _verb_of(parsed: LifecycleCommand) -> str:
    if isinstance(parsed, ActionCommand):
        return parsed.action.value
    return type(parsed).__name__.removesuffix("Command").lower()


def _describe(parsed: LifecycleCommand) -> str:
    if isinstance(parsed, ActionCommand):
        return f"{parsed.action.value} {parsed.workflow}"
    workflow = getattr(parsed, "workflow", "")
    return f"{type(parsed).__name__} {workflow}".strip()
