"""Buttons on the announcement (Logs, Retry, Resubmit, Open in Argo) and Stop on the root.

Clicks arrive as signed `block_actions` on `/slack/events`, like Slack sends them; each test
asserts the ack, what Argo received and what the clicker and the thread saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from stand_ins.slack_requests import block_actions, interaction, signed
from tests.conftest import SIGNING_SECRET, Bot
from tests.lifecycle_support import (
    FLAKY_TEMPLATE,
    announcements,
    ops_bot,
    put_requests,
    rendered,
    replies,
    root_of,
    start,
)


def buttons_of(message) -> dict[str, dict]:
    return {
        element["action_id"]: element
        for block in message.blocks or []
        if block.get("type") == "actions"
        for element in block["elements"]
    }


async def post_click(bot: Bot, payload: dict, *, secret: str = SIGNING_SECRET) -> int:
    """A hand-made click (a stale message, a forged value), signed like Slack signs it."""
    body = interaction(payload)
    headers = signed(secret, body, content_type="application/x-www-form-urlencoded")
    async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as response:
        return response.status


def private(bot: Bot, user: str = "U1") -> list[str]:
    return [json.dumps([e.text, e.thread_ts]) for e in bot.slack.ephemerals if e.user == user]


async def test_announcement_of_a_success_has_logs_resubmit_and_open_in_argo(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    root = root_of(bot, name)
    [result] = announcements(bot, root.ts)
    found = buttons_of(result)
    assert list(found) == ["argo_logs", "argo_resubmit", "argo_open"]
    assert found["argo_open"]["url"] == f"https://argo.example.test/workflows/argo/{name}"
    assert {element["value"] for element in found.values()} == {name}
    assert "<@U1>" not in result.text  # nobody is pinged for a success
    # The finished root has no Stop any more.
    assert buttons_of(bot.slack.find_message("C1", root.ts)) == {}


async def test_announcement_of_a_failure_adds_retry_and_mentions_the_starter(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0", user_id="U7")
    [result] = announcements(bot, root_of(bot, name).ts)
    assert list(buttons_of(result)) == ["argo_logs", "argo_retry", "argo_resubmit", "argo_open"]
    assert "<@U7>" in result.text and "<@U7>" in rendered(result)


async def test_announcement_without_argo_ui_has_no_link_button(bot_factory) -> None:
    bot: Bot = await bot_factory(argo_ui_url=None)
    name = await start(bot, "run csv-summary rows=3")
    [result] = announcements(bot, root_of(bot, name).ts)
    assert "argo_open" not in buttons_of(result)


async def test_logs_button_posts_the_logs_in_the_thread(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    root = root_of(bot, name)
    [result] = announcements(bot, root.ts)
    response = await bot.click("argo_logs", result, user_id="U3")
    assert response.status == 200
    await bot.wait_idle()
    [posted] = [m for m in replies(bot, root.ts) if "Logs of" in (m.text or "")]
    assert "[generate] wrote 3 rows" in rendered(posted) and "asked by <@U3>" in rendered(posted)
    [note] = private(bot, "U3")
    assert "Posted the logs" in note and root.ts in note  # answered in the thread


async def test_retry_button_clicked_twice_retries_once(bot_factory, tmp_path: Path) -> None:
    bot = await ops_bot(bot_factory, tmp_path)
    bot.argo.add_template(FLAKY_TEMPLATE)
    name = await start(bot, f"run flaky flag={tmp_path / 'flag'}")
    root = root_of(bot, name)
    [failed] = announcements(bot, root.ts)
    first, second = await asyncio.gather(
        bot.click("argo_retry", failed, user_id="U1"),
        bot.click("argo_retry", failed, user_id="U2"),
    )
    assert first.status == second.status == 200
    await bot.wait_idle()

    assert len(put_requests(bot, "retry")) == 1
    notes = private(bot, "U1") + private(bot, "U2")
    assert sum("Retrying" in note for note in notes) == 1
    assert sum("already being retried" in note for note in notes) == 1
    _, again = announcements(bot, root.ts)
    assert again.text.startswith(f"{name} succeeded")
    # The old Retry button cannot retry a run that has succeeded since.
    await bot.click("argo_retry", failed, user_id="U1")
    await bot.wait_idle()
    assert len(put_requests(bot, "retry")) == 1
    assert "nothing to retry" in private(bot, "U1")[-1]


async def test_retry_button_when_argo_refuses(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    [failed] = announcements(bot, root_of(bot, name).ts)
    bot.argo.fail_next("PUT", r"/retry$", status=400, message="Cannot retry a workflow in phase X")
    await bot.click("argo_retry", failed)
    await bot.wait_idle()
    [note] = private(bot)
    assert "Argo refused to retry" in note and "Cannot retry a workflow in phase X" in note


async def test_resubmit_button_clicked_twice_resubmits_once(bot_factory, tmp_path: Path) -> None:
    bot = await ops_bot(bot_factory, tmp_path)
    name = await start(bot, "run csv-summary rows=3")
    [result] = announcements(bot, root_of(bot, name).ts)
    await asyncio.gather(
        bot.click("argo_resubmit", result, user_id="U1"),
        bot.click("argo_resubmit", result, user_id="U2"),
    )
    await bot.wait_idle()
    assert len(bot.argo.created) == 2
    [new] = [m["metadata"]["name"] for m in bot.argo.created if m["metadata"]["name"] != name]
    [new_result] = announcements(bot, root_of(bot, new).ts)
    assert "succeeded" in new_result.text
    notes = private(bot, "U1") + private(bot, "U2")
    assert sum(f"Resubmitted `{name}` as `{new}`" in note for note in notes) == 1
    # The other click lands while the first is under way, or after it: told either way.
    assert (
        sum(
            "is being resubmitted right now" in note or f"already resubmitted as `{new}`" in note
            for note in notes
        )
        == 1
    )


async def test_stop_button_on_the_running_root_stops_once(bot_factory, tmp_path: Path) -> None:
    bot = await ops_bot(bot_factory, tmp_path)
    bot.argo.auto_run = False
    bot.argo.shutdown_delay = 1.0
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)
    assert list(buttons_of(root)) == ["argo_stop"]
    assert buttons_of(root)["argo_stop"]["confirm"]["title"]["text"] == "Stop this run?"
    await asyncio.gather(bot.click("argo_stop", root), bot.click("argo_stop", root, user_id="U2"))
    await bot.wait_idle()
    assert len(put_requests(bot, "stop")) == 1
    notes = private(bot, "U1") + private(bot, "U2")
    assert sum("already asked to stop" in note for note in notes) == 1
    [result] = announcements(bot, root.ts)
    assert "Stopped with strategy 'Stop'" in rendered(result)
    assert any("asked Argo to stop" in rendered(m) for m in replies(bot, root.ts))


async def test_stop_button_after_the_run_ended_says_so(bot: Bot) -> None:
    bot.argo.auto_run = False
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)
    stale = bot.slack.find_message("C1", root.ts).to_api()  # the root as the clicker saw it
    await bot.argo.complete(name, "Succeeded")
    await bot.wait_idle()
    payload = block_actions(
        [{"action_id": "argo_stop", "type": "button", "value": name, "block_id": "x"}],
        message=stale,
    )
    assert await post_click(bot, payload) == 200
    await bot.wait_idle()
    assert put_requests(bot, "stop") == []
    assert "has already finished (Succeeded)" in private(bot)[-1]


async def test_open_in_argo_link_button_is_only_acked(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    [result] = announcements(bot, root_of(bot, name).ts)
    bot.argo.requests.clear()
    calls = len(bot.slack.calls)
    response = await bot.click("argo_open", result)
    assert response.status == 200
    await bot.wait_idle()
    assert bot.argo.requests == []
    assert len(bot.slack.calls) == calls


async def test_button_of_a_workflow_argo_no_longer_has(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    [result] = announcements(bot, root_of(bot, name).ts)
    del bot.argo.workflows[name]
    await bot.click("argo_logs", result)
    await bot.wait_idle()
    assert "no longer in Argo" in private(bot)[-1]


async def test_button_for_a_workflow_the_bot_did_not_start(bot: Bot) -> None:
    payload = block_actions(
        [{"action_id": "argo_retry", "type": "button", "value": "not-ours-x7k2p"}],
        message={"ts": "1.000100", "type": "message"},
    )
    assert await post_click(bot, payload) == 200
    await bot.wait_idle()
    assert "There is no workflow `not-ours-x7k2p`" in private(bot)[-1]
    assert put_requests(bot, "retry") == []


async def test_clicks_are_acked_before_a_slow_argo_answers(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    [failed] = announcements(bot, root_of(bot, name).ts)
    bot.argo.latency = 3.0
    started = time.monotonic()
    response = await bot.click("argo_retry", failed)
    assert response.status == 200
    assert time.monotonic() - started < 2.0  # well before Argo could have answered
    assert put_requests(bot, "retry") == []  # Argo had not even been asked yet
    bot.argo.latency = 0
    await bot.wait_idle()
    assert len(put_requests(bot, "retry")) == 1


async def test_unsigned_clicks_are_refused(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    payload = block_actions([{"action_id": "argo_retry", "type": "button", "value": name}])
    assert await post_click(bot, payload, secret="wrong-secret") == 401
    await bot.wait_idle()
    assert put_requests(bot, "retry") == []
