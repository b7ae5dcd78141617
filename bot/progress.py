"""Live progress: the thread root of every running run shows its phase, progress, running step
and elapsed time, edited in place.

One APScheduler job; each cycle costs one store query when nothing runs, and otherwise one
Argo list call for all running runs (never one call per run). A run's root is edited at most
once per interval and only when what it shows changed (the elapsed time alone refreshes it
now and then); each cycle edits at most a handful of roots, within Slack's chat.update tier.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot import lifecycle_messages as views
from bot.models import Run, RunState
from bot.settings import Settings
from bot.slack import SlackError, SlackMessenger
from bot.store import Store
from bot.tasks import BackgroundTasks
from workflows.client import COMPLETED_LABEL, ArgoClient, ArgoError
from workflows.manifest import MANAGED_LABEL

logger = logging.getLogger(__name__)

PROGRESS_LEASE = "progress-cycle"
CREATED_MARGIN = timedelta(minutes=10)
CHAT_UPDATES_PER_MINUTE = 40  # chat.update is Tier 3 (50+ a minute); the announcer edits too
MIN_REFRESH_SECONDS = 30.0  # an unchanged root is re-edited this often, for its elapsed time


@dataclass(frozen=True)
class ProgressReport:
    running: int
    listed: int
    edited: int
    skipped: bool = False  # another replica holds this cycle


class ProgressRefresher:
    def __init__(
        self,
        *,
        settings: Settings,
        argo: ArgoClient,
        slack: SlackMessenger,
        store: Store,
        tasks: BackgroundTasks,
        instance_id: str,
    ) -> None:
        self._settings = settings
        self._argo = argo
        self._slack = slack
        self._store = store
        self._tasks = tasks
        self._instance_id = instance_id
        self._interval = settings.progress_interval_seconds
        self._busy = False
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.last_report: ProgressReport | None = None

    @property
    def edits_per_cycle(self) -> int:
        return max(1, int(self._interval * CHAT_UPDATES_PER_MINUTE / 60))

    def start(self) -> None:
        self._scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=self._interval, timezone=UTC),
            id="progress",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def _tick(self) -> None:
        if not self._busy:
            self._busy = True
            if self._tasks.spawn(self._cycle(), name="progress-cycle") is None:
                self._busy = False

    async def _cycle(self) -> None:
        try:
            self.last_report = await self.refresh_once()
        except Exception:
            logger.exception("progress cycle failed; the next one will try again")
        finally:
            self._busy = False

    async def refresh_once(self) -> ProgressReport:
        """Edit the roots of running runs whose progress changed: one Argo list call."""
        await self._settle_stale_retries()
        running = [run for run in await self._store.running_runs() if run.root_ts or run.thread_ts]
        if not running:
            return ProgressReport(running=0, listed=0, edited=0)
        lease = max(0.5, self._interval * 0.8)
        if not await self._store.acquire_lease(PROGRESS_LEASE, self._instance_id, lease):
            return ProgressReport(running=len(running), listed=0, edited=0, skipped=True)
        oldest = min(run.created_at for run in running) - CREATED_MARGIN
        listed = await self._argo.list_workflows(
            f"{MANAGED_LABEL}=true,{COMPLETED_LABEL}!=true", created_after=oldest, with_nodes=True
        )
        statuses = {status.name: status for status in listed}
        controls = await self._store.controls(run.name for run in running)
        now = datetime.now(UTC)
        min_gap = self._interval * 0.8
        refresh_gap = max(MIN_REFRESH_SECONDS, self._interval * 6)
        candidates = []
        for run in running:
            status = statuses.get(run.name)
            if status is None or status.completed:
                continue  # over (or gone): the announcement shows the end
            mark = controls.get(run.name)
            shown = views.progress(status, mark, started=run.created_at, now=now)
            edited_at = mark.progress_at if mark and mark.progress_at else 0.0
            age = now.timestamp() - edited_at
            if age < min_gap or (mark and mark.progress_shown == shown.key and age < refresh_gap):
                continue  # shown recently, or nothing new to show
            candidates.append((edited_at, run, shown))
        # Least recently edited first, so a busy run cannot starve the others.
        candidates.sort(key=lambda item: item[0])
        edited = 0
        for _, run, shown in candidates[: self.edits_per_cycle]:
            # The store decides, so replicas racing on one run edit it once.
            if await self._store.claim_progress(
                run.name, shown.key, min_gap=min_gap, refresh_gap=refresh_gap
            ) and await self.show(run, shown.line):
                edited += 1
        return ProgressReport(running=len(running), listed=len(listed), edited=edited)

    async def _settle_stale_retries(self) -> None:
        """A replica that died mid-retry left its run `retrying`: ask Argo how it went.

        Argo still showing the failure it was announced with (same finish time) means the
        retry never reached it; anything else means it did, and the run is followed again.
        """
        for run in await self._store.stale_retries():
            try:
                status = await self._argo.get_workflow(run.name)
            except ArgoError as error:
                logger.warning("cannot settle the stale retry of %s: %s", run.name, error)
                continue
            unchanged = status.completed and status.finished_at == run.finished_at
            if await self._store.settle_retry(run.name, retried=not unchanged):
                logger.info("settled the stale retry of %s (retried: %s)", run.name, not unchanged)

    async def show(self, run: Run, line: str) -> bool:
        """Edit a running run's own message; if the run ended meanwhile, put its end back.

        The announcement marks the run announced *before* it edits that message, so a
        progress edit that lands after that edit is seen here and undone.
        """
        run = await self._store.get_run(run.name) or run  # with its input files
        message_ts = run.root_ts or run.thread_ts
        if not message_ts:
            return False
        ui_link = self._settings.argo_ui_link(run.namespace, run.name)
        started = time.monotonic()
        try:
            await self._slack.update(
                run.channel_id, message_ts, views.root_of(run, ui_link, progress=line)
            )
        except SlackError as error:
            logger.warning("could not show the progress of %s: %s", run.name, error)
            return False
        after = await self._store.get_run(run.name)
        if after is None or after.state is not RunState.ANNOUNCED:
            return True
        try:
            status = await self._argo.get_workflow(run.name)
            final = views.root_of(run, ui_link, status=status)
            await self._slack.update(run.channel_id, message_ts, final)
        except (ArgoError, SlackError):
            logger.warning("could not restore the final root of %s", run.name, exc_info=True)
        logger.info(
            "progress edit of %s raced its announcement; final root restored in %.3f s",
            run.name,
            time.monotonic() - started,
        )
        return True
