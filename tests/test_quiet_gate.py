"""QuietGate: work started by Slack requests waits for a quiet moment, at most `limit`."""

from __future__ import annotations

import asyncio
import time

from bot.tasks import QuietGate


async def _waited(gate: QuietGate, limit: float) -> float:
    started = time.monotonic()
    await gate.wait(limit=limit)
    return time.monotonic() - started


async def test_no_wait_when_no_request_is_in_flight() -> None:
    gate = QuietGate(quiet_seconds=0.05)
    assert await _waited(gate, limit=5) < 1


async def test_waiters_go_a_moment_after_the_last_request_leaves() -> None:
    gate = QuietGate(quiet_seconds=0.05)
    gate.enter()
    gate.enter()
    waits = [asyncio.create_task(_waited(gate, limit=5)) for _ in range(100)]
    await asyncio.sleep(0.1)
    gate.leave()
    await asyncio.sleep(0.1)
    assert not any(wait.done() for wait in waits)  # one request is still in flight
    gate.leave()
    waited = await asyncio.gather(*waits)
    assert all(0.2 <= seconds < 2 for seconds in waited), waited  # not the 5 s deadline


async def test_a_busy_spell_releases_everyone_at_one_deadline() -> None:
    gate = QuietGate(quiet_seconds=0.05)
    gate.enter()  # never leaves
    first = asyncio.create_task(_waited(gate, limit=1.0))
    await asyncio.sleep(0.5)
    later = asyncio.create_task(_waited(gate, limit=1.0))
    assert 0.95 <= await asyncio.wait_for(first, 5) < 3
    assert 0.4 <= await later < 0.9  # the first waiter's deadline, not a timer of its own


async def test_an_old_deadline_does_not_cut_a_later_spell_short() -> None:
    gate = QuietGate(quiet_seconds=0.02)
    gate.enter()
    first = asyncio.create_task(_waited(gate, limit=0.3))
    await asyncio.sleep(0.05)
    gate.leave()
    assert await first < 0.2  # the quiet moment came before the deadline
    await asyncio.sleep(0.05)
    gate.enter()  # a new spell, 0.1 s after the old deadline was set
    second = asyncio.create_task(_waited(gate, limit=1.0))
    await asyncio.sleep(0.4)  # past where the first spell's deadline would have fired
    assert not second.done()
    gate.leave()
    assert 0.4 <= await second < 0.95  # released by the quiet moment, not its own deadline
