"""Web API methods with a JSON body, posted by SlackMessenger itself: answers, retries, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.messages import SlackMessage
from bot.slack import SlackError, SlackMessenger, build_web_client

TOKEN = "xoxb-0000-secret-token"
Answer = Callable[[web.Request], Any]


class FakeApi:
    """A Web API answering each call with the next of `answers` (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(json.loads(await request.read()))
        self.headers.append(dict(request.headers))
        answer = self.answers[min(len(self.bodies), len(self.answers)) - 1]
        return await answer(request)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApi, SlackMessenger]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_post("/api/{method}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        client = build_web_client(
            token=TOKEN, base_url=str(server.make_url("/api/")), session=session
        )
        yield fake, SlackMessenger(client, session)
    await server.close()


def ok(**fields: Any) -> Answer:
    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **fields})

    return answer


def refused(error: str) -> Answer:
    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error": error})

    return answer


def status(code: int, *, retry_after: str | None = None) -> Answer:
    async def answer(_request: web.Request) -> web.Response:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return web.Response(status=code, text="<html>down</html>", headers=headers)

    return answer


async def dropped(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # the connection goes away before any answer
    return web.Response()


async def test_a_post_sends_the_json_body_with_the_token_and_returns_the_ts(
    api: tuple[FakeApi, SlackMessenger],
) -> None:
    fake, slack = api
    fake.answers = [ok(ts="1.000200", channel="C1")]
    ts = await slack.post("C1", SlackMessage(text="hi", blocks=[]), thread_ts="1.000100")
    assert ts == "1.000200"
    # None arguments are left out, as slack_sdk leaves them out.
    assert fake.bodies == [
        {
            "channel": "C1",
            "text": "hi",
            "thread_ts": "1.000100",
            "unfurl_links": False,
            "unfurl_media": False,
        }
    ]
    assert fake.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert fake.headers[0]["Content-Type"].startswith("application/json")


async def test_dropped_connections_and_5xx_are_retried_by_the_clients_handlers(
    api: tuple[FakeApi, SlackMessenger],
) -> None:
    fake, slack = api
    fake.answers = [dropped, status(503), ok(ts="1.000300")]
    assert await slack.post("C1", SlackMessage(text="hi", blocks=[])) == "1.000300"
    assert len(fake.bodies) == 3


async def test_a_rate_limit_is_waited_out_as_its_retry_after_says(
    api: tuple[FakeApi, SlackMessenger],
) -> None:
    fake, slack = api
    fake.answers = [status(429, retry_after="0"), ok()]
    await slack.update("C1", "1.000100", SlackMessage(text="edited", blocks=[]))
    assert len(fake.bodies) == 2


async def test_refusals_and_lasting_outages_say_whether_to_try_later_and_never_the_token(
    api: tuple[FakeApi, SlackMessenger],
) -> None:
    fake, slack = api
    fake.answers = [refused("channel_not_found")]
    with pytest.raises(SlackError) as refusal:
        await slack.post("C404", SlackMessage(text="hi", blocks=[]))
    assert str(refusal.value) == "Slack chat.postMessage failed: channel_not_found"
    assert not refusal.value.transient

    fake.answers = [refused("ratelimited")]
    with pytest.raises(SlackError) as limited:
        await slack.delete("C1", "1.000100")
    assert limited.value.transient

    fake.bodies.clear()
    fake.answers = [status(500)]
    with pytest.raises(SlackError) as outage:
        await slack.post("C1", SlackMessage(text="hi", blocks=[]))
    assert str(outage.value) == "Slack chat.postMessage failed: HTTP 500"
    assert outage.value.transient
    assert len(fake.bodies) == 3  # the first try and the handler's two retries

    fake.answers = [status(200)]  # not JSON: Slack's answer cannot be read
    with pytest.raises(SlackError) as unreadable:
        await slack.post("C1", SlackMessage(text="hi", blocks=[]))
    assert str(unreadable.value) == "Slack chat.postMessage failed: HTTP 200"
    for error in (refusal, limited, outage, unreadable):
        assert TOKEN not in str(error.value)


async def test_an_unreachable_slack_is_a_transient_error(
    unused_tcp_port: int,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = build_web_client(
            token=TOKEN, base_url=f"http://127.0.0.1:{unused_tcp_port}/api/", session=session
        )
        with pytest.raises(SlackError) as unreachable:
            await SlackMessenger(client, session).post("C1", SlackMessage(text="hi", blocks=[]))
    assert str(unreachable.value) == "Slack chat.postMessage unreachable: ClientConnectorError"
    assert unreachable.value.transient
