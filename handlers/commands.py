"""The slash command: parse, ack at once, hand the slow part to the run service."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.commands import CommandError, HelpCommand, RunCommand, parse_command
from bot.messages import code, command_error
from bot.models import RunRequest, SlackOrigin
from bot.runs import RunService, UserError
from bot.slack import SlackError, SlackMessenger
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)


def help_text(command: str) -> str:
    return "\n".join(
        [
            f"*{command}* runs Argo Workflows from Slack.",
            f"• `{command} run <template> [name=value ...]` — start a run of a WorkflowTemplate, "
            f'e.g. `{command} run csv-summary rows=50 title="Weekly numbers"`. '
            "The result, with links to its files, arrives in the run's thread.",
            f"• `{command} help` — this message.",
        ]
    )


class CommandHandler:
    def __init__(
        self,
        *,
        command: str,
        runs: RunService,
        slack: SlackMessenger,
        tasks: BackgroundTasks,
    ) -> None:
        self._command = command
        self._runs = runs
        self._slack = slack
        self._tasks = tasks

    def register(self, bolt: AsyncApp) -> None:
        bolt.command(self._command)(self.on_command)

    async def on_command(self, ack: Any, command: dict[str, Any]) -> None:
        """Answer inside Slack's 3 s in every case: nothing slow happens before `ack`."""
        try:
            parsed = parse_command(command.get("text", ""))
        except CommandError as error:
            await ack(text=command_error(str(error)), response_type="ephemeral")
            return
        if isinstance(parsed, HelpCommand):
            prefix = ""
            if parsed.unknown_verb:
                prefix = f"I don't know {code(parsed.unknown_verb[:40])}.\n"
            await ack(text=prefix + help_text(self._command), response_type="ephemeral")
            return
        assert isinstance(parsed, RunCommand)
        origin = SlackOrigin(
            user_id=command["user_id"],
            channel_id=command["channel_id"],
            team_id=command.get("team_id"),
            response_url=command.get("response_url"),
        )
        await ack(
            text=f":hourglass_flowing_sand: Starting {code(parsed.template)}…",
            response_type="ephemeral",
        )
        request = RunRequest(template=parsed.template, parameters=parsed.parameters, origin=origin)
        self._tasks.spawn(self._start(request), name=f"start:{parsed.template}")

    async def _start(self, request: RunRequest) -> None:
        origin = request.origin
        try:
            run = await self._runs.start_run(request)
        except UserError as error:
            reply = command_error(str(error))
        except Exception:
            logger.exception("starting %s failed", request.template)
            reply = command_error(
                f"Something went wrong while starting {code(request.template)}; "
                "nothing was started. The bot's logs have the details."
            )
        else:
            reply = f":arrow_forward: Started {code(run.name)}: follow it in its thread here."
        try:
            await self._slack.tell_user(
                user_id=origin.user_id,
                channel_id=origin.channel_id,
                text=reply,
                response_url=origin.response_url,
            )
        except SlackError:
            logger.warning("could not answer %s privately", origin.user_id, exc_info=True)
