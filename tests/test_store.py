"""The store on both backends: the announcement claim is atomic and leased."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.database import DatabaseUrl, SqliteDatabase, redact_url, sqlite_statement
from bot.models import Phase, Run, RunState
from bot.store import Store, StoredRequest


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        store = Store.from_url(url)
        await store.migrate()
        yield store
        await store.close()
    else:
        url = request.getfixturevalue("postgres_url")
        store = Store.from_url(url)
        await store.migrate()
        yield store
        await store.close()


def a_run(name: str, minutes_ago: int = 0) -> Run:
    return Run(
        name=name,
        namespace="argo",
        template="csv-summary",
        parameters={"rows": "5"},
        user_id="U1",
        channel_id="C1",
        thread_ts="1700000000.000100",
        created_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


def test_database_urls_name_a_sqlite_file_or_a_postgresql_server() -> None:
    assert DatabaseUrl.parse("sqlite:///state.db").path == "state.db"
    assert DatabaseUrl.parse("sqlite+aiosqlite:////abs/state.db").path == "/abs/state.db"
    assert DatabaseUrl.parse("sqlite://").in_memory
    assert DatabaseUrl.parse("sqlite:///:memory:").in_memory
    url = DatabaseUrl.parse("postgresql+asyncpg://u:p%40ss@db:5432/chatops?sslmode=require")
    assert (url.backend, url.password) == ("postgresql", "p@ss")
    assert url.dsn == "postgresql://u:p%40ss@db:5432/chatops?sslmode=require"
    assert DatabaseUrl.parse("postgres://db/chatops").backend == "postgresql"
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        DatabaseUrl.parse("mysql://db/chatops")


def test_database_urls_are_shown_without_their_password() -> None:
    shown = redact_url("postgresql://chatops:s3cret@db:5432/chatops")
    assert shown == "postgresql://chatops:***@db:5432/chatops"
    assert redact_url("sqlite:///state.db") == "sqlite:///state.db"
    assert redact_url("postgresql://chatops@db/chatops") == "postgresql://chatops@db/chatops"


async def test_migrate_twice_is_harmless(store: Store) -> None:
    await store.migrate()
    await store.add_run(a_run("r-1"))
    await store.migrate()
    assert await store.get_run("r-1") is not None


async def test_run_round_trips(store: Store) -> None:
    await store.add_run(a_run("r-1"))
    run = await store.get_run("r-1")
    assert run is not None
    assert (run.template, run.parameters, run.thread_ts) == (
        "csv-summary",
        {"rows": "5"},
        "1700000000.000100",
    )
    assert run.state is RunState.SUBMITTING


async def test_only_one_of_many_concurrent_claims_wins(store: Store) -> None:
    await store.add_run(a_run("r-1"))
    await store.set_state("r-1", RunState.RUNNING)
    results = await asyncio.gather(
        *(store.claim_announcements(["r-1"], f"replica-{i}", 60) for i in range(20))
    )
    assert results.count({"r-1"}) == 1
    assert results.count(set()) == 19


async def test_an_expired_claim_can_be_taken_over(store: Store) -> None:
    await store.add_run(a_run("r-1"))
    await store.set_state("r-1", RunState.RUNNING)
    assert await store.claim_announcements(["r-1"], "dead-replica", -1)  # already expired
    assert await store.claim_announcements(["r-1"], "live-replica", 60)
    assert not await store.mark_announced("r-1", "dead-replica", Phase.SUCCEEDED, None)
    assert await store.mark_announced("r-1", "live-replica", Phase.SUCCEEDED, None)
    assert not await store.claim_announcements(["r-1"], "another", 60)


async def test_released_claim_is_claimable_again(store: Store) -> None:
    await store.add_run(a_run("r-1"))
    await store.set_state("r-1", RunState.RUNNING)
    assert await store.claim_announcements(["r-1"], "a", 60)
    await store.release_claim("r-1", "a")
    assert await store.claim_announcements(["r-1"], "b", 60)


async def test_waiting_runs_are_found_in_one_query(store: Store) -> None:
    for index in range(3):
        await store.add_run(a_run(f"r-{index}", minutes_ago=index))
        await store.set_state(f"r-{index}", RunState.RUNNING)
    await store.add_run(a_run("never-submitted", minutes_ago=30))
    await store.add_run(a_run("announced"))
    await store.set_state("announced", RunState.ANNOUNCED)
    waiting = await store.waiting_runs()
    assert set(waiting) == {"r-0", "r-1", "r-2"}
    assert datetime.now(UTC) - min(waiting.values()) > timedelta(minutes=1, seconds=50)


async def test_slack_events_are_remembered_once(store: Store) -> None:
    assert await store.remember_event("Ev1")
    assert not await store.remember_event("Ev1")
    assert await store.remember_event("Ev2")


def a_request(request_id: str) -> StoredRequest:
    return StoredRequest(
        id=request_id,
        claim="replica-a:1",
        kind="command",
        payload={"template": "csv-summary"},
        user_id="U1",
        channel_id="C1",
    )


async def test_request_batches_tell_new_requests_from_redeliveries(store: Store) -> None:
    assert await store.add_requests([a_request(f"r{n}") for n in range(300)]) == {
        f"r{n}" for n in range(300)
    }
    # Redelivered requests (some twice in one batch) beside new ones: only the new are new,
    # and a redelivery changes nothing that was recorded.
    changed = dataclasses.replace(a_request("r7"), payload={"template": "other"})
    again = [changed, a_request("n1"), a_request("r299"), a_request("n1")]
    assert await store.add_requests(again) == {"n1"}
    async with store.database.connection() as connection:
        rows = await connection.fetch("SELECT id, payload FROM run_requests")
    assert len(rows) == 301
    assert {row["id"]: row["payload"] for row in rows}["r7"] == '{"template": "csv-summary"}'


async def test_in_memory_sqlite_request_batches_tell_new_from_redeliveries() -> None:
    store = Store.from_url("sqlite://")
    await store.migrate()
    try:
        assert await store.add_requests([a_request("r1"), a_request("r2")]) == {"r1", "r2"}
        assert await store.add_requests([a_request("r2"), a_request("r3")]) == {"r3"}
    finally:
        await store.close()


async def test_sqlite_request_batches_are_written_on_the_loop_unless_the_file_is_locked(
    tmp_path,
) -> None:
    path = tmp_path / "state.db"
    store = Store.from_url(f"sqlite:///{path}")
    await store.migrate()
    try:
        assert await store.add_requests([a_request("r1"), a_request("r2")]) == {"r1", "r2"}
        database = store.database
        assert isinstance(database, SqliteDatabase)
        assert database.writes_waited == 0  # no lock held: written in place

        # Another connection holds the write lock: the batch must neither fail nor stall the
        # event loop; it waits on its own thread and lands once the lock is free.
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        batch = asyncio.create_task(store.add_requests([a_request("r3"), a_request("r1")]))
        started = time.monotonic()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 5  # the loop ran on (a blocked one: 30 s)
        assert not batch.done()
        locker.execute("COMMIT")
        locker.close()
        assert await asyncio.wait_for(batch, 10) == {"r3"}  # r1 was recorded before
        assert database.writes_waited == 1
    finally:
        await store.close()


def test_sqlite_takes_each_numbered_parameter_as_a_question_mark_with_its_argument() -> None:
    in_order = sqlite_statement("UPDATE runs SET state = $1 WHERE name = $2")
    assert in_order.text == "UPDATE runs SET state = ? WHERE name = ?"
    assert in_order.arguments(("done", "r-1")) == ("done", "r-1")
    reused = sqlite_statement("UPDATE leases SET owner = $1 WHERE name = $2 AND (owner = $1)")
    assert reused.text == "UPDATE leases SET owner = ? WHERE name = ? AND (owner = ?)"
    assert reused.arguments(("me", "poll")) == ("me", "poll", "me")
    shuffled = sqlite_statement("SELECT $2, $10, $1")
    assert shuffled.arguments(tuple(range(1, 11))) == (2, 10, 1)
