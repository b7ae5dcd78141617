"""`argo-chatops serve` with proposed changes applied, to measure them before anyone edits bot/.

    BENCH_VARIANTS=name,name python -m benchmarks.variants serve

Each variant is a small patch of one function outside benchmarks/, applied in this process
only, named after what it changes; BENCHMARKS.md quotes the figures with and without it and
the change to make for real. With no BENCH_VARIANTS this is exactly `argo-chatops serve`.
The variants measured in BENCHMARKS.md's first rounds (big_backlog, quiet_starts,
no_request_tag, announce_limit, sqlite_one_connection, list_sizes, light_hook_lookup),
round 3's (uvloop, no_sizes, gc_freeze) and round 4's (direct_slack) are now part of the
service and were removed from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

VARIANTS: dict[str, Callable[[], None]] = {}


def variant(function: Callable[[], None]) -> Callable[[], None]:
    VARIANTS[function.__name__] = function
    return function


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
def no_request_journal() -> None:
    """Requests are not written down before the ack (measures what the journal costs there)."""
    from bot.journal import RequestJournal
    from bot.store import StoredRequest

    async def record(self: RequestJournal, kind: str, payload: Any, **who: Any) -> StoredRequest:
        return StoredRequest(
            id="unrecorded",
            claim="",
            kind=kind,
            payload=payload,
            user_id=who["user_id"],
            channel_id=who["channel_id"],
        )

    RequestJournal.record = record  # type: ignore[method-assign]


@variant
def no_root_edits() -> None:
    """Measurement only: thread roots are not edited after an announcement."""
    from bot.runs import RunService

    async def show_final(self: RunService, *args: Any, **kwargs: Any) -> None:
        return None

    RunService._show_final = show_final  # type: ignore[method-assign]


@variant
def no_http_metrics() -> None:
    """Measurement only: the shared aiohttp session has no metrics middleware."""
    import aiohttp

    original = aiohttp.ClientSession.__init__

    def without_metrics(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("middlewares", None)
        original(self, *args, **kwargs)

    aiohttp.ClientSession.__init__ = without_metrics  # type: ignore[method-assign]


@variant
def wide_announce() -> None:
    """Measurement only: 64 announcements at once instead of 32."""
    from bot import runs

    runs.ANNOUNCE_CONCURRENCY = 64


@variant
def short_window() -> None:
    """Measurement only: hook batches gather for 5 ms instead of 20 ms."""
    from bot import runs

    runs.HOOK_BATCH_WINDOW = 0.005


@variant
def switch_1ms() -> None:
    """`sys.setswitchinterval(0.001)`: threads waiting for the GIL get it within 1 ms, not 5."""
    sys.setswitchinterval(0.001)


@variant
def journal_timing() -> None:
    """Measurement only: append each request batch's size and write time to /tmp/journal.txt."""
    import time

    from bot.store import Store

    add_requests = Store.add_requests

    async def timed(self: Store, requests: Any) -> Any:
        started = time.perf_counter()
        try:
            return await add_requests(self, requests)
        finally:
            with open("/tmp/journal.txt", "a") as out:
                waited = getattr(self.database, "writes_waited", "-")
                took = time.perf_counter() - started
                out.write(f"{started:.4f} {len(requests)} {took:.4f} {waited}\n")

    Store.add_requests = timed  # type: ignore[method-assign]


@variant
def ack_only() -> None:
    """Measurement only: the command listener only acks, as the floor's does."""
    from handlers.commands import CommandHandler

    async def on_command(self: CommandHandler, ack: Any, command: Any) -> None:
        await ack(text="ok", response_type="ephemeral")

    CommandHandler.on_command = on_command  # type: ignore[method-assign]


@variant
def floor_endpoint() -> None:
    """Measurement only: /slack/events as the floor's, Bolt straight from aiohttp: no
    signature check at all (the service's Bolt has its own turned off), no traffic count."""
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

    from bot import app as app_module

    async def slack_events(request: Any) -> Any:
        services = request.app[app_module.SERVICES]
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await services.bolt.async_dispatch(bolt_request))

    app_module.slack_events = slack_events


@variant
def no_start() -> None:
    """Measurement only: commands are acked but their runs never started (no task)."""
    from bot.tasks import BackgroundTasks

    spawn = BackgroundTasks.spawn

    def spawn_but_starts(self: BackgroundTasks, coroutine: Any, *, name: str) -> Any:
        if name.startswith("start:"):
            coroutine.close()
            return None
        return spawn(self, coroutine, name=name)

    BackgroundTasks.spawn = spawn_but_starts  # type: ignore[method-assign]


@variant
def part_timing() -> None:
    """Measurement only: append to /tmp/parts.txt when each S3 part's upload started and
    ended, how long the multipart calls took (create, complete) and when every 200th chunk
    of the download arrived (`BENCH_VARIANTS=part_timing python -m benchmarks.file_relay`)."""
    import time

    from bot import uploads
    from bot.storage import S3Storage

    upload_part = S3Storage._upload_part

    async def timed(self: S3Storage, key: str, upload_id: str, number: int, body: Any) -> Any:
        started = time.perf_counter()
        try:
            return await upload_part(self, key, upload_id, number, body)
        finally:
            with open("/tmp/parts.txt", "a") as out:
                out.write(f"part {number} {started:.3f} {time.perf_counter():.3f}\n")

    S3Storage._upload_part = timed  # type: ignore[method-assign]
    download = uploads.InputRelay._download

    async def timed_download(self: Any, file: Any, digest: Any) -> Any:
        count = 0
        started = time.perf_counter()
        async for chunk in download(self, file, digest):
            count += 1
            if count % 200 == 0:
                with open("/tmp/parts.txt", "a") as out:
                    out.write(f"chunks {count} {time.perf_counter() - started:.3f}\n")
            yield chunk

    uploads.InputRelay._download = timed_download  # type: ignore[method-assign]
    open_storage = S3Storage.open

    async def opened(self: S3Storage) -> None:
        await open_storage(self)
        client = self._client
        for name in ("complete_multipart_upload", "create_multipart_upload", "head_object"):
            method = getattr(client, name)

            def wrapper(method: Any = method, name: str = name) -> Any:
                async def timed_call(**kwargs: Any) -> Any:
                    started = time.perf_counter()
                    try:
                        return await method(**kwargs)
                    finally:
                        with open("/tmp/parts.txt", "a") as out:
                            out.write(f"{name} {started:.3f} {time.perf_counter():.3f}\n")

                return timed_call

            setattr(client, name, wrapper())

    S3Storage.open = opened  # type: ignore[method-assign]


@variant
def no_gc() -> None:
    """Measurement only: no garbage collection after start-up (what collections cost a burst)."""
    import gc

    from bot import cli

    freeze = cli._freeze_startup_heap

    async def freeze_then_disable(app: Any) -> None:
        await freeze(app)
        gc.disable()

    cli._freeze_startup_heap = freeze_then_disable  # type: ignore[assignment]


def apply(names: str) -> None:
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
        VARIANTS[name]()


if __name__ == "__main__":
    apply(os.environ.get("BENCH_VARIANTS", ""))
    from bot.cli import main

    raise SystemExit(main(sys.argv[1:]))
