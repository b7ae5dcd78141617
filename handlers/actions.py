"""Buttons on run messages (Logs, Stop, Retry, Resubmit, Open in Argo): ack, then act.

Slack wants the ack within 3 s, so a click is acked before anything else; the work runs as a
background task. Whether a click does anything is decided by the store (a run retried once
is not retried again by a second click), never by the button. Problems are told to the
person who clicked only, in the thread where the button is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot import buttons
from bot.audit import Audit, outcome_of
from bot.commands import TEMPLATE_NAME
from bot.lifecycle import LifecycleService
from bot.models import SlackOrigin
from bot.slack import SlackError, SlackMessenger
from bot.tasks import BackgroundTasks
from handlers.lifecycle import answer_and_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Click:
    action_id: str
    workflow: str
    origin: SlackOrigin
    thread_ts: str | None  # where the clicked message lives, for the private answer

    @classmethod
    def from_body(cls, body: dict[str, Any], action: dict[str, Any]) -> Click | None:
        workflow = str(action.get("value") or "")
        user = (body.get("user") or {}).get("id")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        if not user or not channel or len(workflow) > 63 or not TEMPLATE_NAME.match(workflow):
            return None
        message = body.get("message") or {}
        return cls(
            action_id=str(action.get("action_id")),
            workflow=workflow,
            origin=SlackOrigin(
                user_id=user, channel_id=channel, team_id=(body.get("team") or {}).get("id")
            ),
            thread_ts=message.get("thread_ts"),
        )


@dataclass(frozen=True)
class RunButtons:
    lifecycle: LifecycleService
    slack: SlackMessenger
    tasks: BackgroundTasks
    audit: Audit | None = None

    def register(self, bolt: AsyncApp) -> None:
        for action_id in (buttons.LOGS, buttons.STOP, buttons.RETRY, buttons.RESUBMIT):
            bolt.action(action_id)(self.on_click)
        bolt.action(buttons.OPEN_IN_ARGO)(self.on_link)

    async def on_link(self, ack: Any) -> None:
        """A link button: Slack opens the URL itself; the click only needs its ack."""
        await ack()

    async def on_click(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        click = Click.from_body(body, action)
        if click is None:
            logger.warning("ignored a click without a user, channel or workflow")
            return
        self.tasks.spawn(self._act(click), name=f"click:{click.action_id}:{click.workflow}")

    async def _act(self, click: Click) -> None:
        if click.action_id == buttons.LOGS:
            work = self.lifecycle.logs(click.workflow, None, click.origin)
        else:
            action = buttons.ACTIONS[click.action_id]
            work = self.lifecycle.act(action, click.workflow, click.origin)
        reply, error = await answer_and_error(work, f"{click.action_id} {click.workflow}")
        if self.audit is not None:
            self.audit.record(
                "button",
                outcome_of(error),
                actor=click.origin.user_id,
                channel=click.origin.channel_id,
                target=click.workflow,
                detail=click.action_id + (f": {error}" if error is not None else ""),
            )
        try:
            await self.slack.ephemeral(
                click.origin.channel_id, click.origin.user_id, reply, thread_ts=click.thread_ts
            )
        except SlackError:
            logger.warning("could not answer a click privately", exc_info=True)
