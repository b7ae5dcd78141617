"""The door of `POST /slack/events`: Slack's signature and 5-minute window, on the raw bytes.

Bolt checks the signature too, but only after it has decoded and parsed the body, and a
forged request with a non-numeric timestamp, bytes that are not UTF-8, an unknown charset, a
non-ASCII signature or a `payload` that is not JSON made it answer 500. Here every such
request is a plain 401 before anything is decoded; what Bolt receives is known to come from
Slack (and it verifies it once more).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest

logger = logging.getLogger(__name__)

MAX_CLOCK_SKEW_SECONDS = 300  # Slack's replay window: older or newer requests are refused
_MAX_TIMESTAMP_DIGITS = 12
_SIGNATURE_LENGTH = len("v0=") + 64


class SlackGate:
    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret.encode()
        self._clock = clock

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """True only for a body signed with our secret within the last five minutes."""
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        signature = headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return False
        if len(timestamp) > _MAX_TIMESTAMP_DIGITS or len(signature) != _SIGNATURE_LENGTH:
            return False
        if abs(self._clock() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return False
        base = b"v0:" + timestamp.encode() + b":" + raw
        expected = "v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))

    async def bolt_request(self, request: web.Request) -> AsyncBoltRequest | web.Response:
        """The request for Bolt, or the answer to a request that must not reach it."""
        raw = await request.read()  # over the app's client_max_size: 413
        if not self.verify(raw, request.headers):
            if _is_ssl_check(raw):
                return web.Response(status=200)  # Slack's certificate probe: nothing to do
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            return AsyncBoltRequest(
                body=raw.decode("utf-8"),
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
        except Exception:  # signed, yet not UTF-8, not JSON, or JSON of another shape (`null`)
            logger.exception("a signed Slack request could not be parsed")
            return web.json_response({"error": "malformed request"}, status=400)


def _is_ssl_check(raw: bytes) -> bool:
    """Slack's `ssl_check=1` probe (Bolt answers it 200 without a signature too)."""
    if len(raw) > 4096:
        return False
    return parse_qs(raw.decode("utf-8", "replace")).get("ssl_check") == ["1"]
