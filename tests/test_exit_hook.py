"""`POST /hooks/argo` and the poller: every run announced exactly once, none lost."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from stand_ins.argo_emulator import RecordedRequest
from tests.conftest import Bot
from workflows.manifest import hook_token


def announcements(bot: Bot) -> list:
    """Every result the bot posted into a run's thread (and Slack accepted)."""
    return [
        call
        for call in bot.slack.calls_to("chat.postMessage")
        if call.args.get("thread_ts") and call.ok
    ]


def reads_workflow(request: RecordedRequest, name: str) -> bool:
    """A GET of the workflow itself, or a list call that names it (hooks read in batches)."""
    if request.path.endswith(f"/{name}"):
        return True
    selector = request.query.get("listOptions.labelSelector", "")
    listed = re.fullmatch(r"argo-chatops/run in \((.*)\)", selector)
    if request.path != "/api/v1/workflows/argo" or listed is None:
        return False
    return name in listed.group(1).split(",")


async def start_runs(bot: Bot, count: int, text: str = "run csv-summary rows=3") -> list[str]:
    await asyncio.gather(*(bot.command(text) for _ in range(count)))
    return await bot.started_runs(count, timeout=30)


async def test_duplicate_hooks_announce_each_run_exactly_once(bot: Bot) -> None:
    bot.argo.hook_copies = 3
    names = await start_runs(bot, 20)
    await bot.wait_idle()
    assert len(bot.argo.hook_calls) == 60
    posted = announcements(bot)
    assert len(posted) == 20
    assert sorted(json.dumps(call.args).count("succeeded") > 0 for call in posted) == [True] * 20
    threads = {call.args["thread_ts"] for call in posted}
    assert len(threads) == 20
    for name in names:
        run = await bot.services.store.get_run(name)
        assert run is not None and run.announced_at is not None


async def test_hooks_replayed_after_the_announcement_change_nothing(bot: Bot) -> None:
    [name] = await start_runs(bot, 1)
    await bot.wait_idle()
    responses = await asyncio.gather(*(bot.hook(name) for _ in range(5)))
    await bot.wait_idle()
    assert {r.status for r in responses} == {202}
    assert len(announcements(bot)) == 1


async def test_hook_arriving_while_argo_still_says_running_is_announced_once_completed(
    bot: Bot,
) -> None:
    # Argo runs the exit handler before it marks the workflow completed.
    bot.argo.completion_delay = 2.5
    [name] = await start_runs(bot, 1)
    await bot.slack.wait_for(lambda: len(announcements(bot)) == 1, timeout=15)
    [call] = bot.argo.hook_calls
    assert call.status == 202
    completed_reads = [
        r for r in bot.argo.requests if r.method == "GET" and reads_workflow(r, name)
    ]
    assert len(completed_reads) >= 2, "the bot must re-check after a Running answer"
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


async def test_dropped_hook_is_announced_by_the_poller(bot_factory) -> None:
    bot: Bot = await bot_factory(poll_interval_seconds=1)
    bot.argo.hook_copies = 0
    [name] = await start_runs(bot, 1)
    await bot.argo.wait_idle()
    assert bot.argo.workflows[name]["status"]["phase"] == "Succeeded"
    assert bot.argo.hook_calls == []
    await bot.slack.wait_for(lambda: len(announcements(bot)) == 1, timeout=5)
    [result] = announcements(bot)
    assert "succeeded" in result.args["text"]


async def test_terminated_run_without_exit_hook_is_announced_by_the_poller(bot_factory) -> None:
    bot: Bot = await bot_factory(poll_interval_seconds=1)
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    await bot.argo.terminate(name)
    await bot.slack.wait_for(lambda: len(announcements(bot)) == 1, timeout=5)
    [result] = announcements(bot)
    assert "failed" in result.args["text"]
    assert "Terminate" in json.dumps(result.args["blocks"])


@pytest.mark.parametrize("finishing", [3, 12])
async def test_poll_cycle_costs_two_list_calls_however_many_runs_are_tracked_or_finish(
    bot: Bot, finishing: int
) -> None:
    bot.argo.auto_run = False
    names = await start_runs(bot, 15)
    for name in names[:finishing]:
        await bot.argo.complete(name, "Succeeded", run_hook=False)
    bot.argo.requests.clear()

    report = await bot.services.runs.poll_once()

    assert report.pending == finishing and report.announced == finishing
    assert len(announcements(bot)) == finishing
    # One list finds the finished runs (names only); one more reads them, by their run label.
    found, read = bot.argo.requests
    assert (
        (found.method, found.path) == (read.method, read.path) == ("GET", "/api/v1/workflows/argo")
    )
    assert "workflows.argoproj.io/completed=true" in found.query["listOptions.labelSelector"]
    assert "argo-chatops/managed=true" in found.query["listOptions.labelSelector"]
    assert "items.metadata.name" in found.query["fields"]
    selector = read.query["listOptions.labelSelector"]
    assert selector.startswith("argo-chatops/run in (")
    assert sorted(selector.removeprefix("argo-chatops/run in (").rstrip(")").split(",")) == sorted(
        names[:finishing]
    )


async def test_poller_makes_no_argo_call_when_nothing_is_waiting(bot: Bot) -> None:
    bot.argo.requests.clear()
    report = await bot.services.runs.poll_once()
    assert report.listed == 0
    assert bot.argo.requests == []


async def test_hook_and_poller_racing_announce_once(bot: Bot) -> None:
    bot.argo.auto_run = False
    names = await start_runs(bot, 5)
    for name in names:
        await bot.argo.complete(name, "Succeeded", run_hook=False)
    await asyncio.gather(
        *(bot.hook(name) for name in names for _ in range(2)),
        bot.services.runs.poll_once(),
        bot.services.runs.poll_once(),
    )
    await bot.wait_idle()
    assert len(announcements(bot)) == 5


async def test_announcement_failing_in_slack_is_retried_not_lost(bot: Bot) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    bot.slack.error_next("chat.postMessage", "internal_error")
    await bot.argo.complete(name, "Succeeded", run_hook=False)
    response = await bot.hook(name)
    assert response.status == 202
    await bot.wait_idle()
    assert len(announcements(bot)) == 1


@pytest.mark.parametrize(
    ("token", "status"),
    [("", 401), ("0" * 64, 401), (None, 202)],
    ids=["missing", "wrong", "valid"],
)
async def test_hook_token_is_checked(bot: Bot, token: str | None, status: int) -> None:
    bot.argo.auto_run = False
    [name] = await start_runs(bot, 1)
    response = await bot.hook(name, token=token)
    assert response.status == status


async def test_token_of_another_workflow_is_refused(bot: Bot) -> None:
    bot.argo.auto_run = False
    first, second = await start_runs(bot, 2)
    response = await bot.hook(
        first, token=hook_token("test-webhook-secret-0123456789", "argo", second)
    )
    assert response.status == 401


async def test_hook_for_a_workflow_the_bot_does_not_know_is_404(bot: Bot) -> None:
    response = await bot.hook("somebody-elses-run")
    assert response.status == 404
    await bot.wait_idle()
    assert bot.slack.calls_to("chat.postMessage") == []


@pytest.mark.parametrize(
    "body",
    [["a", "list"], {"name": "../../etc"}, {"name": "x", "namespace": 3}, "not json at all"],
)
async def test_malformed_hook_bodies_are_400(bot: Bot, body: object) -> None:
    response = await bot.http.post(
        f"{bot.url}hooks/argo",
        data=body if isinstance(body, str) else json.dumps(body),
        headers={"Authorization": "Bearer x"},
    )
    assert response.status == 400


async def test_oversized_hook_body_is_refused(bot: Bot) -> None:
    response = await bot.http.post(f"{bot.url}hooks/argo", data=b"{" + b" " * (200 * 1024) + b"}")
    assert response.status == 413
