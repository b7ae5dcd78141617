"""Faults in Slack, Argo, S3 and the database: every run still announced exactly once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from bot.models import RunState
from tests.conftest import Bot
from tests.test_exit_hook import announcements, start_runs


async def finished_runs(bot: Bot, count: int) -> list[str]:
    """`count` runs that Argo completed while their hooks were lost."""
    bot.argo.auto_run = False
    names = await start_runs(bot, count)
    for name in names:
        await bot.argo.complete(name, "Succeeded", run_hook=False)
    return names


async def test_slack_rate_limit_on_the_announcement_is_honoured(bot: Bot) -> None:
    [name] = await finished_runs(bot, 1)
    bot.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    await bot.hook(name)
    await bot.wait_idle()
    assert len(announcements(bot)) == 1
    limited = [c for c in bot.slack.calls_to("chat.postMessage") if c.status == 429]
    assert len(limited) == 1


async def test_slack_5xx_beyond_the_client_retries_is_retried_by_the_service(bot: Bot) -> None:
    [name] = await finished_runs(bot, 1)
    bot.slack.fail_next("chat.postMessage", status=500, times=4)
    await bot.hook(name)
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


async def test_an_announcement_that_keeps_failing_is_left_for_the_poller(bot: Bot) -> None:
    bot.services.runs.recheck_delays = (0.0, 0.1, 0.2)
    [name] = await finished_runs(bot, 1)
    bot.slack.error_next("chat.postMessage", "internal_error", times=50)
    await bot.hook(name)
    await bot.wait_idle()
    assert announcements(bot) == []
    run = await bot.services.store.get_run(name)
    assert run is not None and run.state is RunState.RUNNING  # still pending, not dropped

    bot.slack.clear_faults()
    report = await bot.services.runs.poll_once()
    assert report.announced == 1
    assert len(announcements(bot)) == 1


async def test_argo_5xx_while_reading_the_workflow_is_retried(bot: Bot) -> None:
    [name] = await finished_runs(bot, 1)
    # The hook's batch read (a list call) and a single read (GET) alike.
    bot.argo.fail_next("GET", rf"/api/v1/workflows/argo(/{name})?$", status=500, times=4)
    await bot.hook(name)
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


async def test_argo_timeouts_are_bounded_and_retried(bot_factory: Any) -> None:
    bot: Bot = await bot_factory(argo_timeout_seconds=0.3)
    [name] = await finished_runs(bot, 1)
    bot.argo.latency = 1.0
    await bot.hook(name)
    # While Argo hangs, every read times out; once it answers again the run is announced.
    await asyncio.sleep(1.5)
    assert announcements(bot) == []
    bot.argo.latency = 0
    await bot.slack.wait_for(lambda: len(announcements(bot)) == 1, timeout=20)
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


async def test_s3_down_still_announces_with_links(bot_factory: Any) -> None:
    bot: Bot = await bot_factory(s3_endpoint_url="http://127.0.0.1:9")
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.argo.complete(
        name, "Succeeded", artifacts={"report": {"out.txt": b"hello"}}, run_hook=False
    )
    await bot.hook(name)
    await bot.wait_idle()
    [announcement] = announcements(bot)
    rendered = json.dumps(announcement.args["blocks"])
    assert "|out.txt> (report" in rendered  # linked, with no size (nothing asked of S3)
    assert "X-Amz-Signature" in rendered


async def test_database_connections_dropped_mid_flight_are_replaced(bot: Bot) -> None:
    names = await finished_runs(bot, 3)
    await _drop_database_connections(bot)
    for name in names:
        assert (await bot.hook(name)).status == 202
    await bot.wait_idle()
    assert len(announcements(bot)) == 3


async def _drop_database_connections(bot: Bot) -> None:
    """What a database restart looks like to the service: every pooled connection dies (the
    server is back once the killed backends are gone, as after a restart)."""
    url = bot.settings.database_url
    if not url.startswith("postgresql"):
        await bot.services.store.database.close()  # reopened at the next statement
        return
    database = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(url)
    try:
        pids = [
            row["pid"]
            for row in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        ]
        killed = await admin.fetchval(
            "SELECT count(*) FROM unnest($1::int[]) AS pid WHERE pg_terminate_backend(pid)", pids
        )
        for _ in range(100):
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])"
            if not await admin.fetchval(alive, pids):
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    assert killed
