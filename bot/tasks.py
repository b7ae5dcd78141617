"""Work that runs after Slack or Argo got their answer, tracked so shutdown can wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class BackgroundTasks:
    """A set of named asyncio tasks: failures are logged, never lost; close() drains them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, but wake up at once when shutdown begins; False means stop working."""
        if seconds > 0 and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        return not self._closing.is_set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any] | None:
        if self._closing.is_set():
            coroutine.close()
            logger.warning("shutting down: not starting %s", name)
            return None
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until no task is running, including tasks spawned meanwhile (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def stop_accepting(self) -> None:
        """Refuse new work and wake sleepers; what is running keeps running."""
        self._closing.set()

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop taking work, let work in flight finish (up to a grace period), cancel the rest."""
        self._closing.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


class QuietGate:
    """Lets Slack's answers go first: work a Slack request started waits, briefly, until no
    Slack request is being handled, so a burst of commands is acknowledged before the bot
    starts posting their thread roots on the same event loop."""

    def __init__(self, *, quiet_seconds: float = 0.02) -> None:
        self._quiet_seconds = quiet_seconds
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._deferred: list[Callable[[], object]] = []

    def enter(self) -> None:
        self._in_flight += 1
        self._quiet.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._timer = asyncio.get_running_loop().call_later(self._quiet_seconds, self._open)

    async def wait(self, limit: float = 1.0) -> None:
        """Until no Slack request was in flight for a moment, or `limit` seconds at most.

        Everyone waiting in one busy spell shares one deadline (`limit` after the first of
        them), not a timer each: a burst of commands starts hundreds of waits at once.
        """
        if self._quiet.is_set():
            return
        self._arm_deadline(limit)
        await self._quiet.wait()

    def call_when_quiet(self, callback: Callable[[], object], limit: float = 1.0) -> None:
        """Call `callback` when `wait` would return: now if no Slack request is in flight.

        For work a Slack request starts: created only then, it costs the burst's acks
        nothing. Waiting in a task of its own, each of a burst's 500 commands cost the event
        loop ~9 ms before the last ack (BENCHMARKS.md, round 7).
        """
        if self._quiet.is_set():
            callback()
            return
        self._arm_deadline(limit)
        self._deferred.append(callback)

    async def drained(self) -> None:
        """Until no work waits here any more: all of it has been called (tests)."""
        while self._deferred:
            await self._quiet.wait()

    def release(self) -> None:
        """Let everything waiting go now (shutdown: start what waits while it can finish)."""
        self._open()

    def _arm_deadline(self, limit: float) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(limit, self._open)

    def _open(self) -> None:
        """A quiet moment, or the shared deadline (requests may still be in flight): let every
        waiter go."""
        for timer in (self._timer, self._deadline):
            if timer is not None:
                timer.cancel()
        self._timer = self._deadline = None
        self._quiet.set()
        deferred, self._deferred = self._deferred, []
        for callback in deferred:
            try:
                callback()
            except Exception:  # one failing start must not keep the others waiting
                logger.exception("work deferred to a quiet moment failed to start")
