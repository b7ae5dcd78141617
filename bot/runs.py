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
from bot.models import Artifact, Run, RunRequest, RunState, TemplateInfo, WorkflowStatus
from bot.parameters import ParameterError, validate_parameters
from bot.settings import Settings
from bot.slack import SlackError, SlackMessenger
from bot.storage import S3Storage, StorageError
from bot.store import Store
from bot.tasks import BackgroundTasks
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
    ) -> None:
        self._settings = settings
        self._argo = argo
        self._slack = slack
        self._storage = storage
        self._store = store
        self._tasks = tasks
        self._instance_id = instance_id
        self._templates: dict[str, tuple[float, TemplateInfo]] = {}
        self._following: set[str] = set()

    # -- start -------------------------------------------------------------------------

    async def start_run(self, request: RunRequest) -> Run:
        """Start a run, or raise UserError having left nothing behind."""
        template = await self._template(request.template)
        try:
            parameters = validate_parameters(template, request.parameters)
        except ParameterError as error:
            raise UserError(str(error)) from error

        origin = request.origin
        name = workflow_name(template.name)
        ui_link = self._settings.argo_ui_link(self._argo.namespace, name)
        root = messages.run_root(
            user_id=origin.user_id,
            template=template.name,
            name=name,
            parameters=parameters,
            ui_link=ui_link,
        )
        try:
            thread_ts = await self._slack.post(origin.channel_id, root)
        except SlackError as error:
            raise UserError(
                f"I could not post in this channel ({error}). "
                "Invite me with `/invite @argo-chatops` and try again."
            ) from error

        run = Run(
            name=name,
            namespace=self._argo.namespace,
            template=template.name,
            parameters=parameters,
            user_id=origin.user_id,
            channel_id=origin.channel_id,
            thread_ts=thread_ts,
            created_at=datetime.now(UTC),
        )
        await self._store.add_run(run)
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
        )
        try:
            await self._create(manifest, name)
        except ArgoError as error:
            await self._store.set_state(name, RunState.REJECTED)
            with suppress(SlackError):
                await self._slack.delete(origin.channel_id, thread_ts)
            raise UserError(f"Argo did not start `{template.name}`: {error.message}") from error
        await self._store.set_state(name, RunState.RUNNING)
        logger.info("run started", extra={"run": name, "template": template.name})
        return run.model_copy(update={"state": RunState.RUNNING})

    async def _create(self, manifest: dict, name: str) -> None:
        """Create the workflow; after an unknown outcome, look it up by its name."""
        try:
            await self._argo.create_workflow(manifest)
        except ArgoUnavailable:
            await self._argo.get_workflow(name)  # raises when it really is not there
            logger.warning("create of %s had an unknown outcome; it exists", name)

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
        try:
            for delay in HOOK_RECHECK_DELAYS:
                if not await self._tasks.sleep(delay):
                    return  # shutting down: the poller of this or another replica takes over
                try:
                    outcome = await self.finish(name)
                except (ArgoError, SlackError, StorageError) as error:
                    logger.warning("finishing %s failed, will retry: %s", name, error)
                    continue
                if outcome.is_final:
                    return
            logger.info("%s still not completed after its hook; the poller will finish it", name)
        finally:
            self._following.discard(name)

    async def finish(self, name: str) -> Outcome:
        """Announce a run if Argo says it is over and nobody announced it yet."""
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
        return Outcome.ANNOUNCED

    async def _announce(self, run: Run, status: WorkflowStatus) -> None:
        ui_link = self._settings.argo_ui_link(run.namespace, run.name)
        artifacts = await self._linked_artifacts(run.name, status.artifacts)
        result = messages.run_result(status, artifacts, ui_link=ui_link)
        await self._slack.post(run.channel_id, result, thread_ts=run.thread_ts)
        await self._store.mark_announced(
            run.name, self._instance_id, status.phase, status.finished_at
        )
        logger.info("run announced", extra={"run": run.name, "phase": status.phase.value})
        if run.thread_ts:
            root = messages.run_root(
                user_id=run.user_id,
                template=run.template,
                name=run.name,
                parameters=run.parameters,
                ui_link=ui_link,
                status=status,
            )
            try:
                await self._slack.update(run.channel_id, run.thread_ts, root)
            except SlackError:
                logger.warning("could not edit the thread root of %s", run.name, exc_info=True)

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

    # -- poll --------------------------------------------------------------------------

    async def poll_once(self) -> PollReport:
        """Announce finished runs whose hook never came: one Argo list call, O(1) queries."""
        oldest = await self._store.oldest_unannounced()
        if oldest is None:
            return PollReport(listed=0, pending=0, announced=0)
        completed = await self._argo.list_completed(
            f"{MANAGED_LABEL}=true", created_after=oldest - POLL_CREATED_MARGIN
        )
        pending = await self._store.unannounced_among(name for name, _ in completed)
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
