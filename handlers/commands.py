"""The slash command: parse, ack at once, hand the slow part to the run service."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.audit import Audit, Outcome, outcome_of
from bot.commands import CommandError, HelpCommand, RunCommand, parse_command
from bot.inputs import RunInputs
from bot.journal import NOT_RECORDED, RequestJournal
from bot.messages import code, command_error
from bot.metrics import Metrics
from bot.models import RunAction, RunRequest
from bot.runs import RunService, TryLater, UserError
from bot.slack import SlackError, SlackMessenger
from bot.slack_files import SlackFile
from bot.store import RequestClaim, RequestSuperseded, StoredRequest
from bot.tasks import BackgroundTasks, QuietGate
from handlers.lifecycle import LifecycleCommands
from handlers.modals import RunFormHandler

logger = logging.getLogger(__name__)

COMMAND_REQUEST = "command"
FORM_REQUEST = "form"

# Verbs counted under their own name in the commands metric; anything else is "unknown".
VERBS = frozenset(
    {
        "run",
        "help",
        "templates",
        "list",
        "status",
        "logs",
        "audit",
        *(action.value for action in RunAction),
    }
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
            f"• `{command} audit [workflow]` — who did what, newest first (admins only).",
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
        journal: RequestJournal,
        slack_traffic: QuietGate | None = None,
        metrics: Metrics | None = None,
        form: RunFormHandler | None = None,
        lifecycle: LifecycleCommands | None = None,
        audit: Audit | None = None,
    ) -> None:
        self._audit = audit
        self._form = form
        self._lifecycle = lifecycle
        self._command = command
        self._metrics = metrics or Metrics()
        self._runs = runs
        self._slack = slack
        self._tasks = tasks
        self._journal = journal
        self._slack_traffic = slack_traffic or QuietGate()
        journal.on_resume(COMMAND_REQUEST, self.resume)
        journal.on_resume(FORM_REQUEST, self.resume_form)

    def register(self, bolt: AsyncApp) -> None:
        bolt.command(self._command)(self.on_command)

    async def on_command(self, ack: Any, command: dict[str, Any]) -> None:
        """Answer inside Slack's 3 s in every case: nothing slow happens before `ack`."""
        try:
            parsed = parse_command(command.get("text", ""))
        except CommandError as error:
            self._metrics.command(_verb(command.get("text", "")), "invalid")
            await ack(text=command_error(str(error)), response_type="ephemeral")
            self._record(command, "invalid", f"{_verb(command.get('text', ''))}: {error}")
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
            self._record(
                command,
                "invalid" if parsed.unknown_verb else "ok",
                f"unknown verb {parsed.unknown_verb[:40]}" if parsed.unknown_verb else "help",
            )
            return
        if not isinstance(parsed, RunCommand):
            if self._lifecycle is None:
                await ack(text=help_text(self._command), response_type="ephemeral")
            else:
                # Counted when handed over: the answer is worked out in the background.
                self._metrics.command(_verb(command.get("text", "")), "accepted")
                await self._lifecycle.handle(ack, parsed, command)
            return
        user_id, channel_id = command["user_id"], command["channel_id"]
        payload = RunRequest.payload(
            parsed.template,
            parsed.parameters,
            user_id=user_id,
            channel_id=channel_id,
            team_id=command.get("team_id"),
            response_url=command.get("response_url"),
        )
        try:
            # Written down before Slack hears "got it": a crash after the ack loses nothing.
            claim = await self._journal.record(
                COMMAND_REQUEST, payload, user_id=user_id, channel_id=channel_id
            )
        except Exception:
            logger.exception("could not record a request to run %s", parsed.template)
            self._metrics.command("run", "failed")
            await ack(text=command_error(NOT_RECORDED), response_type="ephemeral")
            return
        await ack(
            text=f":hourglass_flowing_sand: Starting {code(parsed.template)}…",
            response_type="ephemeral",
        )
        trigger_id = command.get("trigger_id")
        # Started once the burst this command may be part of is acknowledged (`_start` waits
        # for that anyway): a task now would only wait, at the acks' expense.
        self._slack_traffic.call_when_quiet(
            lambda: self._tasks.spawn(
                self._start_recorded(payload, trigger_id=trigger_id, claim=claim),
                name=f"start:{parsed.template}",
            )
        )

    async def resume(self, stored: StoredRequest) -> None:
        """A recorded command whose replica died before it became a run: start it now."""
        await self._start_recorded(stored.payload, claim=stored)

    async def _start_recorded(
        self,
        payload: dict[str, Any],
        *,
        trigger_id: str | None = None,
        claim: RequestClaim | None = None,
    ) -> None:
        """The run of a recorded command, its request validated only now (after the ack)."""
        await self._start(RunRequest.model_validate(payload), trigger_id=trigger_id, claim=claim)

    async def start_with_inputs(self, request: RunRequest, inputs: RunInputs) -> bool:
        """A run whose files came with the run form: recorded, then started and answered like
        a command. False when it could not be recorded (the form says so)."""
        payload = {
            "request": request.model_dump(mode="json"),
            "files": [file.model_dump(mode="json") for file in inputs.files],
        }
        try:
            claim = await self._journal.record(
                FORM_REQUEST,
                payload,
                user_id=request.origin.user_id,
                channel_id=request.origin.channel_id,
            )
        except Exception:
            logger.exception("could not record a request to run %s", request.template)
            return False
        self._tasks.spawn(
            self._start(request, inputs=inputs, claim=claim), name=f"start:{request.template}"
        )
        return True

    async def resume_form(self, stored: StoredRequest) -> None:
        """A recorded form submission whose replica died before it became a run."""
        files = tuple(SlackFile.model_validate(file) for file in stored.payload["files"])
        request = RunRequest.model_validate(stored.payload["request"])
        await self._start(request, inputs=RunInputs(files=files), claim=stored)

    async def _start(
        self,
        request: RunRequest,
        *,
        trigger_id: str | None = None,
        inputs: RunInputs | None = None,
        claim: RequestClaim | None = None,
    ) -> None:
        origin = request.origin
        # Acks of a burst go first; at most 1 s, so a form still opens within its trigger's 3 s.
        await self._slack_traffic.wait(limit=1.0)
        try:
            # A template that takes files gets the form instead (it opens right after the ack).
            if (
                trigger_id
                and self._form is not None
                and await self._form.offer(request, trigger_id)
            ):
                self._metrics.command("run", "form")
                self._record_run(request, inputs, None, request.template, "run form opened")
                await self._journal.finish(claim)
                return
            run = await self._runs.start_run(request, inputs, claim=claim)
        except RequestSuperseded:
            logger.info("another replica took over the request to run %s", request.template)
            return
        except TryLater as error:
            logger.warning("%s; its request will be tried again", error)
            return
        except UserError as error:
            self._metrics.command("run", "rejected")
            self._record_run(request, inputs, error, request.template, str(error))
            await self._journal.finish(claim)
            reply = command_error(str(error))
        except Exception as error:
            self._metrics.command("run", "failed")
            self._record_run(request, inputs, error, request.template, "failed: see the logs")
            await self._journal.finish(claim, "failed")
            logger.exception("starting %s failed", request.template)
            reply = command_error(
                f"Something went wrong while starting {code(request.template)}; "
                "nothing was started. The bot's logs have the details."
            )
        else:
            self._metrics.command("run", "ok")
            self._record_run(request, inputs, None, run.name, f"run {request.template}")
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

    def _record(self, command: dict[str, Any], outcome: Outcome, detail: str) -> None:
        """A command answered at the ack (could not be parsed, help)."""
        if self._audit is not None:
            self._audit.record(
                "command",
                outcome,
                actor=str(command.get("user_id") or "") or None,
                channel=str(command.get("channel_id") or "") or None,
                detail=detail,
            )

    def _record_run(
        self,
        request: RunRequest,
        inputs: RunInputs | None,
        error: Exception | None,
        target: str,
        detail: str,
    ) -> None:
        """How a run asked for by command (or by the run form, which brings inputs) went."""
        if self._audit is not None:
            self._audit.record(
                "command" if inputs is None else "modal",
                outcome_of(error),
                actor=request.origin.user_id,
                channel=request.origin.channel_id,
                target=target,
                detail=detail,
            )


def _verb(text: str) -> str:
    """The verb as a metric label: a known one, else "unknown" (people type anything)."""
    words = text.split()
    verb = words[0].lower() if words else "help"
    return verb if verb in VERBS else "unknown"
