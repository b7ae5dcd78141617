"""Structured logs: one JSON object per line, tagged with the run and the Slack request.

The tags live in context variables, so work spawned while a Slack request or a run is being
handled carries them along (asyncio copies the context into every task it creates). Every
line passes through a redactor that knows the configured secrets, so a token that slips into
a message, an exception or an `extra` field never reaches the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import IO, Any

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.database import DatabaseUrl
from bot.settings import Settings

REDACTED = "[redacted]"
# Shorter "secrets" would blank out ordinary words; such values are refused by operators anyway.
MIN_SECRET_LENGTH = 6

# Per-task tags (contextvars are copied into each new task, never shared between them).
_RUN: ContextVar[str | None] = ContextVar("argo_chatops_run", default=None)
_SLACK_REQUEST: ContextVar[str | None] = ContextVar("argo_chatops_slack_request", default=None)

# Credentials that have a recognisable shape, whether or not this replica configured them.
_SHAPES = (
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), REDACTED),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(?i)(X-Amz-Signature=)[0-9a-f]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(://[^/\s:@]+:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)


def bind_run(name: str) -> None:
    """Tag every later log line of the current task (and tasks it starts) with this run."""
    _RUN.set(name)


def bind_slack_request(request_id: str | None) -> None:
    _SLACK_REQUEST.set(request_id)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: all SecretStr fields and the database password.

    Found by type rather than listed by name, so a secret setting added later is covered.
    """
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
    try:
        password = DatabaseUrl.parse(settings.database_url).password
    except ValueError:  # a URL that names no database we know has no password to hide
        password = None
    if password:
        found.append(str(password))
    return found


class Redactor:
    """Replaces known secret values, and anything shaped like a credential, in a string."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                values.add(secret)
                values.add(json.dumps(secret)[1:-1])  # as it appears inside a JSON string
        # Longest first, so a secret containing another one is replaced whole.
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text


class ContextFilter(logging.Filter):
    """Adds `run` and `slack_request_id` from the context unless the call passed its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run", None) is None and (run := _RUN.get()) is not None:
            record.run = run
        request_id = _SLACK_REQUEST.get()
        if getattr(record, "slack_request_id", None) is None and request_id is not None:
            record.slack_request_id = request_id
        return True


class RedactingJsonFormatter(JsonFormatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            json_ensure_ascii=False,
        )
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class RedactingTextFormatter(logging.Formatter):
    """For people reading a terminal (`LOG_FORMAT=text`); the same tags and redaction."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [
            f"{key}={value}"
            for key in ("run", "slack_request_id")
            if (value := getattr(record, key, None)) is not None
        ]
        return self._redact(text + (" [" + " ".join(tags) + "]" if tags else ""))


def build_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """The one log handler of the process: stderr, one event per line, secrets redacted."""
    redactor = Redactor(secret_values(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        RedactingJsonFormatter(redactor)
        if settings.log_format == "json"
        else RedactingTextFormatter(redactor)
    )
    handler.addFilter(ContextFilter())
    return handler


# The loggers the app factory gives slack_sdk's clients and Bolt. Both test `logger.level <=
# DEBUG`, the logger's own level, before formatting a debug line of every request and response
# (headers and whole bodies), and an unset level (0) passes that test even when debug output
# is off: ~20 µs of every Slack call, measured. They get LOG_LEVEL set on them explicitly.
SLACK_SDK_LOGGER = "slack_sdk"
BOLT_LOGGER = "slack_bolt"
LEVEL_TESTING_LOGGERS = (SLACK_SDK_LOGGER, BOLT_LOGGER)


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger through the handler at LOG_LEVEL (called by the CLI only)."""
    handler = build_handler(settings, stream)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in LEVEL_TESTING_LOGGERS:
        logging.getLogger(name).setLevel(settings.log_level.upper())
    return handler


def slack_request_id(body: dict[str, Any]) -> str | None:
    """Slack's own id of an incoming request: the event id, else the trigger id."""
    for key in ("event_id", "trigger_id"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class TaggingApp(AsyncApp):
    """A Bolt app that tags everything a Slack request causes with its id, before any listener.

    Whichever transport brought the request (HTTP or Socket Mode), it reaches `async_dispatch`.
    Not a Bolt middleware: each of those costs Bolt one more set of listener arguments built
    per request, on the path whose acknowledgement Slack times.
    """

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        bind_slack_request(slack_request_id(req.body))
        return await super().async_dispatch(req)
