"""Requests coalesced: keys that arrive close together are handled in one batch.

A thousand exit hooks at once would otherwise cost a thousand reads of the runs table, a
thousand Argo reads and a thousand claim statements, each a round trip with its own Python
overhead. Coalesced, each is one statement or call per batch; what stays per run (the S3
listing, the presigns, the Slack post) runs in the task of the hook that asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Every waiter of each key of a batch; the batch's handler must resolve them all.
Batch = dict[K, list["asyncio.Future[T]"]]


class Coalescer(Generic[K, T]):
    """Keys submitted close together reach `handle` as one batch; each caller gets its result.

    One worker task drains the queue, one batch at a time, first come first served: it waits
    `window` seconds for more keys (with 0, it takes what arrived while the previous batch
    ran: no added latency when idle), then awaits `room()` (how many keys the next batch may
    hold, e.g. while earlier results are still being worked on), then hands at most that many
    (and at most `max_batch`) to `handle`. Futures that `handle` leaves unresolved, or all of
    them when it raises, get an error, so no caller waits forever. A caller that is cancelled
    before its batch starts is left out of it; one cancelled after its result was set hands
    that result to `abandoned` (e.g. to give back what the result holds).
    """

    def __init__(
        self,
        handle: Callable[[Batch[K, T]], Awaitable[None]],
        *,
        window: float,
        max_batch: int,
        room: Callable[[], Awaitable[int]] | None = None,
        abandoned: Callable[[K, T], None] | None = None,
    ) -> None:
        self._handle = handle
        self._abandoned = abandoned
        self._window = window
        self._max_batch = max_batch
        self._room = room
        self._queued: Batch[K, T] = {}
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # batches handled so far

    def __len__(self) -> int:
        return len(self._queued)

    async def submit(self, key: K) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.setdefault(key, []).append(future)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name="coalescer")
        try:
            return await future
        except asyncio.CancelledError:
            answered = future.done() and not future.cancelled() and future.exception() is None
            if answered and self._abandoned is not None:
                self._abandoned(key, future.result())
            raise

    async def _drain(self) -> None:
        while self._queued:
            await asyncio.sleep(self._window)
            size = self._max_batch
            if self._room is not None:
                size = max(1, min(size, await self._room()))
            batch: Batch[K, T] = {}
            for key in list(self._queued)[:size]:
                waiting = [f for f in self._queued.pop(key) if not f.done()]  # not cancelled
                if waiting:
                    batch[key] = waiting
            if not batch:
                continue
            self.batches += 1
            try:
                await self._handle(batch)
            except asyncio.CancelledError:
                for waiting in batch.values():
                    for future in waiting:
                        future.cancel()
                raise
            except Exception as error:  # every caller hears about it and may try again
                _fail(batch, error)
            else:
                _fail(batch, RuntimeError("the batch left this key unanswered"))


def _fail(batch: Batch[K, T], error: BaseException) -> None:
    for waiting in batch.values():
        for future in waiting:
            if not future.done():
                future.set_exception(error)
