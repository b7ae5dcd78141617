"""The slash command: parse, ack at once, hand the slow part to the run service."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.commands import CommandError, HelpCommand, RunCommand, parse_command
from bot.inputs import RunInputs
from bot.messages import code, command_error
from bot.metrics import Metrics
from bot.models import RunAction, RunRequest, SlackOrigin
from bot.runs import RunService, UserError
from bot.slack import SlackError, SlackMessenger
from bot.tasks import BackgroundTasks
from handlers.lifecycle import LifecycleCommands
from handlers.modals import RunFormHandler

logger = logging.getLogger(__name__)

# Verbs counted under their own name in the commands metric; anything else is "unknown".
VERBS = frozenset(
    {"run", "help", "templates", "list", "status", "logs", *(action.value for action in RunAction)}
)


def help_text(command: str) -> str:
    return "\n".join(
        [
            f"*{command}* runs Argo Workflows from Slack.",
            f"• `{command} run <template> [name=value ...]` — start a run of a WorkflowTemplate, "
            f'e.g. `{command} run csv-summary rows=50 title="Weekly numbers"`. '
            "The result, with links to its files, arrives in the run's thread.",
            f"• `{command} templates` — the templates you can run, with their parameters.",
            f"• `{command} list [mine|all] [running|failed|succeeded]` — recent runs in this "
            f"channel (or yours), e.g. `{command} list mine failed`.",
            f"• `{command} status <workflow>` — phase, progress, running or failed step, "
            f"e.g. `{command} status csv-summary-x7k2p`.",
            f"• `{command} logs <workflow> [step]` — the last log lines, posted in the run's "
            f"thread, e.g. `{command} logs csv-summary-x7k2p summarize`.",
            f"• `{command} stop <workflow>` — stop it (its exit handler still runs); "
            f"`{command} terminate <workflow>` stops it at once.",
            f"• `{command} retry <workflow>` — re-run the failed steps of a failed run.",
            f"• `{command} resubmit <workflow>` — a new run with the same template and "
            "parameters, in a new thread.",
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
        metrics: Metrics | None = None,
        form: RunFormHandler | None = None,
        lifecycle: LifecycleCommands | None = None,
    ) -> None:
        self._form = form
        self._lifecycle = lifecycle
        self._command = command
        self._metrics = metrics or Metrics()
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
            self._metrics.command(_verb(command.get("text", "")), "invalid")
            await ack(text=command_error(str(error)), response_type="ephemeral")
            return
        if isinstance(parsed, HelpCommand):
            self._metrics.command(
                "unknown" if parsed.unknown_verb else "help",
                "invalid" if parsed.unknown_verb else "ok",
            )
            prefix = ""
            if parsed.unknown_verb:
                prefix = f"I don't know {code(parsed.unknown_verb[:40])}.\n"
            await ack(text=prefix + help_text(self._command), response_type="ephemeral")
            return
        if not isinstance(parsed, RunCommand):
            if self._lifecycle is None:
                await ack(text=help_text(self._command), response_type="ephemeral")
            else:
                # Counted when handed over: the answer is worked out in the background.
                self._metrics.command(_verb(command.get("text", "")), "accepted")
                await self._lifecycle.handle(ack, parsed, command)
            return
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
        self._tasks.spawn(
            self._start(request, trigger_id=command.get("trigger_id")),
            name=f"start:{parsed.template}",
        )

    def start_with_inputs(self, request: RunRequest, inputs: RunInputs) -> None:
        """A run whose files came with the run form: started and answered like a command."""
        self._tasks.spawn(self._start(request, inputs=inputs), name=f"start:{request.template}")

    async def _start(
        self,
        request: RunRequest,
        *,
        trigger_id: str | None = None,
        inputs: RunInputs | None = None,
    ) -> None:
        origin = request.origin
        try:
            # A template that takes files gets the form instead (it opens right after the ack).
            if (
                trigger_id
                and self._form is not None
                and await self._form.offer(request, trigger_id)
            ):
                self._metrics.command("run", "form")
                return
            run = await self._runs.start_run(request, inputs)
        except UserError as error:
            self._metrics.command("run", "rejected")
            reply = command_error(str(error))
        except Exception:
            self._metrics.command("run", "failed")
            logger.exception("starting %s failed", request.template)
            reply = command_error(
                f"Something went wrong while starting {code(request.template)}; "
                "nothing was started. The bot's logs have the details."
            )
        else:
            self._metrics.command("run", "ok")
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


def _verb(text: str) -> str:
    """The verb as a metric label: a known one, else "unknown" (people type anything)."""
    words = text.split()
    verb = words[0].lower() if words else "help"
    return verb if verb in VERBS else "unknown"
