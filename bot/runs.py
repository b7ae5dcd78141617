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

from bot import messages
from bot.filenames import display_file_name
from bot.inputs import InputError, PlannedInput, RunInputs, plan_inputs, split_assignments
from bot.logging_setup import bind_run
from bot.metrics import Metrics
from bot.models import (
    Artifact,
    Run,
    RunInput,
    RunRequest,
    RunState,
    TemplateInfo,
    WorkflowStatus,
)
from bot.parameters import ParameterError, validate_parameters
from bot.settings import Settings
from bot.slack import SlackError, SlackMessenger
from bot.storage import S3Storage, StorageError
from bot.store import Store
from bot.tasks import BackgroundTasks
from bot.uploads import InputRelay
from workflows.client import (
    ArgoClient,
    ArgoError,
    ArgoNotFound,
    ArgoRejected,
    ArgoUnavailable,
)
from workflows.manifest import (
    CHANNEL_ANNOTATION,
    MANAGED_LABEL,
    THREAD_ANNOTATION,
    USER_ANNOTATION,
    build_workflow,
    hook_token,
    workflow_name,
)

logger = logging.getLogger(__name__)

TEMPLATE_CACHE_SECONDS = 30.0
ANNOUNCE_LEASE_SECONDS = 120.0
# After a hook, Argo may still say Running (exit handlers run before completion).
HOOK_RECHECK_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
POLL_CREATED_MARGIN = timedelta(minutes=10)
POLL_CONCURRENCY = 8
POLL_LEASE = "poll-cycle"
# A run still `submitting` after this long lost its replica around the create call.
SUBMISSION_GRACE_SECONDS = 120.0


class UserError(Exception):
    """Something the person who asked must hear about, in plain words."""


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
        metrics: Metrics | None = None,
        relay: InputRelay | None = None,
    ) -> None:
        self._settings = settings
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

    # -- start -------------------------------------------------------------------------

    async def start_run(self, request: RunRequest, inputs: RunInputs | None = None) -> Run:
        """Start a run, or raise UserError having left nothing behind.

        Files from Slack (`inputs`) are matched to the template's input artifacts before
        anything is posted, and are in S3 before the Workflow that reads them exists. With
        `inputs.thread_ts` the run lives in the thread of the person's own message.
        """
        template = await self._template(request.template)
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
        await self._store.add_run(run)
        if planned:
            run = await self._upload_inputs(run, planned)
        manifest = build_workflow(
            name=name,
            namespace=self._argo.namespace,
            template=template.name,
            parameters=parameters,
            hook_url=self._settings.hook_url,
            hook_token=hook_token(
                self._settings.webhook_secret.get_secret_value(), self._argo.namespace, name
            ),
            notify_template=self._settings.argo_notify_template,
            annotations={
                USER_ANNOTATION: origin.user_id,
                CHANNEL_ANNOTATION: origin.channel_id,
                THREAD_ANNOTATION: thread_ts,
            },
            input_artifacts={item.artifact: item.key for item in run.inputs},
        )
        try:
            await self._create(manifest, name)
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
            await self._argo.get_workflow(name)  # raises when it really is not there
            logger.warning("create of %s had an unknown outcome; it exists", name)

    async def template(self, name: str) -> TemplateInfo:
        """A template as the bot understands it (cached briefly); UserError when unusable."""
        return await self._template(name)

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
        self._templates[name] = (time.monotonic(), template)
        return template

    async def _available_templates(self) -> list[TemplateInfo]:
        try:
            return await self._argo.list_templates()
        except ArgoError:
            logger.warning("could not list templates", exc_info=True)
            return []

    # -- finish ------------------------------------------------------------------------

    async def known_run(self, name: str) -> Run | None:
        return await self._store.get_run(name)

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
                    outcome = await self.finish(name)
                except (ArgoError, SlackError, StorageError) as error:
                    logger.warning("finishing %s failed, will retry: %s", name, error)
                    continue
                if outcome is Outcome.ANNOUNCED:
                    self._metrics.hook_to_announcement.observe(time.monotonic() - received)
                if outcome.is_final:
                    return
            logger.info("%s still not completed after its hook; the poller will finish it", name)
        finally:
            self._following.discard(name)

    async def finish(self, name: str) -> Outcome:
        """Announce a run if Argo says it is over and nobody announced it yet."""
        bind_run(name)
        run = await self._store.get_run(name)
        if run is None:
            return Outcome.NOT_OURS
        if run.state is RunState.ANNOUNCED:
            return Outcome.ALREADY_ANNOUNCED
        if run.state is not RunState.RUNNING:
            return Outcome.NOT_COMPLETED if run.state is RunState.SUBMITTING else Outcome.NOT_OURS
        try:
            status = await self._argo.get_workflow(name)
        except ArgoNotFound:
            return Outcome.GONE
        if not status.completed:
            return Outcome.NOT_COMPLETED
        if not await self._store.claim_announcement(
            name, self._instance_id, ANNOUNCE_LEASE_SECONDS
        ):
            return Outcome.ALREADY_ANNOUNCED
        try:
            await self._announce(run, status)
        except BaseException:
            await self._store.release_claim(name, self._instance_id)
            raise
        self._metrics.run_finished(run.template, status.phase.value)
        return Outcome.ANNOUNCED

    async def _announce(self, run: Run, status: WorkflowStatus) -> None:
        ui_link = self._settings.argo_ui_link(run.namespace, run.name)
        artifacts = await self._linked_artifacts(run.name, status.artifacts)
        result = messages.run_result(
            status, artifacts, ui_link=ui_link, user_id=run.user_id, with_buttons=True
        )
        await self._slack.post(run.channel_id, result, thread_ts=run.thread_ts)
        await self._store.mark_announced(
            run.name, self._instance_id, status.phase, status.finished_at
        )
        logger.info("run announced", extra={"run": run.name, "phase": status.phase.value})
        await self._show(run, ui_link, status=status)

    async def _linked_artifacts(self, name: str, found: tuple[Artifact, ...]) -> list[Artifact]:
        return list(await asyncio.gather(*(self._link(name, a) for a in found)))

    async def _link(self, name: str, artifact: Artifact) -> Artifact:
        """Size and a presigned link, only for objects under this run's own prefixes."""
        bucket = artifact.bucket or self._storage.bucket
        artifact = artifact.model_copy(update={"bucket": bucket})
        if not artifact.key.startswith((f"sessions/{name}/", f"{name}/")):
            return artifact
        try:
            size = await self._storage.object_size(artifact.key, bucket)
        except StorageError:
            logger.warning("could not read the size of %s", artifact.key, exc_info=True)
        else:
            if size is None:
                return artifact
            artifact = artifact.model_copy(update={"size": size})
        url = await self._storage.presigned_get_url(
            artifact.key, self._settings.presign_expiry_seconds, bucket
        )
        return artifact.model_copy(update={"url": url})

    # -- recovery ------------------------------------------------------------------------

    async def _settle_interrupted_submissions(self) -> None:
        """Runs whose replica died around the create call: look them up by their chosen name.

        Nothing is re-submitted blindly: a workflow Argo has becomes a tracked run, one it
        does not have is reported in its thread as not started.
        """
        for run in await self._store.stale_submissions(SUBMISSION_GRACE_SECONDS):
            try:
                await self._argo.get_workflow(run.name)
            except ArgoNotFound:
                if await self._store.settle_submission(run.name, RunState.REJECTED):
                    await self._tell_not_started(run)
                continue
            except ArgoError as error:
                logger.warning("cannot check interrupted submission %s: %s", run.name, error)
                continue
            if await self._store.settle_submission(run.name, RunState.RUNNING):
                logger.info("recovered interrupted submission %s", run.name)

    async def _tell_not_started(self, run: Run) -> None:
        if not run.thread_ts:
            return
        text = (
            f":warning: The bot stopped before Argo confirmed {messages.code(run.name)}; "
            f"it was not started. <@{run.user_id}>, please run the command again."
        )
        note = messages.SlackMessage(text=text, blocks=[])
        try:
            await self._slack.post(run.channel_id, note, thread_ts=run.thread_ts)
        except SlackError:
            logger.warning("could not report the lost submission %s", run.name, exc_info=True)

    # -- poll --------------------------------------------------------------------------

    async def poll_once(self) -> PollReport:
        """Announce finished runs whose hook never came: one Argo list call, O(1) queries.

        Only the replica holding the poll lease runs a cycle, so N replicas do not list Argo
        N times; if it dies, the lease runs out and another replica takes the next cycle.
        """
        lease_seconds = max(0.5, self._settings.poll_interval_seconds * 0.8)
        if not await self._store.acquire_lease(POLL_LEASE, self._instance_id, lease_seconds):
            return PollReport(listed=0, pending=0, announced=0, skipped=True)
        await self._settle_interrupted_submissions()
        waiting = await self._store.waiting_runs()
        if not waiting:
            return PollReport(listed=0, pending=0, announced=0)
        completed = await self._argo.list_completed(
            f"{MANAGED_LABEL}=true", created_after=min(waiting.values()) - POLL_CREATED_MARGIN
        )
        pending = {name for name, _ in completed if name in waiting}
        limit = asyncio.Semaphore(POLL_CONCURRENCY)

        async def finish_one(name: str) -> bool:
            async with limit:
                try:
                    return await self.finish(name) is Outcome.ANNOUNCED
                except (ArgoError, SlackError, StorageError) as error:
                    logger.warning("poller could not finish %s: %s", name, error)
                    return False

        results = await asyncio.gather(*(finish_one(name) for name in sorted(pending)))
        return PollReport(listed=len(completed), pending=len(pending), announced=sum(results))

    async def waiting_runs(self) -> int:
        """How many runs are started and not announced yet."""
        return await self._store.count_waiting()
