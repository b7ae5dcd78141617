"""The fallback: an APScheduler job that announces finished runs whose hook never came."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.metrics import Metrics
from bot.runs import PollReport, RunService
from bot.tasks import BackgroundTasks
from workflows.client import ArgoError

logger = logging.getLogger(__name__)


class Poller:
    """Schedules poll cycles; each cycle runs as a tracked task so shutdown can let it finish."""

    def __init__(
        self,
        runs: RunService,
        tasks: BackgroundTasks,
        interval_seconds: float,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._runs = runs
        self._metrics = metrics or Metrics()
        self._tasks = tasks
        self._cycle_running = False
        self._interval = interval_seconds
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self.last_report: PollReport | None = None

    def start(self) -> None:
        """First cycle at once (runs that ended while the bot was down), then every interval."""
        self._scheduler.add_job(
            self._start_cycle,
            IntervalTrigger(seconds=self._interval, timezone=UTC),
            id="poll-argo",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()

    async def _start_cycle(self) -> None:
        if not self._cycle_running:
            self._tasks.spawn(self.cycle(), name="poll-cycle")

    async def cycle(self) -> None:
        self._cycle_running = True
        started = time.perf_counter()
        try:
            report = await self._runs.poll_once()
            self._metrics.runs_tracked.set(await self._runs.waiting_runs())
        except ArgoError as error:  # an outage, already retried: one line, no traceback
            self._metrics.poll_cycle.labels(outcome="failed").observe(time.perf_counter() - started)
            logger.warning("poll cycle failed, Argo: %s; the next one will try again", error)
            return
        except Exception:
            self._metrics.poll_cycle.labels(outcome="failed").observe(time.perf_counter() - started)
            logger.exception("poll cycle failed; the next one will try again")
            return
        finally:
            self._cycle_running = False
        self._metrics.poll_cycle.labels(outcome="ok").observe(time.perf_counter() - started)
        self._metrics.poll_announced.inc(report.announced)
        self.last_report = report
        if report.pending:
            logger.info(
                "poll cycle: %d completed listed, %d waiting, %d announced in %.3f s",
                report.listed,
                report.pending,
                report.announced,
                time.perf_counter() - started,
            )

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
