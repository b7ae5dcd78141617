"""SIGTERM: not-ready while draining, no new background work, work in flight finishes."""

from __future__ import annotations

import asyncio

from tests.conftest import Bot
from tests.test_exit_hook import announcements, start_runs


async def test_draining_reports_not_ready_and_takes_no_new_work(bot: Bot) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.argo.complete(name, "Succeeded", run_hook=False)

    await bot.server.app.on_shutdown.send(bot.server.app)  # what aiohttp does on SIGTERM

    async with bot.http.get(f"{bot.url}readyz") as response:
        assert response.status == 503
        assert (await response.json())["status"] == "draining"
    async with bot.http.get(f"{bot.url}healthz") as response:
        assert response.status == 200
    # A hook still gets its answer, but the announcement is left to a replica that is not
    # shutting down (its poller), instead of starting work this one may not finish.
    assert (await bot.hook(name)).status == 202
    await bot.wait_idle()
    assert announcements(bot) == []
    run = await bot.services.store.get_run(name)
    assert run is not None and run.announced_at is None


async def test_work_in_flight_finishes_during_shutdown(bot_factory) -> None:
    bot: Bot = await bot_factory()
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.argo.complete(name, "Succeeded", run_hook=False)
    assert (await bot.hook(name)).status == 202
    # Stop at once: the follow-up that is already running completes before the clients close.
    await bot.server.close()
    assert len(announcements(bot)) == 1


async def test_a_command_acked_just_before_shutdown_still_starts_its_run(bot: Bot) -> None:
    # A busy spell: the command's start waits for a quiet moment that SIGTERM comes before.
    bot.services.slack_traffic.enter()
    response = await bot.command("run csv-summary rows=3")
    assert response.status == 200 and "Starting" in response.text
    await asyncio.sleep(0.1)
    assert bot.argo.created == []

    await bot.server.app.on_shutdown.send(bot.server.app)  # what aiohttp does on SIGTERM
    await bot.wait_idle()
    assert len(bot.argo.created) == 1  # started while draining, not left to the request's lease
    bot.services.slack_traffic.leave()
