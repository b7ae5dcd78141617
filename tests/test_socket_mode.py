"""Socket Mode (SLACK_APP_TOKEN): wired beside the HTTP server, same Bolt app, closed on exit.

No Slack here: Bolt's real AsyncSocketModeHandler is used with its WebSocket connect replaced,
and requests are handed to it the way slack-sdk's client does after reading an envelope.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot import socket_mode
from stand_ins.slack_requests import slash_command
from tests.conftest import Bot

APP_TOKEN = "xapp-1-A0001-123-socketmodetoken"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


class RecordingHandler(AsyncSocketModeHandler):
    """The real handler, minus the network: connect and close are recorded."""

    made: list[RecordingHandler] = []
    failing_connects = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connects = 0
        self.closed = False
        RecordingHandler.made.append(self)

    async def connect_async(self) -> None:
        self.connects += 1
        if self.connects <= self.failing_connects:
            raise ConnectionError("Slack is unreachable")

    async def close_async(self) -> None:
        self.closed = True
        await self.client.close()


class SocketClient:
    """Stands in for the WebSocket: keeps the responses the handler sends back."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.responses: list[SocketModeResponse] = []

    async def send_socket_mode_response(self, response: SocketModeResponse) -> None:
        self.responses.append(response)


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> list[RecordingHandler]:
    monkeypatch.setattr(RecordingHandler, "made", [])
    monkeypatch.setattr(socket_mode, "AsyncSocketModeHandler", RecordingHandler)
    return RecordingHandler.made


async def test_without_an_app_token_there_is_no_socket(
    bot_factory: Any, handlers: list[RecordingHandler]
) -> None:
    await bot_factory()
    assert handlers == []


async def test_a_slash_command_over_the_socket_starts_a_run_like_http_does(
    bot_factory: Any, handlers: list[RecordingHandler]
) -> None:
    bot: Bot = await bot_factory(slack_app_token=APP_TOKEN)
    [handler] = handlers
    await asyncio.sleep(0)
    assert handler.connects == 1
    assert handler.app is bot.services.bolt, "one Bolt app serves both transports"
    assert handler.app_token == APP_TOKEN
    assert str(handler.client.web_client.base_url) == bot.settings.slack_api_url.unicode_string()

    form = dict(
        parse_qsl(
            slash_command("run csv-summary rows=3", response_url=bot.slack.response_url()).decode()
        )
    )
    client = SocketClient(handler.client.logger)
    request = SocketModeRequest(type="slash_commands", envelope_id="env-1", payload=form)
    await handler.handle(client, request)  # type: ignore[arg-type]

    [response] = client.responses
    assert response.envelope_id == "env-1"
    assert "Starting `csv-summary`" in json.dumps(response.payload)
    [name] = await bot.started_runs(1)
    await bot.wait_idle()
    run = await bot.services.store.get_run(name)
    assert run is not None and run.announced_at is not None

    # The HTTP side keeps serving: the exit hook came in over PUBLIC_URL.
    assert [call.status for call in bot.argo.hook_calls] == [202]
    await bot.server.close()
    assert handler.closed


async def test_a_failed_first_connection_is_retried_without_stopping_the_service(
    bot_factory: Any, handlers: list[RecordingHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RecordingHandler, "failing_connects", 1)
    bot: Bot = await bot_factory(slack_app_token=APP_TOKEN)
    async with bot.http.get(f"{bot.url}healthz") as response:
        assert response.status == 200
    [handler] = handlers
    for _ in range(200):
        if handler.connects >= 2:
            break
        await asyncio.sleep(0.02)
    assert handler.connects == 2
