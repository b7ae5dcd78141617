"""`argo-chatops serve` with proposed changes applied, to measure them before anyone edits bot/.

    BENCH_VARIANTS=name,name python -m benchmarks.variants serve

Each variant is a small patch of one function outside benchmarks/, applied in this process
only, named after what it changes; BENCHMARKS.md quotes the figures with and without it and
the change to make for real. With no BENCH_VARIANTS this is exactly `argo-chatops serve`.
The variants measured in BENCHMARKS.md's first rounds (big_backlog, quiet_starts,
no_request_tag, announce_limit, sqlite_one_connection, list_sizes, light_hook_lookup) are
now part of the service and were removed from here.
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


def apply(names: str) -> None:
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(sorted(VARIANTS))}")
        VARIANTS[name]()


if __name__ == "__main__":
    apply(os.environ.get("BENCH_VARIANTS", ""))
    from bot.cli import main

    raise SystemExit(main(sys.argv[1:]))
