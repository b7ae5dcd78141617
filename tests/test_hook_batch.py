"""Hooks in batches: many at once cost a few reads and claims, and each run is announced once.

Also how the announcement links artifacts: from Argo's record, with no S3 request, and only
under the run's own prefixes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from bot.coalescer import Batch, Coalescer
from tests.conftest import Bot
from tests.test_exit_hook import announcements, start_runs
from tests.test_metrics import scrape, value


def statements_like(bot: Bot, wanted: Callable[[str], bool]) -> list[str]:
    """Every statement the store sends from now on that `wanted` picks."""
    seen: list[str] = []

    def record(statement: str) -> None:
        if wanted(statement):
            seen.append(statement)

    bot.services.store.database.statement_listeners.append(record)
    return seen


def count_claim_statements(bot: Bot) -> list[str]:
    """Every claim UPDATE the store sends from now on (the single and the batched kind)."""
    return statements_like(
        bot, lambda sql: sql.startswith("UPDATE runs SET claim_owner") and "claim_until <" in sql
    )


async def test_fifty_hooks_at_once_are_announced_once_each_from_a_few_batched_reads(
    bot: Bot,
) -> None:
    bot.argo.auto_run = False
    names = await start_runs(bot, 50)
    for name in names:
        await bot.argo.complete(name, "Succeeded", run_hook=False)
    bot.argo.requests.clear()
    claims = count_claim_statements(bot)
    lookups = statements_like(bot, lambda sql: sql.startswith("SELECT name, namespace FROM runs"))
    # A slow Argo holds the first batch's read, so the hooks behind it gather in the next.
    bot.argo.latency = 0.3

    responses = await asyncio.gather(*(bot.hook(name) for name in names for _ in range(2)))
    await bot.wait_idle()

    assert {response.status for response in responses} == {202}
    posted = announcements(bot)
    assert len(posted) == 50
    assert len({call.args["thread_ts"] for call in posted}) == 50
    lists = [r for r in bot.argo.requests if r.path == "/api/v1/workflows/argo"]
    selectors = [r.query["listOptions.labelSelector"] for r in lists]
    assert all(selector.startswith("argo-chatops/run in (") for selector in selectors)
    assert 1 <= len(lists) <= 4, selectors
    assert [r for r in bot.argo.requests if r.path.startswith("/api/v1/workflows/argo/")] == []
    assert 1 <= len(claims) <= 4
    # The hooks' own check (is this run ours?) is batched too: far fewer than 100 queries.
    assert 1 <= len(lookups) <= 10, len(lookups)
    for name in names:
        run = await bot.services.store.get_run(name)
        assert run is not None and run.announced_at is not None


async def test_a_workflow_without_the_run_label_is_read_on_its_own(bot: Bot) -> None:
    # Submitted before the bot labelled its workflows with their names.
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    del bot.argo.workflows[name]["metadata"]["labels"]["argo-chatops/run"]
    await bot.argo.complete(name, "Succeeded", run_hook=False)
    bot.argo.requests.clear()

    assert (await bot.hook(name)).status == 202
    await bot.wait_idle()

    assert len(announcements(bot)) == 1
    gets = [r for r in bot.argo.requests if r.path == f"/api/v1/workflows/argo/{name}"]
    assert len(gets) == 1


async def test_artifacts_are_linked_from_argos_record_only_under_the_runs_prefix(
    bot: Bot,
) -> None:
    bot.argo.auto_run = False
    first, other = await start_runs(bot, 2)
    files = {"out.txt": b"hello", "gone.txt": b"collected before the announcement"}
    await bot.argo.complete(first, "Succeeded", artifacts={"report": files}, run_hook=False)
    await bot.argo.complete(other, "Succeeded", artifacts={"report": {"secret.txt": b"x"}})
    await bot.wait_idle()
    # An output Argo's artifact GC has deleted, and an output that names another run's
    # object (which exists): neither may get a link.
    foreign = f"sessions/{other}/report/secret.txt"
    nodes = bot.argo.workflows[first]["status"]["nodes"]
    step = next(node for node in nodes.values() if node.get("outputs", {}).get("artifacts"))
    for artifact in step["outputs"]["artifacts"]:
        if artifact["s3"]["key"].endswith("/gone.txt"):
            artifact["deleted"] = True
    step["outputs"]["artifacts"].append({"name": "secret", "s3": {"key": foreign}})
    before = await scrape(bot)

    assert (await bot.hook(first)).status == 202
    await bot.wait_idle()

    [announcement] = [c for c in announcements(bot) if first in c.args["text"]]
    rendered = json.dumps(announcement.args["blocks"], ensure_ascii=False)
    assert f"sessions/{first}/report/out.txt" in rendered  # in its presigned link
    assert "|out.txt> (report · " in rendered
    assert "`gone.txt` — deleted by artifact GC" in rendered
    assert "`secret.txt` — no link" in rendered and foreign not in rendered
    assert rendered.count("X-Amz-Signature") == 1

    # Argo's record is enough: announcing makes no S3 request at all (signing is local).
    after = await scrape(bot)
    name = "argo_chatops_client_request_seconds_count"
    s3_requests = {
        operation: value(after, name, service="s3", operation=operation)
        - value(before, name, service="s3", operation=operation)
        for operation in ("ListObjectsV2", "HeadObject", "GetObject")
    }
    assert s3_requests == {"ListObjectsV2": 0, "HeadObject": 0, "GetObject": 0}


async def test_a_batch_that_fails_reaches_every_waiter_and_the_next_batch_runs() -> None:
    seen: list[list[str]] = []

    async def check(batch: Batch[str, str]) -> None:
        seen.append(list(batch))
        if "bad" in batch:
            raise RuntimeError("the database went away")
        for name, waiting in batch.items():
            if name != "forgotten":
                waiting[0].set_result(name.upper())

    batcher: Coalescer[str, str] = Coalescer(check, window=0.01, max_batch=3)
    first = await asyncio.gather(
        *(batcher.submit(name) for name in ("a", "bad", "c", "d", "forgotten")),
        return_exceptions=True,
    )
    assert seen == [["a", "bad", "c"], ["d", "forgotten"]]
    assert [type(result).__name__ for result in first] == [
        "RuntimeError",
        "RuntimeError",
        "RuntimeError",
        "str",
        "RuntimeError",
    ]
    assert first[3] == "D"
    assert await batcher.submit("e") == "E"
    assert batcher.batches == 3


async def test_a_batch_takes_no_more_names_than_there_is_room_for() -> None:
    seen: list[list[str]] = []
    room = asyncio.Event()

    async def check(batch: Batch[str, str]) -> None:
        seen.append(list(batch))
        for name, waiting in batch.items():
            waiting[0].set_result(name)

    async def space() -> int:
        await room.wait()
        return 2

    batcher: Coalescer[str, str] = Coalescer(check, window=0.01, max_batch=10, room=space)
    waiting = asyncio.gather(*(batcher.submit(name) for name in "abcde"))
    await asyncio.sleep(0.05)
    assert seen == []  # no room yet
    room.set()
    assert await waiting == list("abcde")
    assert seen == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_result_whose_caller_was_cancelled_meanwhile_is_handed_back() -> None:
    abandoned: list[tuple[str, str]] = []
    callers: list[asyncio.Task[str]] = []

    async def check(batch: Batch[str, str]) -> None:
        for name, waiting in batch.items():
            waiting[0].set_result(f"claim of {name}")
        callers[0].cancel()  # e.g. shutdown, before the caller saw its answer

    def give_back(key: str, result: str) -> None:
        abandoned.append((key, result))

    batcher: Coalescer[str, str] = Coalescer(check, window=0.0, max_batch=10, abandoned=give_back)
    callers.append(asyncio.create_task(batcher.submit("a")))
    second = asyncio.create_task(batcher.submit("b"))
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
    assert await second == "claim of b"
    assert abandoned == [("a", "claim of a")]
