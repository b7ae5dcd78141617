"""Requests written down before Slack hears "got it", so nothing acknowledged is lost.

A slash command or a file drop is recorded (a `run_requests` row) before the bot answers
Slack. The row is marked done in the same transaction that records the run it became
(`Store.add_run`), or when it ends without a run (refused, answered, handed to a form). If
the replica dies in between, the row's lease runs out and the poll cycle of any replica
starts the request again; a request is linked to at most one run because the link is
conditional on the claim of the attempt that makes it.

Requests arriving together share one transaction: while one write is in flight, the
next ones queue and go in the following write, so a burst of commands costs a few commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bot.messages import code
from bot.slack import SlackError, SlackMessenger
from bot.store import RequestClaim, Store, StoredRequest
from bot.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

# How long a replica may work on a request before another one may take it over.
REQUEST_LEASE_SECONDS = 60.0
# Attempts before a request is given up and its author told so.
MAX_ATTEMPTS = 3
# Requests written per transaction, and taken over per poll cycle.
WRITE_BATCH = 500
RESUME_BATCH = 20

NOT_RECORDED = (
    "I cannot take runs right now: my database is not answering. Nothing was started; "
    "please try again in a minute."
)

Resume = Callable[[StoredRequest], Awaitable[None]]


class RequestJournal:
    def __init__(
        self,
        *,
        store: Store,
        slack: SlackMessenger,
        tasks: BackgroundTasks,
        instance_id: str,
        lease_seconds: float = REQUEST_LEASE_SECONDS,
    ) -> None:
        self._store = store
        self._slack = slack
        self._tasks = tasks
        self._instance_id = instance_id
        self.lease_seconds = lease_seconds
        self._queue: list[tuple[StoredRequest, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._resumers: dict[str, Resume] = {}

    def on_resume(self, kind: str, resume: Resume) -> None:
        """Who starts a request of this kind again after its replica died."""
        self._resumers[kind] = resume

    async def record(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        user_id: str,
        channel_id: str,
        request_id: str | None = None,
    ) -> StoredRequest | None:
        """Write the request down; None when this id was recorded before (a redelivery).

        Raises what the database raises when it cannot be written: the caller must then
        tell the person nothing was started.
        """
        request = StoredRequest(
            id=request_id or f"{kind}:{uuid.uuid4().hex}",
            claim=f"{self._instance_id}:1",
            kind=kind,
            payload=payload,
            user_id=user_id,
            channel_id=channel_id,
            lease_seconds=self.lease_seconds,
        )
        written = asyncio.get_running_loop().create_future()
        self._queue.append((request, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="request-journal")
        return request if await written else None

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:WRITE_BATCH], self._queue[WRITE_BATCH:]
            try:
                new = await self._store.add_requests([request for request, _ in batch])
            except Exception as error:  # every waiter hears it; the writer keeps going
                for _, written in batch:
                    if not written.done():
                        written.set_exception(error)
                continue
            for request, written in batch:
                if not written.done():
                    written.set_result(request.id in new)

    async def finish(self, request: RequestClaim | None, state: str = "done") -> None:
        """The request ended without a run; a failure here only means it is looked at again."""
        if request is None:
            return
        try:
            await self._store.finish_request(request, state)
        except Exception:
            logger.warning("could not close request %s", request.id, exc_info=True)

    async def resume_stale(self) -> int:
        """Start again the requests whose replica died (their lease ran out); how many."""
        resumed = 0
        for request in await self._store.claim_stale_requests(
            self._instance_id, self.lease_seconds, limit=RESUME_BATCH
        ):
            resume = self._resumers.get(request.kind)
            if resume is None or request.attempts > MAX_ATTEMPTS:
                await self._store.finish_request(request, "failed")
                await self._give_up(request)
                continue
            logger.info("resuming request %s (attempt %d)", request.id, request.attempts)
            if self._tasks.spawn(resume(request), name=f"resume:{request.id}") is not None:
                resumed += 1
        return resumed

    async def _give_up(self, request: StoredRequest) -> None:
        template = request.payload.get("template")
        what = f"your run of {code(template)}" if template else "your request"
        text = (
            f":warning: I could not start {what} after {request.attempts - 1} tries; "
            "nothing was started. Please try again."
        )
        logger.warning("gave up on request %s", request.id)
        try:
            await self._slack.tell_user(
                user_id=request.user_id,
                channel_id=request.channel_id,
                text=text,
                response_url=request.payload.get("response_url"),
            )
        except SlackError:
            logger.warning("could not tell %s about request %s", request.user_id, request.id)
