"""Following and controlling runs from Slack: templates, list, status, logs, stop, retry, resubmit.

Every verb first makes sure the workflow is one this bot started (the store knows it): a
name Argo does not have, or one somebody else started, gets a plain answer and nothing else.
Changes are claimed in the store before Argo is asked, so two clicks make one action, and
what changed is said in the run's thread; the person who asked gets a private note.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bot import lifecycle_messages as views
from bot.access import Access
from bot.commands import ListCommand
from bot.messages import SlackMessage, code
from bot.models import (
    Phase,
    Run,
    RunAction,
    RunRequest,
    RunState,
    SlackOrigin,
    StepStatus,
    WorkflowStatus,
)
from bot.progress import ProgressRefresher
from bot.runs import RunService, UserError
from bot.settings import Settings
from bot.slack import SlackError, SlackMessenger
from bot.store import RunControls, Store
from workflows.client import ArgoClient, ArgoError, ArgoNotFound, ArgoUnavailable
from workflows.manifest import MANAGED_LABEL

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_LEASE_SECONDS = 60.0
RESUBMIT_LEASE_SECONDS = 120.0
LIST_SCAN = 100  # newest runs read from the store before filtering by phase
LIST_CREATED_MARGIN = timedelta(minutes=10)
MAX_LOG_BYTES = 5 * 1024 * 1024  # the newest 5 MiB of a log are kept (and uploaded)
LOG_REPOST_SECONDS = 20.0  # the same logs asked again within this window are not reposted
LIVE_STATES = (RunState.SUBMITTING, RunState.RUNNING, RunState.RETRYING)


@dataclass(frozen=True)
class CollectedLog:
    lines: list[str]
    dropped: int  # the oldest lines left out to stay within MAX_LOG_BYTES


class LifecycleService:
    def __init__(
        self,
        *,
        settings: Settings,
        argo: ArgoClient,
        slack: SlackMessenger,
        store: Store,
        runs: RunService,
        progress: ProgressRefresher,
        instance_id: str,
        access: Access,
    ) -> None:
        self._access = access
        self._settings = settings
        self._argo = argo
        self._slack = slack
        self._store = store
        self._runs = runs
        self._progress = progress
        self._instance_id = instance_id
        self._logs_posted: dict[tuple[str, str | None], float] = {}

    # -- read-only verbs -----------------------------------------------------------------

    async def templates(self, origin: SlackOrigin | None = None) -> SlackMessage:
        """The enabled templates; with `origin`, only those the policy lets that person run
        in that channel."""
        runnable = await self._argo_call(self._runs.runnable_templates(), "list the templates")
        if origin is not None:
            allowed = [t for t in runnable if self._access.may_run(t.name, origin)]
            if runnable and not allowed:
                return views.note("The access policy lets you run no template in this channel.")
            runnable = allowed
        return views.templates_message(runnable, command=self._settings.slack_command)

    async def list_runs(self, origin: SlackOrigin, command: ListCommand) -> SlackMessage:
        """Recent runs from the store; unfinished ones get Argo's phase from one list call."""
        mine = command.scope == "mine"
        found = await self._store.recent_runs(
            channel_id=None if mine else origin.channel_id,
            user_id=origin.user_id if mine else None,
            limit=LIST_SCAN,
        )
        live = [run for run in found if run.state in LIVE_STATES]
        statuses: dict[str, WorkflowStatus] = {}
        stale = False
        if live:
            oldest = min(run.created_at for run in live) - LIST_CREATED_MARGIN
            try:
                listed = await self._argo.list_workflows(
                    f"{MANAGED_LABEL}=true", created_after=oldest
                )
            except ArgoError as error:
                logger.warning("list: Argo did not answer: %s", error)
                stale = True
            else:
                statuses = {status.name: status for status in listed}
        rows = []
        for run in found:
            status = statuses.get(run.name) if run.state in LIVE_STATES else None
            phase = views.shown_phase(run, status)
            if _matches(phase, command.phase):
                rows.append((run, phase, status.progress if status else None))
        rows = rows[: views.MAX_LIST_ROWS]
        links = await asyncio.gather(*(self._thread_link(run) for run, _, _ in rows))
        listed_rows = [
            views.ListedRun(run=run, phase=phase, progress=progress, thread_link=link)
            for (run, phase, progress), link in zip(rows, links, strict=True)
        ]
        title = "Your runs" if mine else "Runs in this channel"
        if command.phase:
            title += f" · {command.phase}"
        return views.runs_list(listed_rows, title=title, now=_now(), stale=stale)

    async def status(self, name: str) -> SlackMessage:
        run = await self._our_run(name)
        status = await self._read(run)
        return views.status_message(
            run,
            status,
            now=_now(),
            thread_link=await self._thread_link(run),
            ui_link=self._ui_link(run),
        )

    # -- logs ----------------------------------------------------------------------------

    async def logs(self, name: str, step: str | None, origin: SlackOrigin) -> SlackMessage:
        """The tail of the log in the run's thread (the whole log as a file when long)."""
        run = await self._our_run(name)
        link = await self._thread_link(run)
        where = views.link_to(link, "its thread") or "its thread"
        posted = self._logs_posted.get((name, step))
        if posted is not None and time.monotonic() - posted < LOG_REPOST_SECONDS:
            return views.note(f":page_facing_up: These logs were just posted in {where}.")
        pods = _pods(await self._read(run), step)
        log = await self._collect_log(run, pods, labelled=step is None and len(pods) > 1)
        if not log.lines:
            raise UserError(
                f"There are no log lines for {code(name)}"
                + (f", step {code(step)}" if step else "")
                + " (its pods have not written any yet, or were deleted by pod garbage collection)."
            )
        message, partial = views.logs_message(
            name, step, log.lines, asked_by=origin.user_id, dropped=log.dropped
        )
        await self._in_thread(run, message, required=True)
        if partial:
            content = ("\n".join(log.lines) + "\n").encode()
            try:
                await self._slack.upload(
                    run.channel_id,
                    thread_ts=run.thread_ts,
                    filename=views.log_file_name(name, step),
                    content=content,
                    title=f"Log of {name}" + (f" ({step})" if step else ""),
                )
            except SlackError as error:
                logger.warning("could not upload the log of %s: %s", name, error)
                raise UserError(
                    f"I posted the last lines in {where}, but Slack refused the full log file "
                    f"({error})."
                ) from error
        self._logs_posted[(name, step)] = time.monotonic()
        return views.note(f":page_facing_up: Posted the logs of {code(name)} in {where}.")

    async def _collect_log(
        self, run: Run, pods: list[StepStatus], *, labelled: bool
    ) -> CollectedLog:
        """Stream the main containers' lines, keeping the newest MAX_LOG_BYTES in memory."""
        wanted = {pod.pod_name for pod in pods}
        step_of = {pod.pod_name: pod.name for pod in pods}
        single = next(iter(wanted)) if len(wanted) == 1 else None
        lines: deque[str] = deque()
        size = dropped = 0
        try:
            async for line in self._argo.stream_logs(run.name, pod_name=single):
                if line.pod_name and line.pod_name not in wanted:
                    continue
                text = line.content
                if labelled:
                    text = f"[{step_of.get(line.pod_name, line.pod_name)}] {text}"
                lines.append(text)
                size += len(text) + 1
                while size > MAX_LOG_BYTES and lines:
                    size -= len(lines.popleft()) + 1
                    dropped += 1
        except ArgoError as error:
            raise UserError(_argo_problem(error, f"read the logs of {code(run.name)}")) from error
        return CollectedLog(lines=list(lines), dropped=dropped)

    # -- actions -------------------------------------------------------------------------

    async def act(self, action: RunAction, name: str, origin: SlackOrigin) -> SlackMessage:
        run = await self._our_run(name)
        self._access.check_control(run, action, origin)
        if run.state is RunState.SUBMITTING:
            raise UserError(f"{code(name)} is still being submitted; try again in a moment.")
        if action is RunAction.RESUBMIT:
            return await self._resubmit(run, origin)
        if action is RunAction.RETRY:
            return await self._retry(run, origin)
        return await self._shutdown(run, action, origin)

    async def _shutdown(self, run: Run, action: RunAction, origin: SlackOrigin) -> SlackMessage:
        name = run.name
        if run.state is RunState.ANNOUNCED:
            raise UserError(f"{code(name)} has already finished ({run.phase.value}).")
        if run.state is RunState.RETRYING:
            raise UserError(f"{code(name)} is being retried right now; try again in a moment.")
        before = (await self._store.controls([name])).get(name) or RunControls()
        claimed, current = await self._store.claim_shutdown(name, action.value, origin.user_id)
        if not claimed:
            who = "You" if current.shutdown_by == origin.user_id else f"<@{current.shutdown_by}>"
            raise UserError(
                f"{who} already asked to {current.shutdown} {code(name)}; it ends shortly."
            )
        send = (
            self._argo.stop_workflow if action is RunAction.STOP else self._argo.terminate_workflow
        )
        try:
            status = await send(name)
        except ArgoError as error:
            await self._store.release_shutdown(name, action.value, before)
            if "completed" in error.message:
                raise UserError(f"{code(name)} has already finished.") from error
            raise UserError(_argo_problem(error, f"{action.value} {code(name)}")) from error
        logger.info("run %s requested", action.value, extra={"run": name})
        await self._in_thread(run, views.action_note(action, name, origin.user_id))
        await self._show_running(run, status, current)
        # Terminate skips the exit hook: look again soon instead of waiting for the poller.
        self._runs.follow_hook(name)
        where = views.link_to(await self._thread_link(run), "its thread") or "its thread"
        verb = "stop" if action is RunAction.STOP else "terminate"
        return views.note(
            f":octagonal_sign: Asked Argo to {verb} {code(name)}; the result follows in {where}."
        )

    async def _retry(self, run: Run, origin: SlackOrigin) -> SlackMessage:
        name = run.name
        if run.state is RunState.RUNNING:
            raise UserError(f"{code(name)} is still running: there is nothing to retry yet.")
        if run.state is RunState.ANNOUNCED and run.phase is Phase.SUCCEEDED:
            raise UserError(
                f"{code(name)} succeeded: there is nothing to retry. "
                f"`resubmit {name}` runs it again."
            )
        if not await self._store.begin_retry(name, self._instance_id, RETRY_LEASE_SECONDS):
            raise UserError(f"{code(name)} is already being retried.")
        retried = False
        try:
            status = await self._argo.retry_workflow(name)
            retried = True
        except ArgoError as error:
            raise UserError(_argo_problem(error, f"retry {code(name)}")) from error
        finally:
            await self._store.end_retry(name, self._instance_id, retried=retried)
        logger.info("run retried", extra={"run": name})
        await self._in_thread(run, views.action_note(RunAction.RETRY, name, origin.user_id))
        await self._show_running(run, status, RunControls())
        where = views.link_to(await self._thread_link(run), "its thread") or "its thread"
        return views.note(f":repeat: Retrying {code(name)}; the new result follows in {where}.")

    async def _resubmit(self, run: Run, origin: SlackOrigin) -> SlackMessage:
        """A fresh run of the stored template and parameters, announced in a new thread.

        Not Argo's resubmit endpoint: it copies the old spec, so the new workflow would carry
        the old workflow's exit-hook token (refused by the bot) and a name the bot did not
        choose. A fresh create gets its own name, token and thread like any run.
        """
        claimed, controls = await self._store.claim_resubmit(
            run.name, origin.user_id, RESUBMIT_LEASE_SECONDS
        )
        if not claimed:
            raise UserError(await self._already_resubmitted(run, controls))
        request = RunRequest(
            template=run.template,
            parameters=run.parameters,
            origin=SlackOrigin(
                user_id=origin.user_id, channel_id=run.channel_id, team_id=origin.team_id
            ),
        )
        try:
            new_run = await self._runs.start_run(request)
        except BaseException:
            await self._store.end_resubmit(run.name, None)
            raise
        await self._store.end_resubmit(run.name, new_run.name)
        old_link, new_link = await asyncio.gather(
            self._thread_link(run), self._thread_link(new_run)
        )
        await self._in_thread(run, views.resubmitted_note(new_run.name, origin.user_id, new_link))
        await self._in_thread(new_run, views.resubmitted_from_note(run.name, old_link))
        where = views.link_to(new_link, "its thread") or "a new thread"
        return views.note(
            f":arrow_forward: Resubmitted {code(run.name)} as {code(new_run.name)}: {where}."
        )

    async def _already_resubmitted(self, run: Run, controls: RunControls) -> str:
        if not controls.resubmitted_as:
            return f"{code(run.name)} is being resubmitted right now."
        again = await self._store.get_run(controls.resubmitted_as)
        link = await self._thread_link(again) if again else None
        where = f": {views.link_to(link, 'its thread')}" if link else ""
        return (
            f"{code(run.name)} was already resubmitted as {code(controls.resubmitted_as)} "
            f"by <@{controls.resubmit_by}>{where}. Resubmit that run to run it once more."
        )

    # -- helpers -------------------------------------------------------------------------

    async def _our_run(self, name: str) -> Run:
        """The run, if this bot started it; otherwise a plain answer why not."""
        run = await self._store.get_run(name)
        if run is not None and run.namespace == self._argo.namespace:
            if run.state is RunState.REJECTED:
                raise UserError(f"{code(name)} never ran: Argo refused to start it.")
            return run
        try:
            await self._argo.get_workflow(name)
        except ArgoNotFound as error:
            raise UserError(
                f"There is no workflow {code(name)} in namespace {code(self._argo.namespace)}."
            ) from error
        except ArgoError as error:
            raise UserError(_argo_problem(error, f"look up {code(name)}")) from error
        raise UserError(
            f"{code(name)} was not started from Slack by this bot, so I don't show or change "
            "it here; use the Argo UI or CLI for it."
        )

    async def _read(self, run: Run) -> WorkflowStatus:
        """Argo's view of one of our runs (which Argo may have deleted since)."""
        try:
            return await self._argo.get_workflow(run.name)
        except ArgoNotFound as error:
            raise UserError(_gone(run)) from error
        except ArgoError as error:
            raise UserError(_argo_problem(error, f"read {code(run.name)}")) from error

    async def _argo_call(self, call: Awaitable[T], what: str) -> T:
        try:
            return await call
        except ArgoError as error:
            raise UserError(_argo_problem(error, what)) from error

    async def _thread_link(self, run: Run) -> str | None:
        if not run.thread_ts:
            return None
        return await self._slack.permalink(run.channel_id, run.thread_ts)

    def _ui_link(self, run: Run) -> str | None:
        return self._settings.argo_ui_link(run.namespace, run.name)

    async def _in_thread(self, run: Run, message: SlackMessage, *, required: bool = False) -> None:
        """Say it in the run's thread; only a `required` post fails the action."""
        try:
            await self._slack.post(run.channel_id, message, thread_ts=run.thread_ts)
        except SlackError as error:
            logger.warning("could not post in the thread of %s: %s", run.name, error)
            if required:
                raise UserError(f"Slack refused the post in the run's thread ({error}).") from error

    async def _show_running(self, run: Run, status: WorkflowStatus, controls: RunControls) -> None:
        """Edit the thread root at once after a stop or retry (the refresher takes over)."""
        if status.completed:
            return  # already over: the announcement shows the end
        shown = views.progress(status, controls, started=run.created_at, now=_now())
        await self._progress.show(run, shown.line)


def _now() -> datetime:
    return datetime.now(UTC)


def _matches(phase: Phase, wanted: str | None) -> bool:
    if wanted is None:
        return True
    if wanted == "failed":
        return phase in (Phase.FAILED, Phase.ERROR)
    if wanted == "succeeded":
        return phase is Phase.SUCCEEDED
    return not phase.is_final


def _pods(status: WorkflowStatus, step: str | None) -> list[StepStatus]:
    """The pods whose logs were asked for: one step's, or all of them."""
    pods = [s for s in status.steps if s.pod_name]
    if step is None:
        if not pods:
            raise UserError(f"{code(status.name)} has not started any pod yet.")
        return pods
    chosen = [s for s in pods if s.name == step]
    if not chosen:
        names = ", ".join(dict.fromkeys(code(s.name) for s in pods)) or "none yet"
        raise UserError(f"{code(status.name)} has no step {code(step)}. Its steps: {names}.")
    return chosen


def _gone(run: Run) -> str:
    ended = f"; it ended *{run.phase.value}*" if run.phase.is_final else ""
    return (
        f"{code(run.name)} is no longer in Argo (deleted or garbage-collected){ended}. "
        "Its thread still has what was posted."
    )


def _argo_problem(error: ArgoError, what: str) -> str:
    if isinstance(error, ArgoUnavailable):
        return f"Argo is not answering right now ({error.message}); try again in a minute."
    if isinstance(error, ArgoNotFound):
        return f"Argo could not {what}: it no longer has that workflow."
    return f"Argo refused to {what}: {error.message}"
