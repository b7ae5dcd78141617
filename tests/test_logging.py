"""Structured logs: JSON lines tagged with the run and the Slack request, and no secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.logging_setup import (
    LEVEL_TESTING_LOGGERS,
    REDACTED,
    SLACK_SDK_LOGGER,
    Redactor,
    build_handler,
    configure_logging,
)
from bot.settings import Settings
from bot.slack import build_web_client
from stand_ins.slack_requests import new_trigger_id, signed, slash_command
from tests.conftest import ARGO_TOKEN, BOT_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, Bot
from tests.test_settings import REQUIRED
from workflows.manifest import hook_token

SECRETS = (BOT_TOKEN, SIGNING_SECRET, ARGO_TOKEN, WEBHOOK_SECRET)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def capture() -> Iterator[Any]:
    """Route every logger through the service's handler at DEBUG, as LOG_LEVEL=DEBUG does."""
    root = logging.getLogger()
    installed: list[logging.Handler] = []
    previous = root.level

    def install(settings: Settings) -> Captured:
        captured = Captured()
        handler = build_handler(settings, captured.stream)
        root.addHandler(handler)
        installed.append(handler)
        root.setLevel(logging.DEBUG)
        return captured

    yield install
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(previous)


async def test_a_run_logs_json_lines_tagged_with_run_and_slack_request_and_no_secret(
    bot: Bot, capture: Any
) -> None:
    logs = capture(bot.settings)
    trigger_id = new_trigger_id()
    body = slash_command(
        "run csv-summary rows=3", response_url=bot.slack.response_url(), trigger_id=trigger_id
    )
    headers = signed(SIGNING_SECRET, body, content_type="application/x-www-form-urlencoded")
    async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as response:
        assert response.status == 200
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    events = logs.events()  # every line parses: one JSON event per line
    assert len(events) > 10, "DEBUG shows the clients' traffic"
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    [started] = [e for e in events if e["message"] == "run started"]
    assert started["run"] == name
    assert started["slack_request_id"] == trigger_id, "tagged from the Slack request"
    assert started["template"] == "csv-summary" and started["level"] == "INFO"
    [announced] = [e for e in events if e["message"] == "run announced"]
    assert announced["run"] == name and announced["phase"] == "Succeeded"
    tagged = [e for e in events if e.get("run") == name]
    assert len(tagged) > 2, "lines logged during the run carry its name"
    for secret in (*SECRETS, hook_token(WEBHOOK_SECRET, "argo", name)):
        assert secret not in logs.text


def test_secrets_are_redacted_from_messages_arguments_extras_and_tracebacks(
    capture: Any, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        slack_bot_token="xoxb-111-222-secretpart",
        slack_signing_secret="signing-secret-value",
        slack_app_token="xapp-1-A111-222-appsecret",
        argo_server_url="https://argo:2746",
        argo_token="Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig",
        s3_access_key="AKIAEXAMPLE",
        s3_secret_key="s3-secret-key-value",
        s3_bucket="artifacts",
        public_url="https://bot.example.com",
        webhook_secret="webhook-secret-0123456789",
        database_url="postgresql://chatops:db-password-value@db:5432/chatops",
    )
    logs = capture(settings)
    logger = logging.getLogger("argo_chatops.test")
    logger.info("token %s in an argument", "xoxb-111-222-secretpart")
    logger.warning("signature", extra={"secret": "signing-secret-value", "run": "r-1"})
    logger.info("connecting to %s", "postgresql://chatops:db-password-value@db:5432/chatops")
    logger.info("header Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig")
    logger.info("someone else's token xoxb-999-888-unknown and xapp-1-B2-3-other")
    logger.info('quoted "s3-secret-key-value" and "webhook-secret-0123456789"')
    try:
        raise RuntimeError("failed with s3-secret-key-value")
    except RuntimeError:
        logger.exception("boom")

    text = logs.text
    for secret in (
        "secretpart",
        "signing-secret-value",
        "appsecret",
        "eyJhbGciOiJSUzI1NiJ9",
        "s3-secret-key-value",
        "webhook-secret-0123456789",
        "db-password-value",
        "xoxb-999-888-unknown",
        "xapp-1-B2-3-other",
    ):
        assert secret not in text, secret
    events = logs.events()
    assert len(events) == 7
    assert events[1]["run"] == "r-1" and events[1]["secret"] == REDACTED
    assert "RuntimeError" in events[-1]["exc_info"]


def test_the_redactor_ignores_values_too_short_to_be_secrets() -> None:
    redact = Redactor(["", "abc", "long-enough-secret"])
    assert redact("abc and long-enough-secret") == f"abc and {REDACTED}"


def test_text_format_for_terminals_keeps_tags_and_redaction(capture: Any) -> None:
    settings = Settings(
        _env_file=None,
        **{**REQUIRED, "slack_bot_token": "xoxb-1-2-textsecret", "log_format": "text"},
    )
    logs = capture(settings)
    logging.getLogger("argo_chatops.test").info(
        "posting with xoxb-1-2-textsecret", extra={"run": "csv-summary-x7k2p"}
    )
    line = logs.text.strip()
    assert line.endswith("[run=csv-summary-x7k2p]")
    assert "textsecret" not in line and REDACTED in line


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide logging: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in LEVEL_TESTING_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in libraries.items():
        logging.getLogger(name).setLevel(previous)


async def test_slack_calls_format_debug_lines_only_when_log_level_asks(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    formatted: list[str] = []
    monkeypatch.setattr(
        logging.getLogger(SLACK_SDK_LOGGER),
        "debug",
        lambda message, *_, **__: formatted.append(message),
    )
    slack = web.Application()

    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "ts": "1.000100"})

    slack.router.add_post("/api/chat.postMessage", answer)
    server = TestServer(slack)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = build_web_client(
                token=BOT_TOKEN, base_url=str(server.make_url("/api/")), session=session
            )
            for level in ("INFO", "DEBUG"):
                configure_logging(Settings(**REQUIRED, log_level=level), io.StringIO())
                await client.api_call("chat.postMessage", json={"channel": "C1", "text": level})
                if level == "INFO":
                    assert formatted == []
    finally:
        await server.close()
    assert any("chat.postMessage" in line and "DEBUG" in line for line in formatted)
    assert not any(BOT_TOKEN in line for line in formatted)
