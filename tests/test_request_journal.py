"""Requests are written down before the ack: a replica that dies after saying "got it" loses
nothing, and a request taken over by another replica still becomes exactly one run."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

from bot.models import RunRequest, SlackOrigin
from bot.store import RequestSuperseded, StoredRequest
from stand_ins.slack_requests import file_share_event
from tests.conftest import Bot
from tests.slack_deliveries import deliver_event, share
from tests.test_exit_hook import announcements
from tests.test_file_drop import bot_replies

MENTION = "<@UBOT>"
CSV = b"city,sales\nLima,3\nQuito,4\n"


async def _requests(bot: Bot) -> list[SimpleNamespace]:
    async with bot.services.store.database.connection() as connection:
        rows = await connection.fetch("SELECT * FROM run_requests")
    return [SimpleNamespace(**dict(row)) for row in rows]


async def _expire_leases(bot: Bot) -> None:
    """Every pending request's lease ran out a moment ago (its replica died), and so did the
    poll-cycle lease, so any replica's next poll cycle runs."""
    async with bot.services.store.database.transaction() as connection:
        await connection.execute("UPDATE leases SET expires_at = $1", time.time() - 1)
        await connection.execute(
            "UPDATE run_requests SET claim_until = $1 WHERE state = 'pending'", time.time() - 1
        )


async def _two_replicas(bot_factory: Any) -> tuple[Bot, Bot]:
    """Two replicas on one database, their start-up poll cycles over."""
    first: Bot = await bot_factory()
    second: Bot = await bot_factory()
    await first.wait_idle()
    await second.wait_idle()
    return first, second


def _private_answers(bot: Bot) -> list[str]:
    texts = [str(response.body.get("text", "")) for response in bot.slack.responses]
    texts += [call.args.get("text", "") for call in bot.slack.calls_to("chat.postEphemeral")]
    return texts


async def test_a_run_request_is_linked_to_the_run_it_became(bot: Bot) -> None:
    response = await bot.command("run csv-summary rows=3")
    assert response.status == 200
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    [row] = await _requests(bot)
    assert (row.kind, row.state, row.run_name, row.user_id) == ("command", "done", name, "U1")
    assert row.attempts == 1


async def test_a_recorded_command_reads_back_as_exactly_the_run_request_it_asked_for(
    bot: Bot,
) -> None:
    await bot.command('run csv-summary rows=3 title="Q3 numbers"')
    await bot.started_runs(1)
    await bot.wait_idle()

    [row] = await _requests(bot)
    payload = json.loads(row.payload)
    request = RunRequest.model_validate(payload)
    # Written without the model (before the ack), it is the model's own dump: a field added
    # to RunRequest or SlackOrigin and not to RunRequest.payload fails here.
    assert request.model_dump(mode="json") == payload
    assert (request.template, request.parameters) == (
        "csv-summary",
        {"rows": "3", "title": "Q3 numbers"},
    )
    assert request.origin.user_id == "U1" and request.origin.response_url


async def test_a_command_acked_by_a_replica_that_died_is_started_by_another(
    bot_factory: Any,
) -> None:
    first, second = await _two_replicas(bot_factory)
    # The first replica acknowledges, then dies before its background work begins.
    first.services.tasks.stop_accepting()

    response = await first.command('run csv-summary rows=4 title="After the crash"')
    assert response.status == 200 and "Starting" in response.text
    assert first.argo.created == []
    [row] = await _requests(first)
    assert row.state == "pending" and row.run_name is None

    await _expire_leases(first)
    await second.services.runs.poll_once()
    [name] = await second.started_runs(1)
    await second.wait_idle()

    [manifest] = second.argo.created
    parameters = {p["name"]: p["value"] for p in manifest["spec"]["arguments"]["parameters"]}
    assert parameters == {"rows": "4", "title": "After the crash"}
    [row] = await _requests(second)
    assert (row.state, row.run_name, row.attempts) == ("done", name, 2)
    assert len(announcements(second)) == 1
    assert any(f"Started `{name}`" in text for text in _private_answers(second))

    # A later cycle finds nothing more to do.
    await _expire_leases(second)
    await second.services.runs.poll_once()
    await second.wait_idle()
    assert len(second.argo.created) == 1


async def test_a_request_taken_over_while_its_first_replica_still_works_becomes_one_run(
    bot_factory: Any,
) -> None:
    first, second = await _two_replicas(bot_factory)
    request = RunRequest(
        template="csv-summary",
        parameters={"rows": "2"},
        origin=SlackOrigin(user_id="U1", channel_id="C1"),
    )
    claim = await first.services.journal.record(
        "command", request.model_dump(mode="json"), user_id="U1", channel_id="C1"
    )
    assert claim is not None
    # The first replica is slow: its lease runs out and the second takes the request over.
    await _expire_leases(first)
    await second.services.runs.poll_once()
    await second.started_runs(1)
    await second.wait_idle()

    # Then the first replica gets to it: it must not make a second run.
    roots_before = len(first.slack.calls_to("chat.postMessage"))
    try:
        await first.services.runs.start_run(request, claim=claim)
    except RequestSuperseded:
        pass
    else:
        raise AssertionError("the first replica started a second run")
    assert len(first.argo.created) == 1
    orphan = first.slack.calls_to("chat.postMessage")[roots_before:]
    assert len(orphan) == 1, "the late replica posts its root once..."
    deleted = {call.args["ts"] for call in first.slack.calls_to("chat.delete")}
    assert orphan[0].response["ts"] in deleted, "...and takes it back"


async def test_when_the_database_cannot_record_a_command_the_ack_says_so_and_nothing_starts(
    bot: Bot, monkeypatch: Any
) -> None:
    await bot.wait_idle()

    async def database_down(requests: Any) -> set[str]:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(bot.services.store, "add_requests", database_down)
    response = await bot.command("run csv-summary rows=3")
    await bot.wait_idle()

    assert response.status == 200
    assert "database is not answering" in response.text and "Nothing was started" in response.text
    assert bot.argo.created == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_a_burst_of_requests_shares_a_few_transactions(bot: Bot, monkeypatch: Any) -> None:
    store = bot.services.store
    writes: list[int] = []
    real_add_requests = store.add_requests

    async def counted(requests: list[StoredRequest]) -> set[str]:
        writes.append(len(requests))
        return await real_add_requests(requests)

    monkeypatch.setattr(store, "add_requests", counted)
    claims = await asyncio.gather(
        *(
            bot.services.journal.record("command", {"n": n}, user_id="U1", channel_id="C1")
            for n in range(100)
        )
    )

    assert all(claim is not None for claim in claims)
    assert sum(writes) == 100
    assert len(writes) <= 3, writes
    assert len(await _requests(bot)) == 100


async def test_a_request_that_keeps_failing_is_given_up_and_its_author_told(bot: Bot) -> None:
    await bot.wait_idle()
    journal = bot.services.journal
    claim = await journal.record(
        "command",
        {
            "template": "csv-summary",
            "parameters": {},
            "origin": {"user_id": "U7", "channel_id": "C1"},
        },
        user_id="U7",
        channel_id="C1",
    )
    assert claim is not None
    async with bot.services.store.database.transaction() as connection:
        await connection.execute(
            "UPDATE run_requests SET attempts = 3, claim_until = $1", time.time() - 1
        )
        await connection.execute("UPDATE leases SET expires_at = $1", time.time() - 1)

    await bot.services.runs.poll_once()
    await bot.wait_idle()

    [row] = await _requests(bot)
    assert row.state == "failed"
    assert bot.argo.created == []
    [note] = bot.slack.calls_to("chat.postEphemeral")
    assert note.args["user"] == "U7"
    assert "could not start your run of `csv-summary` after 3 tries" in note.args["text"]


async def test_an_upload_acked_by_a_replica_that_died_is_started_in_its_thread(
    bot_factory: Any,
) -> None:
    first, second = await _two_replicas(bot_factory)
    first.services.tasks.stop_accepting()
    file = first.slack.add_file("sales.csv", CSV)

    thread = await share(first, f"{MENTION} run summarize-csv title=Sales", [file])
    assert first.argo.created == []
    # Slack delivers the same upload again as `message`/`file_share`, to the other replica.
    event = file_share_event(
        [file], channel="C1", user="U1", text=f"{MENTION} run summarize-csv title=Sales", ts=thread
    )
    assert (await deliver_event(second, event)).status == 200
    [row] = await _requests(first)
    assert row.kind == "message" and row.state == "pending"

    await _expire_leases(first)
    await second.services.runs.poll_once()
    [name] = await second.started_runs(1)
    await second.wait_idle()

    [manifest] = second.argo.created
    assert manifest["metadata"]["annotations"]["argo-chatops/thread-ts"] == thread
    [artifact] = manifest["spec"]["arguments"]["artifacts"]
    assert artifact["s3"]["key"] == f"sessions/{name}/inputs/sales.csv"
    # The bot's status message and the result, both in the person's thread; nothing else.
    status, result = bot_replies(second, "C1", thread)
    assert name in status.text and "Succeeded" in json.dumps(status.blocks)
    assert "succeeded" in json.dumps(result.blocks).lower()
    assert {call.args["thread_ts"] for call in announcements(second)} == {thread}


async def test_an_upload_interrupted_by_a_dying_replica_starts_again_from_its_request(
    bot_factory: Any,
) -> None:
    first, second = await _two_replicas(bot_factory)
    copying = asyncio.Event()

    async def dies_while_copying(workflow: str, planned: Any) -> Any:
        copying.set()
        await asyncio.Event().wait()  # the replica is gone: nothing more happens here

    first.services.runs._relay.upload = dies_while_copying  # type: ignore[method-assign,union-attr]
    file = first.slack.add_file("sales.csv", CSV)
    thread = await share(first, f"{MENTION} run summarize-csv title=Sales", [file])
    await asyncio.wait_for(copying.wait(), 10)
    for task in list(first.services.tasks._tasks):
        task.cancel()  # the replica dies mid-copy
    [lost] = [row.run_name for row in await _requests(first)]
    lost_run = await first.services.store.get_run(lost)
    assert lost_run is not None and lost_run.state.value == "uploading"
    # Long after, another replica's poll cycles: the first drops the run, the next starts it.
    async with first.services.store.database.transaction() as connection:
        await connection.execute(
            "UPDATE runs SET created_at = $1 WHERE name = $2", time.time() - 3600, lost
        )
    await _expire_leases(first)
    await second.services.runs.poll_once()
    await _expire_leases(second)
    await second.services.runs.poll_once()
    [name] = await second.started_runs(1)
    await second.wait_idle()

    assert name != lost
    dropped = await second.services.store.get_run(lost)
    assert dropped is not None and dropped.state.value == "rejected"
    assert lost_run.root_ts in {call.args["ts"] for call in second.slack.calls_to("chat.delete")}
    [manifest] = second.argo.created
    assert manifest["metadata"]["annotations"]["argo-chatops/thread-ts"] == thread
    [row] = await _requests(second)
    assert (row.state, row.run_name) == ("done", name)
    status, result = [m for m in bot_replies(second, "C1", thread) if not m.deleted]
    assert name in status.text and "succeeded" in json.dumps(result.blocks).lower()


async def test_a_run_slack_could_not_take_is_started_later_not_refused(bot: Bot) -> None:
    await bot.wait_idle()
    # Slack fails the thread root beyond the client's own retries (a 5xx outage).
    bot.slack.fail_next("chat.postMessage", status=500, times=3)

    response = await bot.command("run csv-summary rows=3")
    await bot.wait_idle()
    assert response.status == 200 and "Starting" in response.text
    assert bot.argo.created == []
    assert not any(text.startswith(":warning:") for text in _private_answers(bot))
    [row] = await _requests(bot)
    assert row.state == "pending"

    # Slack is back; the next poll cycle after the lease starts it.
    await _expire_leases(bot)
    await bot.services.runs.poll_once()
    [name] = await bot.started_runs(1)
    await bot.wait_idle()
    assert len(announcements(bot)) == 1
    assert any(f"Started `{name}`" in text for text in _private_answers(bot))


async def test_a_channel_slack_refuses_is_answered_at_once(bot: Bot) -> None:
    await bot.wait_idle()
    bot.slack.error_next("chat.postMessage", "not_in_channel")

    await bot.command("run csv-summary rows=3")
    await bot.wait_idle()

    assert bot.argo.created == []
    assert any("/invite" in text for text in _private_answers(bot))
    [row] = await _requests(bot)
    assert row.state == "done"
