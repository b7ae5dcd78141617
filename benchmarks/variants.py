"""`argo-chatops serve` with proposed changes applied, to measure them before anyone edits bot/.

    BENCH_VARIANTS=name,name python -m benchmarks.variants serve

Each variant is a small patch of one function outside benchmarks/, applied in this process
only, named after what it changes; BENCHMARKS.md quotes the figures with and without it and
the change to make for real. With no BENCH_VARIANTS this is exactly `argo-chatops serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

VARIANTS: dict[str, Callable[[], None]] = {}


def variant(function: Callable[[], None]) -> Callable[[], None]:
    VARIANTS[function.__name__] = function
    return function


class QuietGate:
    """Set while no Slack request is being handled (and none was for `quiet` seconds)."""

    def __init__(self, quiet: float = 0.02) -> None:
        self._quiet = quiet
        self._in_flight = 0
        self._event: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            self._event.set()
        return self._event

    def enter(self) -> None:
        self._in_flight += 1
        self.event.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._timer = asyncio.get_running_loop().call_later(self._quiet, self.event.set)

    async def wait(self, limit: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=limit)


@variant
def quiet_starts() -> None:
    """Start work waits (up to 1 s) until no Slack request is in flight: acks go first.

    For real: bot/app.py `slack_events` counts requests in flight on a gate kept by the
    Services; handlers/commands.py `CommandHandler._start` (and the other listeners' spawned
    work) begins with `await gate.wait(limit=1.0)`.
    """
    from bot import app
    from handlers.commands import CommandHandler

    gate = QuietGate()
    handle = app.slack_events

    async def slack_events(request: web.Request) -> web.StreamResponse:
        gate.enter()
        try:
            return await handle(request)
        finally:
            gate.leave()

    start = CommandHandler._start

    async def _start(self: CommandHandler, *args: Any, **kwargs: Any) -> None:
        await gate.wait(limit=1.0)
        await start(self, *args, **kwargs)

    app.slack_events = slack_events  # type: ignore[assignment]
    CommandHandler._start = _start  # type: ignore[method-assign]


@variant
def big_backlog() -> None:
    """`web.run_app(..., backlog=2048)` in bot/cli.py (aiohttp's default is 128).

    A burst of new connections that arrives while the loop is busy overflows a 128-entry
    accept queue; the kernel drops the SYNs and each client retries one second later.
    gunicorn and uvicorn default to 2048 (capped by net.core.somaxconn).
    """
    from bot import cli

    run_app = cli.web.run_app

    def with_backlog(*args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", 2048)
        run_app(*args, **kwargs)

    cli.web.run_app = with_backlog  # type: ignore[assignment]


@variant
def no_access_log() -> None:
    """`web.run_app(..., access_log=None)` in bot/cli.py: no AccessLogger per connection."""
    from bot import cli

    run_app = cli.web.run_app

    def without_access_log(*args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("access_log", None)
        run_app(*args, **kwargs)

    cli.web.run_app = without_access_log  # type: ignore[assignment]


@variant
def sqlite_one_connection() -> None:
    """SQLite through one pooled connection (one aiosqlite thread) instead of up to 15.

    For real: bot/store.py `Store.from_url`, SQLite branch: `create_async_engine(async_url,
    pool_size=1, max_overflow=0, pool_timeout=60, connect_args={"timeout": 30})`. SQLite
    runs one writer at a time anyway; more connections only add threads that fight the event
    loop for the GIL and writers that sleep in SQLite's busy handler.
    """
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot import store

    from_url = store.Store.from_url.__func__  # type: ignore[attr-defined]

    def one_connection(cls: type[store.Store], url: str) -> store.Store:
        async_url = store.async_database_url(url)
        if not async_url.startswith("sqlite"):
            return from_url(cls, url)  # type: ignore[no-any-return]
        engine = create_async_engine(
            async_url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30},
        )
        sa.event.listen(engine.sync_engine, "connect", store._sqlite_pragmas)
        return cls(engine)

    store.Store.from_url = classmethod(one_connection)  # type: ignore[assignment]


@variant
def no_request_tag() -> None:
    """Without bot/logging_setup.py's Bolt middleware `tag_request` (measures what it costs).

    A Bolt custom middleware costs one more `build_async_required_kwargs` per request (a dict
    of ~30 entries, several of them objects built on the spot). For real, the same tag can be
    bound in bot/app.py `slack_events` from the raw body before `bolt.async_dispatch`, or in
    the listeners themselves.
    """
    from bot import logging_setup

    logging_setup.register = lambda bolt: None  # type: ignore[assignment]


@variant
def announce_limit() -> None:
    """At most 32 announcements at once (first come, first served), instead of one per hook.

    For real: bot/runs.py `RunService.__init__` creates `asyncio.Semaphore(32)` and
    `RunService.finish` holds it from `get_run` to the end of `_announce`. A thousand
    hooks at once otherwise advance a thousand announcements in lockstep: each waits for
    the same pools (15 SQLite connections, 10 S3 connections, 100 HTTP connections) and all
    of them finish near the end, so even the first hook's run is announced last.
    """
    from bot.runs import RunService

    finish = RunService.finish
    limits: dict[int, asyncio.Semaphore] = {}

    async def limited(self: RunService, name: str) -> Any:
        limit = limits.setdefault(id(self), asyncio.Semaphore(32))
        async with limit:
            return await finish(self, name)

    RunService.finish = limited  # type: ignore[method-assign]


@variant
def list_sizes() -> None:
    """Artifact sizes from one ListObjectsV2 per run prefix instead of one HEAD per artifact.

    For real: bot/runs.py `RunService._linked_artifacts` lists `sessions/<name>/` (and
    `<name>/` when an artifact is there) in the artifact bucket once, takes each key's size
    from the listing (absent: no link, as a 404 HEAD does today), and presigns as before;
    bot/storage.py gains `S3Storage.object_sizes(prefix, bucket) -> dict[str, int]`
    (paginated). A run with N artifacts costs 1 S3 request instead of N; artifacts in
    another bucket keep the HEAD.
    """
    from bot.runs import RunService

    link = RunService._link

    async def _linked_artifacts(self: RunService, name: str, found: tuple[Any, ...]) -> list:
        storage = self._storage
        sizes: dict[str, int] = {}
        for prefix in (f"sessions/{name}/", f"{name}/"):
            if not any(
                a.key.startswith(prefix) and (a.bucket or storage.bucket) == storage.bucket
                for a in found
            ):
                continue
            token: dict[str, str] = {}
            while True:
                page = await storage.client.list_objects_v2(
                    Bucket=storage.bucket, Prefix=prefix, **token
                )
                sizes.update({item["Key"]: int(item["Size"]) for item in page.get("Contents", [])})
                if not page.get("IsTruncated"):
                    break
                token = {"ContinuationToken": page["NextContinuationToken"]}

        async def one(artifact: Any) -> Any:
            bucket = artifact.bucket or storage.bucket
            own = artifact.key.startswith((f"sessions/{name}/", f"{name}/"))
            if bucket != storage.bucket or not own:
                return await link(self, name, artifact)
            artifact = artifact.model_copy(update={"bucket": bucket})
            if artifact.key not in sizes:
                return artifact
            url = await storage.presigned_get_url(
                artifact.key, self._settings.presign_expiry_seconds, bucket
            )
            return artifact.model_copy(update={"size": sizes[artifact.key], "url": url})

        return list(await asyncio.gather(*(one(a) for a in found)))

    RunService._linked_artifacts = _linked_artifacts  # type: ignore[method-assign]


@variant
def light_hook_lookup() -> None:
    """The hook handler checks the run with one narrow query instead of a full `get_run`.

    For real: bot/store.py gains `Store.run_namespace(name) -> str | None` (SELECT namespace
    FROM runs WHERE name = ?) and handlers/hooks.py uses it through `RunService.known_run`;
    `finish` reads the whole run once, as today. Saves two queries (runs + run_inputs) and
    a pydantic Run per hook.
    """
    import sqlalchemy as sa

    from bot.runs import RunService
    from bot.store import runs

    class _Known:
        def __init__(self, namespace: str) -> None:
            self.namespace = namespace

    async def known_run(self: RunService, name: str) -> Any:
        async with self._store._engine.connect() as connection:
            namespace = (
                await connection.execute(sa.select(runs.c.namespace).where(runs.c.name == name))
            ).scalar()
        return None if namespace is None else _Known(namespace)

    RunService.known_run = known_run  # type: ignore[method-assign]


def apply(names: str) -> None:
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
        VARIANTS[name]()


if __name__ == "__main__":
    apply(os.environ.get("BENCH_VARIANTS", ""))
    from bot.cli import main

    raise SystemExit(main(sys.argv[1:]))
