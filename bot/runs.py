"""The run service: the one place that knows the whole story of a run.

Start: validate against the template, post the thread root, record the run, create the
Workflow. Finish: read the real status from Argo, claim the announcement atomically,
post the result with presigned artifact links, edit the thread root.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from bot import messages
from bot.coalescer import Batch, Coalescer
from bot.filenames import display_file_name
from bot.inputs import InputError, PlannedInput, RunInputs, plan_inputs, split_assignments
from bot.journal import RequestJournal
from bot.logging_setup import bind_run
from bot.metrics import Metrics
from bot.models import (
    Artifact,
    Phase,
    Run,
    RunInput,
    RunRequest,
    RunState,
    SlackOrigin,
    TemplateInfo,
    WorkflowStatus,
)
from bot.parameters import ParameterError, validate_parameters
from bot.settings import Settings
from bot.slack import SlackError, SlackMessenger
from bot.storage import S3Storage
from bot.store import RequestClaim, RequestSuperseded, Store
from bot.tasks import BackgroundTasks
from bot.uploads import InputRelay
from workflows.client import (
    ENABLED_SELECTOR,
    ArgoClient,
    ArgoError,
    ArgoNotFound,
    ArgoRejected,
    ArgoUnavailable,
)
from workflows.manifest import (
    CHANNEL_ANNOTATION,
    MANAGED_LABEL,
    RUN_LABEL,
    THREAD_ANNOTATION,
    USER_ANNOTATION,
    build_workflow,
    hook_token,
    is_label_value,
    workflow_name,
)

if TYPE_CHECKING:
    from bot.access import Access

logger = logging.getLogger(__name__)

TEMPLATE_CACHE_SECONDS = 30.0
ANNOUNCE_LEASE_SECONDS = 120.0
# After a hook, Argo may still say Running (exit handlers run before completion).
HOOK_RECHECK_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# Announcements in progress at once (first come, first served): a thousand hooks at once
# otherwise advance a thousand announcements in lockstep, and even the first ends last.
ANNOUNCE_CONCURRENCY = 32
# Hooked runs claimed ahead of the announcements (a queue short enough for no lease to lapse).
CLAIM_AHEAD = 8 * ANNOUNCE_CONCURRENCY
# Thread roots edited at once after announcements: the results themselves go out first.
ROOT_EDIT_CONCURRENCY = 4
# After a hook's announcement, its root is edited once no announcement is left to make, or
# after this many seconds (a cosmetic edit must not take a result's turn in a burst).
ROOT_EDIT_DEFER_SECONDS = 5.0
# Runs to finish (hooked, or found by a poll cycle) are checked in batches: how long a batch
# gathers, and its largest size.
HOOK_BATCH_WINDOW = 0.02
HOOK_BATCH_MAX = CLAIM_AHEAD // 2
MARK_BATCH_MAX = 500
HOOK_LOOKUP_BATCH_MAX = 500
# The message metadata of a posted result (how a thread is searched after a crash).
RESULT_EVENT = "argo_chatops_result"
POLL_CREATED_MARGIN = timedelta(minutes=10)
POLL_LEASE = "poll-cycle"
# A run still `submitting` after this long lost its replica around the create call.
SUBMISSION_GRACE_SECONDS = 120.0
# A run still `uploading` after this long lost its replica while copying files from Slack.
UPLOAD_GRACE_SECONDS = 15 * 60.0
# Such a run is still created if it is this young; an older one is reported as not started.
RESUBMIT_WITHIN = timedelta(hours=1)


class UserError(Exception):
    """Something the person who asked must hear about, in plain words."""


class TryLater(Exception):
    """Nothing was started, for a reason that should pass (Slack down): the recorded request
    stays pending, and a later poll cycle starts it (see bot/journal.py)."""


class Outcome(enum.Enum):
    ANNOUNCED = "announced"
    ALREADY_ANNOUNCED = "already announced"
    NOT_COMPLETED = "not completed yet"
    NOT_OURS = "not a run of this bot"
    GONE = "workflow no longer exists"

    @property
    def is_final(self) -> bool:
        return self is not Outcome.NOT_COMPLETED


@dataclass(frozen=True)
class PollReport:
    listed: int
    pending: int
    announced: int
    skipped: bool = False  # another replica holds the poll lease


@dataclass(frozen=True)
class Claimed:
    """A hooked run this replica claimed in a batch: its waiter announces it."""

    run: Run
    status: WorkflowStatus
    # A replica claimed it before and died: its result may be in the thread already.
    maybe_posted: bool = False


Checked = Outcome | Claimed


class Mark(NamedTuple):
    """A run whose result was posted: how it ended, for the runs table."""

    name: str
    phase: Phase
    finished_at: datetime | None


def _unannounceable(run: Run) -> Outcome | None:
    """Why a stored run cannot be announced now, from its state alone; None if it may be."""
    if run.state is RunState.ANNOUNCED:
        return Outcome.ALREADY_ANNOUNCED
    if run.state is not RunState.RUNNING:
        return Outcome.NOT_COMPLETED if run.state is RunState.SUBMITTING else Outcome.NOT_OURS
    return None


T = TypeVar("T")


def _settle(waiting: list[asyncio.Future[T]], result: T | BaseException) -> None:
    for future in waiting:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class RunService:
    def __init__(
        self,
        *,
        settings: Settings,
        argo: ArgoClient,
        slack: SlackMessenger,
        storage: S3Storage,
        store: Store,
        tasks: BackgroundTasks,
        instance_id: str,
        access: Access,
        metrics: Metrics | None = None,
        relay: InputRelay | None = None,
        journal: RequestJournal | None = None,
    ) -> None:
        self._settings = settings
        self._access = access
        self._journal = journal
        self._relay = relay
        self._argo = argo
        self._slack = slack
        self._storage = storage
        self._store = store
        self._tasks = tasks
        self._instance_id = instance_id
        self._metrics = metrics or Metrics()
        self._templates: dict[str, tuple[float, TemplateInfo]] = {}
        self._following: set[str] = set()
        # Seconds between re-reads after a hook (Argo may still say Running); then the poller.
        self.recheck_delays: tuple[float, ...] = HOOK_RECHECK_DELAYS
        self._announcing = asyncio.Semaphore(ANNOUNCE_CONCURRENCY)
        self._root_edits = asyncio.Semaphore(ROOT_EDIT_CONCURRENCY)
        self._claimed = 0  # announcements claimed by this replica and not finished
        self._checking = 0  # runs to finish waiting for their batch's read and claim
        self._claim_room = asyncio.Event()
        self._burst_over = asyncio.Event()  # nothing to finish is waiting to be announced
        self._burst_over.set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._finishing: Coalescer[str, Checked] = Coalescer(
            self._check_finished,
            window=HOOK_BATCH_WINDOW,
            max_batch=HOOK_BATCH_MAX,
            room=self._room_for_claims,
            abandoned=self._abandon_claim,
        )
        # Runs whose results are posted are marked announced together: each batch holds those
        # posted while the previous one was being written (no wait when the bot is idle).
        self._marks: Coalescer[Mark, None] = Coalescer(
            self._mark_announced, window=0.0, max_batch=MARK_BATCH_MAX
        )
        # Hooks are checked against the runs table together in the same way: one query for
        # those that arrived while the previous one ran.
        self._namespaces: Coalescer[str, str | None] = Coalescer(
            self._look_up_namespaces, window=0.0, max_batch=HOOK_LOOKUP_BATCH_MAX
        )
        self.submission_grace_seconds = SUBMISSION_GRACE_SECONDS
        self.upload_grace_seconds = UPLOAD_GRACE_SECONDS

    # -- start -------------------------------------------------------------------------

    async def start_run(
        self,
        request: RunRequest,
        inputs: RunInputs | None = None,
        *,
        claim: RequestClaim | None = None,
    ) -> Run:
        """Start a run, or raise UserError having left nothing behind.

        Files from Slack (`inputs`) are matched to the template's input artifacts before
        anything is posted, and are in S3 before the Workflow that reads them exists. With
        `inputs.thread_ts` the run lives in the thread of the person's own message.
        `claim` is the recorded request this run answers (see bot/journal.py): it is marked
        done with the run, and RequestSuperseded means another replica took it over.
        """
        template = await self._template(request.template)
        await self._access.check_run(template.name, request.origin)
        inputs = inputs or RunInputs()
        given, assignments = split_assignments(template, request.parameters)
        try:
            parameters = validate_parameters(template, given)
            planned = plan_inputs(
                template, inputs, assignments, max_bytes=self._settings.max_upload_bytes
            )
        except (ParameterError, InputError) as error:
            raise UserError(str(error)) from error

        origin = request.origin
        name = await self._unused_name(template.name)
        bind_run(name)
        ui_link = self._settings.argo_ui_link(self._argo.namespace, name)
        pending = tuple(
            RunInput(
                artifact=item.artifact,
                file_name=display_file_name(item.file.name),
                key=item.key(name),
                slack_file_id=item.file.id,
            )
            for item in planned
        )
        root = messages.run_root(
            user_id=origin.user_id,
            template=template.name,
            name=name,
            parameters=parameters,
            ui_link=ui_link,
            inputs=pending,
            progress=messages.inputs_received(len(planned)) if planned else None,
        )
        try:
            root_ts = await self._slack.post(origin.channel_id, root, thread_ts=inputs.thread_ts)
        except SlackError as error:
            if error.transient and claim is not None:
                raise TryLater(f"Slack did not take the thread root of {name}: {error}") from error
            raise UserError(
                f"I could not post in this channel ({error}). "
                "Invite me with `/invite @argo-chatops` and try again."
            ) from error

        thread_ts = inputs.thread_ts or root_ts
        run = Run(
            name=name,
            namespace=self._argo.namespace,
            template=template.name,
            parameters=parameters,
            user_id=origin.user_id,
            channel_id=origin.channel_id,
            thread_ts=thread_ts,
            root_ts=root_ts,
            inputs=pending,
            state=RunState.UPLOADING if planned else RunState.SUBMITTING,
            created_at=datetime.now(UTC),
        )
        try:
            await self._store.add_run(run, claim)
        except RequestSuperseded:
            with suppress(SlackError):
                await self._slack.delete(origin.channel_id, root_ts)
            raise
        if planned:
            run = await self._upload_inputs(run, planned)
        try:
            await self._create(self._manifest(run), name)
        except ArgoError as error:
            await self._store.set_state(name, RunState.REJECTED)
            if run.inputs and self._relay is not None:
                await self._relay.discard(run.inputs)
            with suppress(SlackError):
                await self._slack.delete(origin.channel_id, root_ts)
            raise UserError(f"Argo did not start `{template.name}`: {error.message}") from error
        await self._store.set_state(name, RunState.RUNNING)
        if run.inputs:
            await self._show(run, ui_link)
        self._metrics.run_started(template.name)
        logger.info("run started", extra={"run": name, "template": template.name})
        return run.model_copy(update={"state": RunState.RUNNING})

    def _manifest(self, run: Run) -> dict:
        """The Workflow of a recorded run: the same manifest whenever it is built."""
        return build_workflow(
            name=run.name,
            namespace=run.namespace,
            template=run.template,
            parameters=run.parameters,
            hook_url=self._settings.hook_url,
            hook_token=hook_token(
                self._settings.webhook_secret.get_secret_value(), run.namespace, run.name
            ),
            notify_template=self._settings.argo_notify_template,
            annotations={
                USER_ANNOTATION: run.user_id,
                CHANNEL_ANNOTATION: run.channel_id,
                THREAD_ANNOTATION: run.thread_ts or "",
            },
            input_artifacts={item.artifact: item.key for item in run.inputs},
        )

    async def _upload_inputs(self, run: Run, planned: list[PlannedInput]) -> Run:
        """Stream the files into S3; a failure leaves no object, no Workflow and no root."""
        if self._relay is None:
            raise UserError("This bot is not set up to take files.")
        try:
            stored = await self._relay.upload(run.name, planned)
        except InputError as error:
            await self._store.set_state(run.name, RunState.REJECTED)
            if run.root_ts:
                with suppress(SlackError):
                    await self._slack.delete(run.channel_id, run.root_ts)
            raise UserError(f"{error}\nNothing was started.") from error
        await self._store.add_inputs(run.name, stored)
        await self._store.inputs_uploaded(run.name)
        run = run.model_copy(update={"inputs": tuple(stored), "state": RunState.SUBMITTING})
        ui_link = self._settings.argo_ui_link(run.namespace, run.name)
        await self._show(run, ui_link, progress=messages.inputs_uploaded(stored))
        return run

    async def _show(
        self,
        run: Run,
        ui_link: str | None,
        *,
        progress: str | None = None,
        status: WorkflowStatus | None = None,
    ) -> None:
        """Edit the run's own message to show how far it got (a failed edit is cosmetic)."""
        root_ts = run.root_ts or run.thread_ts
        if not root_ts:
            return
        root = messages.run_root(
            user_id=run.user_id,
            template=run.template,
            name=run.name,
            parameters=run.parameters,
            ui_link=ui_link,
            status=status,
            progress=progress,
            inputs=run.inputs,
        )
        try:
            await self._slack.update(run.channel_id, root_ts, root)
        except SlackError:
            logger.warning("could not edit the thread root of %s", run.name, exc_info=True)

    async def _create(self, manifest: dict, name: str) -> None:
        """Create the workflow; after an unknown outcome, look it up by its name."""
        try:
            await self._argo.create_workflow(manifest)
        except ArgoUnavailable:
            try:
                await self._argo.get_workflow(name)
            except ArgoNotFound:
                # It never reached Argo: ask once more. The name makes this safe: a create
                # that did land after all answers 409, which counts as done.
                logger.warning("create of %s did not reach Argo; trying once more", name)
                await self._argo.create_workflow(manifest)
                return
            logger.warning("create of %s had an unknown outcome; it exists", name)

    async def template(self, name: str) -> TemplateInfo:
        """A template as the bot understands it (cached briefly); UserError when unusable."""
        return await self._template(name)

    async def authorize(self, template: TemplateInfo, origin: SlackOrigin) -> None:
        """AccessDenied unless the policy lets this person run `template` there right now."""
        await self._access.check_run(template.name, origin)

    async def _unused_name(self, template: str) -> str:
        """A `<template>-<suffix>` name no run of ours has used (the store keeps every run)."""
        for _ in range(8):
            name = workflow_name(template)
            if await self._store.get_run(name) is None:
                return name
        raise UserError("I could not find a free name for this run; please try again.")

    async def _template(self, name: str) -> TemplateInfo:
        cached = self._templates.get(name)
        if cached and time.monotonic() - cached[0] < TEMPLATE_CACHE_SECONDS:
            return cached[1]
        try:
            template = await self._argo.get_template(name)
        except ArgoNotFound as error:
            available = await self._available_templates()
            raise UserError(messages.unknown_template(name, available)) from error
        except ArgoRejected as error:
            raise UserError(f"Argo refused to read template `{name}`: {error.message}") from error
        except ArgoUnavailable as error:
            raise UserError(
                f"Argo is not answering right now ({error.message}). Nothing was started; "
                "try again in a minute."
            ) from error
        if not self._runnable(template):
            # Answered exactly like a template Argo does not have: its existence stays hidden.
            available = await self._available_templates()
            raise UserError(messages.unknown_template(name, available))
        self._templates[name] = (time.monotonic(), template)
        return template

    def _runnable(self, template: TemplateInfo) -> bool:
        """Opted in with the enabled label; the exit-hook notifier never is, labelled or not."""
        return template.enabled and template.name != self._settings.argo_notify_template

    async def runnable_templates(self) -> list[TemplateInfo]:
        """The templates Slack may see and run (one Argo list call; ArgoError when it fails)."""
        listed = await self._argo.list_templates(ENABLED_SELECTOR)
        return [template for template in listed if self._runnable(template)]

    async def _available_templates(self) -> list[TemplateInfo]:
        try:
            return await self.runnable_templates()
        except ArgoError:
            logger.warning("could not list templates", exc_info=True)
            return []

    # -- finish ------------------------------------------------------------------------

    async def run_namespace(self, name: str) -> str | None:
        """The namespace of a run of ours, None when it is not ours: all a hook needs checked."""
        return await self._namespaces.submit(name)

    async def _look_up_namespaces(self, batch: Batch[str, str | None]) -> None:
        found = await self._store.run_namespaces(batch)
        for name, waiting in batch.items():
            _settle(waiting, found.get(name))

    def follow_hook(self, name: str) -> None:
        """Re-read the workflow a hook named until Argo says it completed (seconds, not a poll)."""
        if name in self._following:
            return
        self._following.add(name)
        self._tasks.spawn(self._follow(name), name=f"follow-hook:{name}")

    async def _follow(self, name: str) -> None:
        bind_run(name)
        received = time.monotonic()
        try:
            for delay in self.recheck_delays:
                if delay and not await self._tasks.sleep(delay):
                    return  # shutting down: the poller of this or another replica takes over
                try:
                    outcome = await self._finish_batched(name, hooked_at=received)
                except (ArgoError, SlackError) as error:
                    logger.warning("finishing %s failed, will retry: %s", name, error)
                    continue
                if outcome.is_final:
                    return
            logger.info("%s still not completed after its hook; the poller will finish it", name)
        finally:
            self._following.discard(name)

    async def _finish_batched(self, name: str, *, hooked_at: float | None = None) -> Outcome:
        """Announce a run if Argo says it is over and nobody announced it yet.

        The run, its workflow and its claim are read in a batch with the other runs being
        finished (hooks arriving together, a poll cycle's finished runs): one runs query, one
        Argo list call and one claim statement per batch, however many runs it holds.
        `hooked_at` (a hook's arrival) times the hook-to-announcement metric.
        """
        self._count_checking(1)
        try:
            checked = await self._finishing.submit(name)
        finally:
            self._count_checking(-1)
        if isinstance(checked, Outcome):
            return checked
        await self._announce_claimed(checked.run, checked.status, checked.maybe_posted)
        if hooked_at is not None:
            self._metrics.hook_to_announcement.observe(time.monotonic() - hooked_at)
        await self._show_final(checked.run, checked.status, after_burst=True)
        return Outcome.ANNOUNCED

    async def _check_finished(self, batch: Batch[str, Checked]) -> None:
        """A batch of runs to finish (hooked, or found by a poll cycle): one read of the runs,
        one Argo list, one claim statement.

        Each run's first waiter gets its outcome, or the claim (`Claimed`) to announce it;
        a second waiter of the same run hears ALREADY_ANNOUNCED, as a lost claim race would.
        """
        stored = await self._store.get_runs(batch)
        reading: list[str] = []
        for name in batch:
            run = stored.get(name)
            outcome = Outcome.NOT_OURS if run is None else _unannounceable(run)
            if outcome is None:
                reading.append(name)
            else:
                _settle(batch[name], outcome)
        if not reading:
            return
        statuses = await self._read_workflows(reading)
        completed: list[str] = []
        for name in reading:
            status = statuses[name]
            if isinstance(status, ArgoNotFound):
                _settle(batch[name], Outcome.GONE)
            elif isinstance(status, ArgoError):
                _settle(batch[name], status)
            elif not status.completed:
                _settle(batch[name], Outcome.NOT_COMPLETED)
            else:
                completed.append(name)
        if not completed:
            return
        interrupted = await self._store.interrupted_claims(completed)
        claimed = await self._store.claim_announcements(
            completed, self._instance_id, ANNOUNCE_LEASE_SECONDS
        )
        for name in completed:
            if name not in claimed:
                _settle(batch[name], Outcome.ALREADY_ANNOUNCED)
                continue
            taker = next((f for f in batch[name] if not f.done()), None)
            if taker is None:  # every waiter was cancelled (shutdown): let it go at once
                await self._store.release_claim(name, self._instance_id)
                continue
            self._count_claims(1)
            status = statuses[name]
            assert isinstance(status, WorkflowStatus)
            taker.set_result(Claimed(stored[name], status, name in interrupted))
            _settle(batch[name], Outcome.ALREADY_ANNOUNCED)

    async def _read_workflows(self, names: list[str]) -> dict[str, WorkflowStatus | ArgoError]:
        """The workflows of a batch: one list call by their run label, and a GET for any it
        did not return (submitted before the label existed, or no longer in Argo)."""
        found: dict[str, WorkflowStatus | ArgoError] = {}
        labelled = [name for name in names if is_label_value(name)]
        if labelled:
            selector = f"{RUN_LABEL} in ({','.join(labelled)})"
            wanted = set(labelled)
            for status in await self._argo.list_workflows(selector, with_nodes=True):
                if status.name in wanted:
                    found[status.name] = status

        async def get(name: str) -> None:
            try:
                found[name] = await self._argo.get_workflow(name)
            except ArgoError as error:
                found[name] = error

        await asyncio.gather(*(get(name) for name in names if name not in found))
        return found

    def _abandon_claim(self, name: str, checked: Checked) -> None:
        """A hook's task was cancelled (shutdown) just as its claim arrived: give it back."""
        if not isinstance(checked, Claimed):
            return
        self._count_claims(-1)
        release = asyncio.get_running_loop().create_task(
            self._store.release_claim(name, self._instance_id), name=f"release-claim:{name}"
        )
        self._releasing.add(release)
        release.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("could not give back an abandoned claim: %s", error)

    def _count_checking(self, change: int) -> None:
        self._checking += change
        self._note_burst()

    def _note_burst(self) -> None:
        if self._claimed or self._checking:
            self._burst_over.clear()
        else:
            self._burst_over.set()

    def _count_claims(self, change: int) -> None:
        self._claimed += change
        self._note_burst()
        if self._claimed < CLAIM_AHEAD:
            self._claim_room.set()
        else:
            self._claim_room.clear()

    async def _room_for_claims(self) -> int:
        """How many hooked runs the next batch may take: claims stay at most CLAIM_AHEAD
        ahead of the announcements, so no lease runs out while its run waits its turn."""
        while self._claimed >= CLAIM_AHEAD:
            self._claim_room.clear()
            await self._claim_room.wait()
        return CLAIM_AHEAD - self._claimed

    async def _announce_claimed(
        self, run: Run, status: WorkflowStatus, maybe_posted: bool = False
    ) -> None:
        """Announce a run this replica claimed (its turn among ANNOUNCE_CONCURRENCY slots,
        first come first served); the claim is released if that fails."""
        try:
            async with self._announcing:
                await self._announce(run, status, maybe_posted)
        except BaseException:
            await self._store.release_claim(run.name, self._instance_id)
            raise
        finally:
            self._count_claims(-1)
        self._metrics.run_finished(run.template, status.phase.value)

    async def _announce(self, run: Run, status: WorkflowStatus, maybe_posted: bool) -> None:
        """Post the result and mark the run announced. After a replica died between those two
        steps (`maybe_posted`), the thread is read first: a result already there (found by
        its message metadata) is only marked, so a crash does not announce a run twice."""
        if maybe_posted and await self._result_in_thread(run, status):
            logger.info("result of %s was posted before a crash; marking it", run.name)
            await self._marks.submit(Mark(run.name, status.phase, status.finished_at))
            return
        ui_link = self._settings.argo_ui_link(run.namespace, run.name)
        artifacts = self._linked_artifacts(run.name, status.artifacts)
        result = messages.run_result(
            status, artifacts, ui_link=ui_link, user_id=run.user_id, with_buttons=True
        )
        await self._slack.post(
            run.channel_id,
            result,
            thread_ts=run.thread_ts,
            metadata={"event_type": RESULT_EVENT, "event_payload": _result_key(run, status)},
        )
        await self._marks.submit(Mark(run.name, status.phase, status.finished_at))
        logger.info("run announced", extra={"run": run.name, "phase": status.phase.value})

    async def _result_in_thread(self, run: Run, status: WorkflowStatus) -> bool:
        if not run.thread_ts:
            return False
        try:
            found = await self._slack.thread_metadata(run.channel_id, run.thread_ts)
        except SlackError as error:
            if error.transient:
                raise  # the claim is given back; a later attempt reads the thread again
            logger.warning("cannot read the thread of %s (%s); posting its result", run.name, error)
            return False
        key = _result_key(run, status)
        return any(
            item.get("event_type") == RESULT_EVENT and item.get("event_payload") == key
            for item in found
        )

    async def _mark_announced(self, batch: Batch[Mark, None]) -> None:
        await self._store.mark_many_announced(batch, self._instance_id)
        for waiting in batch.values():
            _settle(waiting, None)

    async def _show_final(
        self, run: Run, status: WorkflowStatus, *, after_burst: bool = False
    ) -> None:
        """The thread root shows how the run ended, after its announcement and a few at a time.

        `after_burst` (hooks): first wait until this replica has no hooked run left to check
        or announce (at most ROOT_EDIT_DEFER_SECONDS), so that in a burst the results go out
        first.
        """
        if after_burst and not self._tasks.closing:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._burst_over.wait(), ROOT_EDIT_DEFER_SECONDS)
        async with self._root_edits:
            ui_link = self._settings.argo_ui_link(run.namespace, run.name)
            await self._show(run, ui_link, status=status)

    def _linked_artifacts(self, name: str, found: tuple[Artifact, ...]) -> list[Artifact]:
        """Presigned links for the artifacts Argo reports, only under this run's own prefixes.

        Argo lists an output only once it has saved it, so no S3 request is made: signing is
        local. An artifact outside the run's prefixes, or deleted by artifact GC, gets no link.
        """
        own = (f"sessions/{name}/", f"{name}/")
        expiry = self._settings.presign_expiry_seconds
        linked = []
        for artifact in found:
            bucket = artifact.bucket or self._storage.bucket
            url = None
            if not artifact.deleted and artifact.key.startswith(own):
                url = self._storage.presigned_get_url(artifact.key, expiry, bucket)
            linked.append(artifact.model_copy(update={"bucket": bucket, "url": url}))
        return linked

    # -- recovery ------------------------------------------------------------------------

    async def _settle_interrupted_submissions(self) -> None:
        """Runs whose replica died around the create call: look them up by their chosen name.

        Nothing is re-submitted blindly: a workflow Argo has becomes a tracked run. One it
        does not have is created now under the same name (Argo refuses a second workflow of
        that name, so this cannot start it twice), unless the run is too old to start
        unasked: then it is reported in its thread as not started.
        """
        for stale in await self._store.stale_runs(
            RunState.SUBMITTING, self.submission_grace_seconds
        ):
            try:
                await self._argo.get_workflow(stale.name)
            except ArgoNotFound:
                await self._submit_again(stale)
                continue
            except ArgoError as error:
                logger.warning("cannot check interrupted submission %s: %s", stale.name, error)
                continue
            if await self._store.settle_submission(stale.name, RunState.RUNNING):
                logger.info("recovered interrupted submission %s", stale.name)

    async def _submit_again(self, stale: Run) -> None:
        run = await self._store.get_run(stale.name)
        age = datetime.now(UTC) - stale.created_at
        if run is None or age > RESUBMIT_WITHIN:
            if await self._store.settle_submission(stale.name, RunState.REJECTED):
                await self._tell_not_started(stale)
            return
        try:
            await self._create(self._manifest(run), run.name)
        except ArgoRejected as error:
            if await self._store.settle_submission(run.name, RunState.REJECTED):
                await self._tell_not_started(
                    run, why=f"Argo refused {messages.code(run.name)} ({error.message})"
                )
            return
        except ArgoError as error:
            logger.warning("could not submit interrupted run %s again: %s", run.name, error)
            return
        if await self._store.settle_submission(run.name, RunState.RUNNING):
            logger.info("submitted interrupted run %s under its own name", run.name)
            self._metrics.run_started(run.template)

    async def _restart_interrupted_uploads(self) -> None:
        """Runs whose replica died while copying their files: nothing reached Argo. The run is
        dropped with its status message and partial inputs, and the request it came from
        starts again (next cycle); without a recorded request the thread is told."""
        for run in await self._store.stale_runs(RunState.UPLOADING, self.upload_grace_seconds):
            dropped, reopened = await self._store.abandon_upload(run.name)
            if not dropped:
                continue
            logger.info(
                "upload of %s was interrupted; %s",
                run.name,
                "starting it again" if reopened else "telling its thread",
            )
            run = await self._store.get_run(run.name) or run
            if run.inputs and self._relay is not None:
                await self._relay.discard(run.inputs)
            if reopened:
                if run.root_ts:
                    with suppress(SlackError):
                        await self._slack.delete(run.channel_id, run.root_ts)
            else:
                await self._tell_not_started(
                    run,
                    why=f"The bot stopped while copying the files of {messages.code(run.name)}",
                )

    async def _tell_not_started(self, run: Run, *, why: str | None = None) -> None:
        if not run.thread_ts:
            return
        why = why or f"The bot stopped before Argo confirmed {messages.code(run.name)}"
        text = (
            f":warning: {why}; it was not started. <@{run.user_id}>, please run the command again."
        )
        note = messages.SlackMessage(text=text, blocks=[])
        try:
            await self._slack.post(run.channel_id, note, thread_ts=run.thread_ts)
        except SlackError:
            logger.warning("could not report the lost submission %s", run.name, exc_info=True)

    # -- poll --------------------------------------------------------------------------

    async def poll_once(self) -> PollReport:
        """Announce finished runs whose hook never came.

        One Argo list call finds them, and they are finished in batches like hooks: with up
        to HOOK_BATCH_MAX of them, one more list call reads them and a fixed number of
        statements claims them, however many runs are tracked.

        Only the replica holding the poll lease runs a cycle, so N replicas do not list Argo
        N times; if it dies, the lease runs out and another replica takes the next cycle.
        """
        lease_seconds = max(0.5, self._settings.poll_interval_seconds * 0.8)
        if not await self._store.acquire_lease(POLL_LEASE, self._instance_id, lease_seconds):
            return PollReport(listed=0, pending=0, announced=0, skipped=True)
        await self._settle_interrupted_submissions()
        await self._restart_interrupted_uploads()
        if self._journal is not None:
            await self._journal.resume_stale()
        waiting = await self._store.waiting_runs()
        if not waiting:
            return PollReport(listed=0, pending=0, announced=0)
        completed = await self._argo.list_completed(
            f"{MANAGED_LABEL}=true", created_after=min(waiting.values()) - POLL_CREATED_MARGIN
        )
        pending = {name for name, _ in completed if name in waiting}

        async def finish_one(name: str) -> bool:
            bind_run(name)
            try:
                return await self._finish_batched(name) is Outcome.ANNOUNCED
            except (ArgoError, SlackError) as error:
                logger.warning("poller could not finish %s: %s", name, error)
                return False

        results = await asyncio.gather(*(finish_one(name) for name in sorted(pending)))
        return PollReport(listed=len(completed), pending=len(pending), announced=sum(results))

    async def waiting_runs(self) -> int:
        """How many runs are started and not announced yet."""
        return await self._store.count_waiting()


def _result_key(run: Run, status: WorkflowStatus) -> dict[str, str]:
    """What identifies one result of a run: a retried run ends again, at another time."""
    finished = status.finished_at.isoformat() if status.finished_at else ""
    return {"workflow": run.name, "finished_at": finished}
