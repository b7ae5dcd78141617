"""`POST /hooks/argo`: a workflow's exit hook asks the bot to look at it again.

The body is a hint and never trusted: it only names the workflow, whose real status the
bot reads from Argo. The token is checked first, in constant time.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web

from bot.audit import Audit, Outcome
from bot.runs import RunService
from workflows.manifest import hook_token_matches

logger = logging.getLogger(__name__)

MAX_HOOK_BODY_BYTES = 64 * 1024
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class HookHandler:
    def __init__(
        self, *, runs: RunService, webhook_secret: str, audit: Audit | None = None
    ) -> None:
        self._runs = runs
        self._secret = webhook_secret
        self._audit = audit

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_HOOK_BODY_BYTES:
            return _answer(413, "hook body too large")
        raw = await request.content.read(MAX_HOOK_BODY_BYTES + 1)
        if len(raw) > MAX_HOOK_BODY_BYTES:
            return _answer(413, "hook body too large")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: `[[[[…` nested too deeply
            return _answer(400, "hook body must be JSON")
        if not isinstance(body, dict):
            return _answer(400, "hook body must be a JSON object")
        name, namespace = body.get("name"), body.get("namespace")
        if not _is_name(name) or not _is_name(namespace):
            return _answer(400, "hook body must name the workflow: name and namespace")

        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hook_token_matches(
            self._secret, namespace, name, token.strip()
        ):
            self._record("denied", name, "bad token")
            return _answer(401, "invalid hook token")

        if await self._runs.run_namespace(name) != namespace:
            self._record("invalid", name, "unknown workflow")
            return _answer(404, "unknown workflow")
        self._runs.follow_hook(name)
        self._record("ok", name, "accepted")
        return _answer(202, "accepted")

    def _record(self, outcome: Outcome, name: str, detail: str) -> None:
        if self._audit is not None:
            self._audit.record("hook", outcome, target=name, detail=detail)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(_K8S_NAME.match(value))


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status)
