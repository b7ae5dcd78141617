"""The stand-ins behave like the services they replace, as seen by the real client libraries.

Every Slack check goes through slack-sdk's own ``AsyncWebClient``/``AsyncWebhookClient``, so the
fake is exercised with the request shapes the bot will really send (JSON bodies, query-string
POSTs, GETs).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from stand_ins import slack_requests
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import S3Server

TOKEN = "xoxb-test-token"
SECRET = "signing-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.api_url)


async def test_fake_listens_on_an_os_chosen_local_port(fake: FakeSlack) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.api_url == fake.url + "/api/"
    assert fake.host == fake.url.removeprefix("http://")
    assert not fake.url.endswith(":0")


async def test_thread_replies_are_stored_under_their_root_in_order(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C1", text="Running csv-summary-x7k2p")
    reply1 = await client.chat_postMessage(channel="C1", text="step 1", thread_ts=root["ts"])
    other = await client.chat_postMessage(channel="C2", text="elsewhere")
    reply2 = await client.chat_postMessage(
        channel="C1",
        thread_ts=root["ts"],
        text="done",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}],
        metadata={"event_type": "run", "event_payload": {"name": "x"}},
    )

    assert root["channel"] == "C1"
    assert root["message"]["user"] == "UBOT"
    stamps = [root["ts"], reply1["ts"], other["ts"], reply2["ts"]]
    assert stamps[0] == "1764864000.000100"
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 4
    thread = fake.thread("C1", root["ts"])
    assert [m.text for m in thread] == ["Running csv-summary-x7k2p", "step 1", "done"]
    assert thread[2].blocks is not None
    assert thread[2].metadata == {"event_type": "run", "event_payload": {"name": "x"}}
    assert [m.text for m in fake.messages["C2"]] == ["elsewhere"]
    # chat.postMessage arrives as a JSON body; the merged args keep their JSON types.
    call = fake.calls_to("chat.postMessage")[-1]
    assert call.headers["content-type"].startswith("application/json")
    assert isinstance(call.args["blocks"], list)


async def test_replying_to_a_reply_or_an_unknown_ts_is_thread_not_found(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    root = await client.chat_postMessage(channel="C1", text="root")
    reply = await client.chat_postMessage(channel="C1", text="reply", thread_ts=root["ts"])
    for bad in (reply["ts"], "1.000001"):
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C1", text="x", thread_ts=bad)
        assert caught.value.response["error"] == "thread_not_found"
    # A person's message added by the test is a valid root (file drops thread onto it).
    dropped = fake.add_user_message("C1", "here is data", user="U9")
    answer = await client.chat_postMessage(channel="C1", text="on it", thread_ts=dropped.ts)
    assert answer["ok"]
    assert [m.user for m in fake.thread("C1", dropped.ts)] == ["U9", "UBOT"]


async def test_update_keeps_the_previous_version_and_delete_marks_the_message(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="running")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Succeeded*"}}]
    updated = await client.chat_update(channel="C1", ts=posted["ts"], text="ok", blocks=blocks)
    assert updated["ts"] == posted["ts"]

    message = fake.messages["C1"][0]
    assert (message.text, message.blocks, message.edited) == ("ok", blocks, True)
    assert [v.text for v in message.history] == ["running"]

    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert message.deleted
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C1", ts="9.000001", text="x")
    assert caught.value.response["error"] == "message_not_found"
    theirs = fake.add_user_message("C1", "mine")
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C1", ts=theirs.ts, text="x")
    assert caught.value.response["error"] == "cant_update_message"


async def test_ephemeral_messages_are_kept_apart_from_the_channel(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    answer = await client.chat_postEphemeral(channel="C1", user="U1", text="Unknown template")
    assert answer["message_ts"]
    assert [(e.channel, e.user, e.text) for e in fake.ephemerals] == [
        ("C1", "U1", "Unknown template")
    ]
    assert fake.messages["C1"] == []


async def test_auth_test_identifies_the_bot_and_lists_scopes(client: AsyncWebClient) -> None:
    answer = await client.auth_test()
    assert answer["user_id"] == "UBOT"
    assert answer["team_id"] == "T0001"
    assert answer["bot_id"] == "B0001"
    assert "chat:write" in answer.headers["x-oauth-scopes"].split(",")


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), (None, "not_authed")])
async def test_a_wrong_or_missing_token_is_refused(
    fake: FakeSlack, token: str | None, error: str
) -> None:
    with pytest.raises(SlackApiError) as caught:
        await AsyncWebClient(token=token, base_url=fake.api_url).chat_postMessage(
            channel="C1", text="hi"
        )
    assert caught.value.response["error"] == error
    assert fake.messages["C1"] == []
    assert fake.calls[-1].error == error


async def test_views_open_answers_a_view_id_and_a_trigger_works_once(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    view = {
        "type": "modal",
        "callback_id": "run",
        "title": {"type": "plain_text", "text": "Run a workflow"},
        "blocks": [],
    }
    opened = await client.views_open(trigger_id="1.2.abc", view=view)
    assert opened["view"]["id"].startswith("V")
    assert opened["view"]["callback_id"] == "run"
    assert fake.views[0]["trigger_id"] == "1.2.abc"
    with pytest.raises(SlackApiError) as caught:
        await client.views_open(trigger_id="1.2.abc", view=view)
    assert caught.value.response["error"] == "exchanged_trigger_id"

    updated = await client.views_update(
        view_id=opened["view"]["id"], view={**view, "private_metadata": "x"}
    )
    assert fake.views[0]["view"]["private_metadata"] == "x"
    assert updated["view"]["id"] == opened["view"]["id"]


async def test_rate_limit_is_retried_by_slack_sdk_after_retry_after(fake: FakeSlack) -> None:
    client = AsyncWebClient(
        token=TOKEN,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    answer = await client.chat_postMessage(channel="C1", text="hello")
    elapsed = time.monotonic() - started

    assert answer["ok"]
    assert elapsed >= 1.0
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert fake.calls_to("chat.postMessage")[0].error == "ratelimited"
    assert len(fake.messages["C1"]) == 1


async def test_server_errors_and_injected_api_errors_surface_as_slack_api_errors(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C1", text="x")
    assert caught.value.response.status_code == 503

    fake.error_next("chat.postMessage", "not_in_channel", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C1", text="x")
        assert caught.value.response["error"] == "not_in_channel"
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [503, 200, 200, 200]
    assert len(fake.messages["C1"]) == 1


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
async def test_bad_content_is_refused_like_slack_does(client: AsyncWebClient) -> None:
    cases = [
        ({"text": ""}, "no_text"),
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {
                "text": "x",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}],
            },
            "invalid_blocks",
        ),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C1", **kwargs)
        assert caught.value.response["error"] == error


async def test_query_string_and_get_methods_are_understood(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="run")
    await client.reactions_add(channel="C1", name="white_check_mark", timestamp=posted["ts"])
    with pytest.raises(SlackApiError) as caught:
        await client.reactions_add(channel="C1", name="white_check_mark", timestamp=posted["ts"])
    assert caught.value.response["error"] == "already_reacted"
    assert fake.reactions == [("C1", posted["ts"], "white_check_mark")]

    user = await client.users_info(user="U7")
    assert user["user"]["name"] == "user-U7"
    channel = await client.conversations_info(channel="C1")
    assert channel["channel"]["id"] == "C1"
    assert fake.calls_to("users.info")[0].http_method == "GET"

    # Arguments in a form body, with blocks as a JSON string, merge like JSON ones.
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*form*"}}]
    await client.api_call(
        "chat.postMessage", data={"channel": "C1", "text": "form", "blocks": json.dumps(blocks)}
    )
    assert fake.messages["C1"][-1].blocks == blocks

    with pytest.raises(SlackApiError) as caught:
        await client.api_call("nope.nothing")
    assert caught.value.response["error"] == "unknown_method"


async def test_response_url_posts_are_recorded_up_to_five_uses(fake: FakeSlack) -> None:
    url = fake.response_url()
    assert url != fake.response_url()
    webhook = AsyncWebhookClient(url)
    first = await webhook.send(text="Unknown template", response_type="ephemeral")
    assert (first.status_code, first.body) == (200, "ok")
    for n in range(4):
        await webhook.send(text=f"again {n}")
    assert [r.body["text"] for r in fake.responses][:1] == ["Unknown template"]
    assert fake.responses[0].body["response_type"] == "ephemeral"
    assert all(r.url == url for r in fake.responses)
    sixth = await webhook.send(text="too many")
    assert sixth.status_code == 404
    assert len(fake.responses) == 5


async def test_file_download_needs_the_bot_token_else_a_login_page(
    fake: FakeSlack, tmp_path: Path
) -> None:
    content = b"a,b\n1,2\n" * 20_000
    info = fake.add_file("data set.csv", content)
    path = tmp_path / "big.csv"
    path.write_bytes(b"x,y\n" * 50_000)
    from_path = fake.add_file_path(path)
    streamed = fake.add_file_stream("gen.csv", 300_000, lambda: (b"z" * 1000 for _ in range(300)))

    assert info["url_private_download"].startswith(fake.url)
    assert info["size"] == len(content)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(info["url_private_download"], headers=auth) as response:
            assert response.status == 200
            assert response.content_type == "text/csv"
            assert await response.read() == content
        async with http.get(from_path["url_private"], headers=auth) as response:
            assert await response.read() == path.read_bytes()
        async with http.get(streamed["url_private"], headers=auth) as response:
            assert await response.read() == b"z" * 300_000
        async with http.get(info["url_private"]) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert b"Sign in" in await response.read()
        async with http.get(info["url_private"], headers={"Authorization": "Bearer xoxb-no"}) as r:
            assert r.content_type == "text/html"
    assert [d.authorized for d in fake.downloads] == [True, True, True, False, False]

    client = AsyncWebClient(token=TOKEN, base_url=fake.api_url)
    assert (await client.files_info(file=info["id"]))["file"]["name"] == "data set.csv"


async def test_files_upload_v2_lands_in_the_thread(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = await client.chat_postMessage(channel="C1", text="run")
    result = await client.files_upload_v2(
        content=b"report", filename="report.txt", channel="C1", thread_ts=root["ts"]
    )
    file_id = result["file"]["id"]
    assert fake.file_bytes(file_id) == b"report"
    reply = fake.thread("C1", root["ts"])[-1]
    assert [f["id"] for f in reply.files] == [file_id]


async def test_wait_for_fails_with_a_dump_of_what_was_recorded(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.latency = 0.05
    task = asyncio.create_task(client.chat_postMessage(channel="C1", text="late"))
    await fake.wait_for(lambda: bool(fake.messages["C1"]), timeout=2)
    await task
    with pytest.raises(AssertionError, match=r"chat\.postMessage -> 200 ok"):
        await fake.wait_for(lambda: False, timeout=0.1)


async def test_s3_server_serves_objects_to_aiobotocore() -> None:
    server = S3Server(bucket="test-artifacts")
    config = await asyncio.to_thread(server.start)
    try:
        assert config.endpoint_url.startswith("http://127.0.0.1:")
        assert (config.bucket, config.access_key, config.region) == (
            "test-artifacts",
            "testing",
            "us-east-1",
        )
        await server.put_object("sessions/run-1/inputs/data.csv", b"a,b\n1,2\n")
        assert await server.read_object("sessions/run-1/inputs/data.csv") == b"a,b\n1,2\n"
        assert await server.list_keys("sessions/") == ["sessions/run-1/inputs/data.csv"]
        assert await server.list_multipart_uploads() == []
    finally:
        await asyncio.to_thread(server.stop)


def test_signed_requests_verify_with_slack_sdk() -> None:
    verifier = SignatureVerifier(SECRET)
    body = slack_requests.slash_command("run csv-summary", response_url="http://x/response/1")
    headers = slack_requests.sign(SECRET, body)
    assert verifier.is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(body.decode())
    assert fields["command"] == ["/argo"]
    assert fields["text"] == ["run csv-summary"]
    assert fields["trigger_id"][0]

    event = slack_requests.event_callback({"type": "app_mention", "text": "<@UBOT> hi"})
    headers = slack_requests.signed(SECRET, event, content_type="application/json", retry_num=1)
    assert verifier.is_valid_request(event, headers)
    assert headers["X-Slack-Retry-Num"] == "1"
    assert json.loads(event)["event_id"].startswith("Ev")

    stale = slack_requests.sign(SECRET, body, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)
    form = slack_requests.interaction({"type": "block_actions"})
    assert json.loads(parse_qs(form.decode())["payload"][0]) == {"type": "block_actions"}


async def test_bolt_answers_a_signed_command_and_talks_to_the_fake(fake: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=fake.api_url), signing_secret=SECRET)

    @app.command("/argo")
    async def on_command(ack: Any, respond: Any, say: Any, command: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"got {command['text']}")
        await say(text="started")

    body = slack_requests.slash_command("run csv-summary", response_url=fake.response_url())
    headers = slack_requests.signed(SECRET, body, content_type=slack_requests.FORM)
    response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))

    assert response.status == 200
    await fake.wait_for(lambda: bool(fake.responses and fake.messages["C1"]), timeout=5)
    assert fake.responses[0].body["text"] == "got run csv-summary"
    assert fake.messages["C1"][0].text == "started"
    assert len(fake.calls_to("auth.test")) == 1

    tampered = slack_requests.signed("wrong-secret", body, content_type=slack_requests.FORM)
    refused = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=tampered))
    assert refused.status == 401
