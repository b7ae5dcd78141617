"""Live progress on the thread root: Pending → Running (with progress) → Succeeded.

The refresher runs as the service's own APScheduler job; these tests watch what Slack
received (the root's edit history) and what Argo was asked (one list call per cycle).
"""

from __future__ import annotations

import asyncio
import json

from tests.conftest import Bot
from tests.lifecycle_support import announcements, ops_bot, rendered, root_of, start
from tests.slack_deliveries import BOT_USER, share


def versions(bot: Bot, ts: str) -> list[str]:
    """Every version the root has had, oldest first, as rendered text."""
    message = bot.slack.find_message("C1", ts)
    assert message is not None
    return [json.dumps(v.blocks) for v in message.history] + [json.dumps(message.blocks)]


def progress_lists(bot: Bot) -> list:
    return [
        r
        for r in bot.argo.requests
        if r.method == "GET"
        and r.path == "/api/v1/workflows/argo"
        and "completed!=true" in r.query.get("listOptions.labelSelector", "")
    ]


def showing(bot: Bot, ts: str, *needles: str) -> bool:
    return all(needle in versions(bot, ts)[-1] for needle in needles)


async def test_thread_root_goes_pending_then_running_with_progress_then_succeeded(
    bot_factory,
) -> None:
    bot: Bot = await bot_factory(progress_interval_seconds=1)
    bot.argo.hold_pending = True
    bot.argo.hold_step("summarize")
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)

    await bot.slack.wait_for(lambda: showing(bot, root.ts, "Pending"), timeout=10)
    assert showing(bot, root.ts, "waiting for Argo to start it", "argo_stop")

    bot.argo.release(name)
    await bot.slack.wait_for(
        lambda: showing(bot, root.ts, "Running", "1/2 steps done", "now `summarize`"), timeout=10
    )
    assert showing(bot, root.ts, "elapsed", "argo_stop", "Open in Argo")
    # Progress came from list calls only: nobody read this workflow on its own yet.
    assert progress_lists(bot)
    assert not [r for r in bot.argo.requests if r.path == f"/api/v1/workflows/argo/{name}"]

    bot.argo.release_step("summarize")
    await bot.slack.wait_for(lambda: len(announcements(bot, root.ts)) == 1, timeout=10)
    await bot.wait_idle()
    history = versions(bot, root.ts)
    pending = next(i for i, v in enumerate(history) if "Pending" in v)
    running = next(i for i, v in enumerate(history) if "1/2 steps done" in v)
    assert pending < running
    assert ":white_check_mark: Succeeded in" in history[-1]
    assert "argo_stop" not in history[-1]


async def test_one_list_call_refreshes_every_running_run(bot: Bot) -> None:
    bot.argo.auto_run = False
    names = [await start(bot, "run csv-summary rows=3", wait=False) for _ in range(5)]
    bot.argo.requests.clear()
    updates = len(bot.slack.calls_to("chat.update"))

    report = await bot.services.progress.refresh_once()

    assert report.running == 5 and report.edited == 5
    [listed] = bot.argo.requests
    assert listed.path == "/api/v1/workflows/argo"
    assert listed.query["listOptions.labelSelector"] == (
        "argo-chatops/managed=true,workflows.argoproj.io/completed!=true"
    )
    assert "items.status.nodes" in listed.query["fields"]
    assert len(bot.slack.calls_to("chat.update")) == updates + 5
    for name in names:
        assert "Running" in rendered(root_of(bot, name))


async def test_nothing_running_costs_no_argo_or_slack_call(bot: Bot) -> None:
    await start(bot, "run csv-summary rows=3")  # over and announced
    bot.argo.requests.clear()
    calls = len(bot.slack.calls)
    report = await bot.services.progress.refresh_once()
    assert report.running == 0
    assert bot.argo.requests == []
    assert len(bot.slack.calls) == calls


async def test_an_unchanged_root_is_not_edited_every_cycle(bot_factory) -> None:
    bot: Bot = await bot_factory(progress_interval_seconds=1)
    bot.argo.auto_run = False
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)
    await bot.slack.wait_for(lambda: showing(bot, root.ts, "Running", "elapsed"), timeout=10)
    edits = len(bot.slack.find_message("C1", root.ts).history)
    lists = len(progress_lists(bot))
    await asyncio.sleep(2.5)
    # Cycles kept listing Argo, but nothing on the root changed: no edit (elapsed alone
    # refreshes it every 30 s).
    assert len(progress_lists(bot)) >= lists + 2
    assert len(bot.slack.find_message("C1", root.ts).history) == edits
    await bot.argo.complete(name, "Succeeded")
    await bot.wait_idle()


async def test_edits_per_cycle_are_capped_and_shared_fairly(bot_factory) -> None:
    bot: Bot = await bot_factory(progress_interval_seconds=3)  # 2 edits a cycle
    bot.argo.auto_run = False
    for _ in range(5):
        await start(bot, "run csv-summary rows=3", wait=False)
    assert bot.services.progress.edits_per_cycle == 2
    edited: set[str] = set()
    for _ in range(3):
        updates = len(bot.slack.calls_to("chat.update"))
        report = await bot.services.progress.refresh_once()
        assert report.edited <= 2
        edited.update(c.args["ts"] for c in bot.slack.calls_to("chat.update")[updates:])
    assert len(edited) == 5  # the least recently edited went first


async def test_stop_requested_shows_on_the_root(bot_factory, tmp_path) -> None:
    bot = await ops_bot(bot_factory, tmp_path)  # U9 may stop U1's run
    bot.argo.auto_run = False
    bot.argo.shutdown_delay = 1.0  # Argo answers at once and stops the workflow later
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)
    await bot.click("argo_stop", root, user_id="U9")
    await bot.slack.wait_for(lambda: showing(bot, root.ts, "Stop requested by <@U9>"))
    await bot.wait_idle()
    assert ":x: Failed in" in versions(bot, root.ts)[-1]


async def test_a_late_progress_edit_never_leaves_a_finished_run_looking_alive(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    root = root_of(bot, name)
    run = await bot.services.store.get_run(name)
    assert run is not None
    # A progress edit that was in flight while the run was announced lands last…
    await bot.services.progress.show(run, ":arrow_forward: Running · 1/2 steps done")
    # …and is undone at once: the root shows the end again.
    assert ":white_check_mark: Succeeded in" in versions(bot, root.ts)[-1]
    assert "1/2 steps done" in versions(bot, root.ts)[-2]


async def test_a_run_started_from_a_file_shows_progress_on_the_bots_own_reply(bot: Bot) -> None:
    bot.argo.auto_run = False
    file = bot.slack.add_file("sales.csv", b"region,amount\nnorth,3\nsouth,4\n")
    thread = await share(bot, f"<@{BOT_USER}> run summarize-csv", [file])
    [name] = await bot.started_runs(1)
    await bot.services.tasks.wait_idle()

    report = await bot.services.progress.refresh_once()

    assert report.edited == 1
    person = bot.slack.find_message("C1", thread)
    assert person is not None and not person.history  # the person's message is left alone
    run = await bot.services.store.get_run(name)
    assert run is not None and run.root_ts
    shown = versions(bot, run.root_ts)[-1]
    assert "Running" in shown and "elapsed" in shown and "argo_stop" in shown
    assert "sales.csv" in shown  # the inputs line survives the edit
    await bot.argo.complete(name, "Succeeded")
    await bot.wait_idle()
