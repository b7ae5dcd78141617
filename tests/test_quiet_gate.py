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


async def test_work_is_called_now_when_quiet_else_in_order_after_the_last_request() -> None:
    gate = QuietGate(quiet_seconds=0.05)
    called: list[tuple[str, float]] = []
    started = time.monotonic()
    gate.call_when_quiet(lambda: called.append(("idle", time.monotonic() - started)))
    assert [name for name, _ in called] == ["idle"]  # no request in flight: no wait

    gate.enter()
    for name in ("first", "second", "third"):
        gate.call_when_quiet(lambda name=name: called.append((name, time.monotonic() - started)))
    await asyncio.sleep(0.2)
    assert len(called) == 1  # a request is still in flight
    gate.leave()
    await asyncio.sleep(0.02)
    assert len(called) == 1  # not quiet for long enough yet
    await asyncio.sleep(0.2)
    assert [name for name, _ in called] == ["idle", "first", "second", "third"]
    assert all(0.2 <= seconds < 1 for _, seconds in called[1:]), called


async def test_deferred_work_shares_the_deadline_and_one_failure_stops_no_other(caplog) -> None:
    gate = QuietGate(quiet_seconds=0.05)
    gate.enter()  # never leaves
    called: list[str] = []

    def broken() -> None:
        raise RuntimeError("could not start")

    gate.call_when_quiet(lambda: called.append("first"), limit=0.3)
    gate.call_when_quiet(broken, limit=5)
    gate.call_when_quiet(lambda: called.append("last"), limit=5)
    await asyncio.sleep(0.2)
    assert called == []
    await asyncio.sleep(0.3)  # the first one's deadline: everything waiting goes
    assert called == ["first", "last"]
    assert "failed to start" in caplog.text


async def test_release_calls_deferred_work_now() -> None:
    gate = QuietGate(quiet_seconds=0.05)
    gate.enter()
    called: list[str] = []
    gate.call_when_quiet(lambda: called.append("deferred"), limit=5)
    gate.release()
    assert called == ["deferred"]
