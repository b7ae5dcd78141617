"""Several replicas on one database: no run announced twice, none lost, no work done N times."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from bot.models import RunState
from tests.conftest import Bot
from tests.test_exit_hook import announcements, start_runs


async def test_hooks_spread_and_duplicated_across_two_replicas_announce_each_run_once(
    bot_factory: Any,
) -> None:
    first: Bot = await bot_factory()
    second: Bot = await bot_factory()
    first.argo.auto_run = False
    names = await start_runs(first, 8)
    for name in names:
        await first.argo.complete(name, "Succeeded", run_hook=False)

    # Every run's hook arrives three times, alternating between the replicas, all at once.
    replicas = itertools.cycle([first, second])
    responses = await asyncio.gather(
        *(next(replicas).hook(name) for name in names for _ in range(3))
    )
    assert {response.status for response in responses} == {202}
    await first.wait_idle()
    await second.wait_idle()
    assert len(announcements(first)) == 8
    assert len({call.args["thread_ts"] for call in announcements(first)}) == 8


async def test_only_one_replica_runs_a_poll_cycle_at_a_time(bot_factory: Any) -> None:
    first: Bot = await bot_factory(poll_interval_seconds=30)
    second: Bot = await bot_factory(poll_interval_seconds=30)
    first.argo.auto_run = False
    names = await start_runs(first, 4)
    for name in names:
        await first.argo.complete(name, "Succeeded", run_hook=False)
    first.argo.requests.clear()

    reports = await asyncio.gather(
        first.services.runs.poll_once(), second.services.runs.poll_once()
    )

    assert sorted(report.skipped for report in reports) == [False, True]
    finding = [
        r
        for r in first.argo.requests
        if "workflows.argoproj.io/completed=true" in r.query.get("listOptions.labelSelector", "")
    ]
    assert len(finding) == 1  # the other replica did not list Argo
    assert sum(report.announced for report in reports) == 4
    assert len(announcements(first)) == 4


async def test_a_dead_replicas_poll_lease_is_taken_over(bot_factory: Any) -> None:
    import time

    first: Bot = await bot_factory()
    second: Bot = await bot_factory()
    await first.services.tasks.wait_idle()  # the start-up poll cycle
    await second.services.tasks.wait_idle()
    # The lease now belongs to a replica that was killed a moment ago.
    async with first.services.store.database.transaction() as connection:
        await connection.execute(
            "UPDATE leases SET owner = 'replica-that-died', expires_at = $1"
            " WHERE name = 'poll-cycle'",
            time.time() + 0.3,
        )
    assert (await second.services.runs.poll_once()).skipped
    await asyncio.sleep(0.4)
    assert not (await second.services.runs.poll_once()).skipped
    assert (await first.services.runs.poll_once()).skipped


async def test_a_submission_interrupted_after_create_is_tracked_not_resubmitted(
    bot: Bot,
) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.wait_idle()  # the start is over before the test rewinds it
    store = bot.services.store
    # The replica died right after Argo created the workflow, before it recorded that.
    await store.set_state(name, RunState.SUBMITTING)
    await _age(bot, name, seconds=600)
    await bot.argo.complete(name, "Succeeded", run_hook=False)

    await bot.services.runs.poll_once()
    await bot.wait_idle()

    assert len(bot.argo.created) == 1, "the workflow must not be submitted again"
    assert len(announcements(bot)) == 1
    run = await store.get_run(name)
    assert run is not None and run.state is RunState.ANNOUNCED


async def test_a_submission_interrupted_before_create_is_created_under_its_own_name(
    bot: Bot,
) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.wait_idle()  # the start is over before the test rewinds it
    store = bot.services.store
    first_manifest = bot.argo.created[0]
    # Pretend Argo never got it: forget the workflow, and age the run.
    del bot.argo.workflows[name]
    bot.argo.created.clear()
    await store.set_state(name, RunState.SUBMITTING)
    await _age(bot, name, seconds=600)

    await bot.services.runs.poll_once()
    await bot.services.runs.poll_once()

    # Created once, under the name it was recorded with, with the same manifest.
    assert bot.argo.created == [first_manifest]
    run = await store.get_run(name)
    assert run is not None and run.state is RunState.RUNNING
    await bot.argo.complete(name, "Succeeded")
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


async def test_an_old_submission_interrupted_before_create_is_reported_in_its_thread(
    bot: Bot,
) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.wait_idle()  # the start is over before the test rewinds it
    store = bot.services.store
    del bot.argo.workflows[name]
    await store.set_state(name, RunState.SUBMITTING)
    await _age(bot, name, seconds=2 * 3600)  # too old to start without asking again

    await bot.services.runs.poll_once()
    await bot.services.runs.poll_once()

    run = await store.get_run(name)
    assert run is not None and run.state is RunState.REJECTED
    notes = [
        call
        for call in bot.slack.calls_to("chat.postMessage")
        if call.args.get("thread_ts") and "was not started" in call.args.get("text", "")
    ]
    assert len(notes) == 1
    assert len(bot.argo.created) == 1


async def _age(bot: Bot, name: str, *, seconds: float) -> None:
    """Move a run's creation time into the past (as if it had been waiting that long)."""
    async with bot.services.store.database.transaction() as connection:
        await connection.execute(
            "UPDATE runs SET created_at = created_at - $1 WHERE name = $2", seconds, name
        )


async def _died_mid_announcement(bot: Bot, name: str) -> None:
    """The run's announcement was claimed by a replica that died (its claim ran out)."""
    import time

    async with bot.services.store.database.transaction() as connection:
        await connection.execute(
            "UPDATE runs SET state = $1, announced_at = NULL, claim_owner = 'replica-that-died',"
            " claim_until = $2 WHERE name = $3",
            RunState.RUNNING.value,
            time.time() - 1,
            name,
        )


@pytest.mark.parametrize("posted_before_dying", [True, False], ids=["posted", "not-posted"])
async def test_a_run_whose_announcer_died_mid_announcement_is_announced_exactly_once(
    bot: Bot, posted_before_dying: bool
) -> None:
    bot.argo.auto_run = posted_before_dying
    [name] = await start_runs(bot, 1)
    await bot.wait_idle()
    if posted_before_dying:
        [posted] = announcements(bot)
        assert posted.args["metadata"]["event_payload"]["workflow"] == name
    else:
        await bot.argo.complete(name, "Succeeded", run_hook=False)
    # The replica claimed the announcement and died (posting it first, or not), before the
    # runs table said it was announced.
    await _died_mid_announcement(bot, name)

    await bot.services.runs.poll_once()
    await bot.hook(name)
    await bot.wait_idle()

    assert len(announcements(bot)) == 1
    run = await bot.services.store.get_run(name)
    assert run is not None and run.state is RunState.ANNOUNCED
    assert bot.slack.calls_to("conversations.replies"), "the thread was read first"
