"""A fake Slack Web API on 127.0.0.1 that records what the bot sends.

Tests drive the bot through its real HTTP surface, so they need something that answers like
slack.com and remembers what it was asked: which messages landed in which thread, what was
edited, what went to ``response_url``, which modals opened. The fake also produces the failures
Slack really produces (429 with ``Retry-After``, 5xx, ``ok: false``), so retry and error paths can
be tested without patching our own code.

Everything lives on the instance (several fakes can run side by side), the port is always
chosen by the OS, and the request parsing follows how ``AsyncWebClient`` actually sends
arguments: JSON bodies for ``chat.postMessage``/``chat.update``/``views.*``, query-string POSTs
for most others and GETs for ``*.info`` (see ``/work/shared/slack/SLACK_API.md`` §5).
"""

import asyncio
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from aiohttp import BodyPartReader, web

__all__ = [
    "Ephemeral",
    "FakeSlack",
    "FileDownload",
    "Message",
    "MessageVersion",
    "ResponseUrlPost",
    "SlackCall",
]

# Scopes the fake reports in x-oauth-scopes, as a freshly installed argo-chatops app would have.
SCOPES = (
    "commands",
    "chat:write",
    "chat:write.public",
    "files:read",
    "files:write",
    "reactions:write",
    "app_mentions:read",
    "channels:history",
    "groups:history",
)
BOT_ID = "B0001"
APP_ID = "A0001"
# First message ts is 1764864000.000100 (2025-12-04); every later ts is strictly larger.
_TS_BASE_SECONDS = 1_764_864_000
_TS_STEP_MICROS = 100
_CHUNK = 64 * 1024
# Slack lets a response_url be used five times (SLACK_API.md §2).
RESPONSE_URL_MAX_USES = 5

_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Slack</title></head>
<body><h1>Sign in to Fake</h1>
<form action="/signin" method="post"><input type="email" name="email">
<button type="submit">Sign In</button></form></body></html>
"""


@dataclass(frozen=True)
class SlackCall:
    """One Web API request as the fake saw it, kept so tests can assert on what was sent."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]  # header names lower-cased
    status: int
    http_method: str = "POST"
    response: dict[str, Any] | None = None  # the JSON answered; None for plain-text faults
    at: float = field(default_factory=time.time)  # when the fake answered (benchmarks)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.response is None else self.response.get("error")


@dataclass(frozen=True)
class MessageVersion:
    """A message's content before a ``chat.update`` replaced it."""

    text: str | None
    blocks: list[dict[str, Any]] | None
    metadata: dict[str, Any] | None
    replaced_at: float  # time.time() of the update


@dataclass
class Message:
    """A message in a channel: posted by the bot, or added by a test as a user's message."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None  # None for a top-level message
    user: str = ""
    bot_id: str | None = None
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    reply_broadcast: bool = False
    history: list[MessageVersion] = field(default_factory=list)  # previous versions, oldest first
    deleted: bool = False

    @property
    def edited(self) -> bool:
        return bool(self.history)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_api(self) -> dict[str, Any]:
        """The message as Slack's API and events show it."""
        out: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text or ""}
        if self.user:
            out["user"] = self.user
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = APP_ID
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.metadata:
            out["metadata"] = self.metadata
        if self.files:
            out["files"] = self.files
            out["upload"] = False
        if self.history:
            out["edited"] = {"user": self.user, "ts": f"{self.history[-1].replaced_at:.6f}"}
        return out


@dataclass(frozen=True)
class Ephemeral:
    """A ``chat.postEphemeral`` message: seen by one user only and never stored in the channel."""

    channel: str
    user: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    message_ts: str


@dataclass(frozen=True)
class ResponseUrlPost:
    """A JSON body POSTed to one of this fake's ``response_url`` endpoints."""

    url_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class FileDownload:
    """A GET of a file URL; ``authorized`` tells whether it carried the bot token."""

    file_id: str
    name: str
    authorized: bool
    headers: dict[str, str]


ChunkFactory = Callable[[], Iterable[bytes] | AsyncIterable[bytes]]


@dataclass
class _Blob:
    """File content kept as bytes, a path or a chunk factory, so large files need not sit in RAM."""

    size: int
    content: bytes | None = None
    path: Path | None = None
    factory: ChunkFactory | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.content is not None:
            for start in range(0, len(self.content), _CHUNK):
                yield self.content[start : start + _CHUNK]
        elif self.path is not None:
            handle = await asyncio.to_thread(self.path.open, "rb")
            try:
                while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                    yield chunk
            finally:
                await asyncio.to_thread(handle.close)
        elif self.factory is not None:
            produced = self.factory()
            if isinstance(produced, AsyncIterable):
                async for chunk in produced:
                    yield chunk
            else:
                for chunk in produced:
                    yield chunk


@dataclass
class _StoredFile:
    info: dict[str, Any]
    blob: _Blob


@dataclass
class _Fault:
    status: int
    error: str | None
    retry_after: int | None
    remaining: int


@dataclass
class _PendingUpload:
    file_id: str
    filename: str
    length: int
    data: bytes | None = None


class _SlackError(Exception):
    """Raised by method handlers; becomes HTTP 200 ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class FakeSlack:
    """Slack Web API + response_url + file hosting on one local aiohttp server.

    Start it, point the bot's ``SLACK_API_URL`` at :attr:`api_url` and ``SLACK_FILE_HOSTS`` at
    :attr:`host`, then assert on :attr:`calls`, :attr:`messages`, :attr:`ephemerals`,
    :attr:`responses`, :attr:`views` and :attr:`reactions`.
    """

    def __init__(
        self, *, bot_token: str, bot_user_id: str = "UBOT", team_id: str = "T0001"
    ) -> None:
        self.bot_token = bot_token
        self.bot_user_id = bot_user_id
        self.team_id = team_id
        self.latency: float = 0.0
        self.calls: list[SlackCall] = []
        self.messages: dict[str, list[Message]] = defaultdict(list)
        self._by_ts: dict[tuple[str, str], Message] = {}  # (channel, ts): no scan per lookup
        self.ephemerals: list[Ephemeral] = []
        self.responses: list[ResponseUrlPost] = []
        self.views: list[dict[str, Any]] = []
        self.reactions: list[tuple[str, str, str]] = []
        self.downloads: list[FileDownload] = []
        # Names conversations.info reports; tests may fill it. Unknown ids get "channel-<id>".
        self.channel_names: dict[str, str] = {}
        self._ts_counter = 0
        self._id_counter = 0
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._files: dict[str, _StoredFile] = {}
        self._uploads: dict[str, _PendingUpload] = {}
        self._response_uses: dict[str, int] = {}
        self._used_triggers: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._methods: dict[str, Handler] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.replies": self._conversations_replies,
            "conversations.join": self._conversations_join,
            "files.info": self._files_info,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Listen on 127.0.0.1 with an OS-chosen port; return the base URL."""
        if self._runner is not None:
            raise RuntimeError("FakeSlack is already started")
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/api/{method}", self._handle_api)
        app.router.add_post("/api/{method}", self._handle_api)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        app.router.add_get("/files/{file_id}/{name}", self._handle_file)
        app.router.add_get("/files/{file_id}/download/{name}", self._handle_file)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._url = f"http://{host}:{port}"
        return self._url

    async def close(self) -> None:
        """Stop listening; recorded state stays readable."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("FakeSlack is not started")
        return self._url

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    # ------------------------------------------------------------------ queries

    def calls_to(self, method: str) -> list[SlackCall]:
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The thread root (if known) followed by its replies, in posting order."""
        return [m for m in self.messages.get(channel, []) if thread_ts in (m.ts, m.thread_ts)]

    def find_message(self, channel: str, ts: str) -> Message | None:
        return self._by_ts.get((channel, ts))

    def _keep(self, message: Message) -> Message:
        self.messages[message.channel].append(message)
        self._by_ts[(message.channel, message.ts)] = message
        return message

    def response_url(self) -> str:
        """A fresh URL on this server to put in a slash command's ``response_url``."""
        url_id = uuid.uuid4().hex
        self._response_uses[url_id] = 0
        return f"{self.url}/response/{url_id}"

    def trigger_id(self) -> str:
        """A fresh trigger id shaped like Slack's; each can open one view."""
        return f"{self._next_id_number()}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
        *,
        interval: float = 0.02,
    ) -> None:
        """Poll until ``predicate()`` is true; on timeout fail with a dump of what was recorded."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() >= deadline:
                raise AssertionError(
                    f"condition not met within {timeout} s; fake Slack recorded:\n{self.dump()}"
                )
            await asyncio.sleep(interval)

    def dump(self) -> str:
        """A readable summary of everything recorded, for assertion messages."""
        lines = [f"calls ({len(self.calls)}):"]
        for n, call in enumerate(self.calls, 1):
            outcome = "ok" if call.ok else (call.error or f"HTTP {call.status}")
            lines.append(
                f"  #{n} {call.http_method} {call.method} -> {call.status} {outcome} "
                f"{_short(call.args)}"
            )
        lines.append("messages:")
        for channel, messages in self.messages.items():
            for m in messages:
                flags = "".join(
                    [" (deleted)" if m.deleted else "", f" (edited x{len(m.history)})" * m.edited]
                )
                where = f"thread {m.thread_ts}" if m.is_reply else "top"
                lines.append(
                    f"  {channel} {m.ts} [{where}] by {m.user}{flags}: {_short(m.text or '')}"
                    + (f" blocks={_short(m.blocks)}" if m.blocks else "")
                )
        lines.append(f"ephemerals ({len(self.ephemerals)}):")
        lines.extend(
            f"  {e.channel} to {e.user}: {_short(e.text or e.blocks)}" for e in self.ephemerals
        )
        lines.append(f"response_url posts ({len(self.responses)}):")
        lines.extend(f"  {r.url_id}: {_short(r.body)}" for r in self.responses)
        lines.append(f"views ({len(self.views)}), reactions {self.reactions}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self, method: str, *, status: int = 500, times: int = 1, retry_after: int | None = None
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail at the HTTP level.

        429 answers ``{"ok": false, "error": "ratelimited"}`` with ``Retry-After`` (default 1 s);
        any other status answers a plain-text body, as Slack's edge does for 5xx.
        """
        self._faults[method].append(_Fault(status, None, retry_after, times))

    def clear_faults(self) -> None:
        """Forget every fault still queued: the outage is over."""
        self._faults.clear()

    def error_next(self, method: str, error: str, times: int = 1) -> None:
        """Make the next ``times`` calls to ``method`` answer HTTP 200 ``ok: false, error``."""
        self._faults[method].append(_Fault(200, error, None, times))

    # ------------------------------------------------------------------ seeding

    def add_user_message(
        self,
        channel: str,
        text: str = "",
        *,
        user: str = "U1",
        files: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Store a message a person posted (e.g. a file drop) so the bot can thread onto it."""
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            user=user,
            files=list(files or []),
        )
        return self._keep(message)

    def add_file(
        self,
        name: str,
        content: bytes,
        *,
        mimetype: str = "text/csv",
        filetype: str = "csv",
        user: str = "U1",
        title: str | None = None,
    ) -> dict[str, Any]:
        """Host ``content`` and return its Slack file object (URLs point at this server)."""
        return self._store_file(
            name, _Blob(len(content), content=content), mimetype, filetype, user, title
        )

    def add_file_path(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        mimetype: str = "text/csv",
        filetype: str = "csv",
        user: str = "U1",
        title: str | None = None,
    ) -> dict[str, Any]:
        """Host a file from disk; it is streamed on download, never read whole."""
        path = Path(path)
        blob = _Blob(path.stat().st_size, path=path)
        return self._store_file(name or path.name, blob, mimetype, filetype, user, title)

    def add_file_stream(
        self,
        name: str,
        size: int,
        chunk_factory: ChunkFactory,
        *,
        mimetype: str = "text/csv",
        filetype: str = "csv",
        user: str = "U1",
        title: str | None = None,
    ) -> dict[str, Any]:
        """Host a generated file: ``chunk_factory()`` must yield exactly ``size`` bytes per call."""
        blob = _Blob(size, factory=chunk_factory)
        return self._store_file(name, blob, mimetype, filetype, user, title)

    def file_bytes(self, file_id: str) -> bytes | None:
        """Bytes of a file the bot uploaded (files.getUploadURLExternal flow) or added as bytes."""
        stored = self._files.get(file_id)
        return None if stored is None else stored.blob.content

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        await self._delay()
        method = request.match_info["method"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        args, parse_error = await _read_args(request)

        def record(status: int, body: dict[str, Any] | None) -> None:
            self.calls.append(SlackCall(method, args, headers, status, request.method, body))

        fault = self._take_fault(method)
        if fault is not None:
            if fault.error is not None:
                body = {"ok": False, "error": fault.error}
                record(200, body)
                return web.json_response(body)
            if fault.status == 429:
                body = {"ok": False, "error": "ratelimited"}
                record(429, body)
                retry_after = 1 if fault.retry_after is None else fault.retry_after
                return web.json_response(
                    body, status=429, headers={"Retry-After": str(retry_after)}
                )
            record(fault.status, None)
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return web.Response(
                status=fault.status, text=f"fake Slack: injected HTTP {fault.status}", headers=extra
            )

        handler = self._methods.get(method)
        scope_headers = {"x-oauth-scopes": ",".join(SCOPES)}
        try:
            if handler is None:
                raise _SlackError("unknown_method")
            self._check_auth(headers.get("authorization"))
            if parse_error is not None:
                raise _SlackError(parse_error)
            body = {"ok": True, **handler(args)}
        except _SlackError as err:
            body = {"ok": False, "error": err.error, **err.extra}
            if err.error in ("not_authed", "invalid_auth", "unknown_method"):
                scope_headers = {}
        record(200, body)
        return web.json_response(body, headers=scope_headers)

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        await self._delay()
        url_id = request.match_info["url_id"]
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        uses = self._response_uses.get(url_id, 0)
        if uses >= RESPONSE_URL_MAX_USES:
            return web.Response(status=404, text="used_url")
        self._response_uses[url_id] = uses + 1
        self.responses.append(ResponseUrlPost(url_id, f"{self.url}/response/{url_id}", body))
        return web.Response(text="ok")

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        await self._delay()
        file_id = request.match_info["file_id"]
        name = request.match_info["name"]
        authorized = request.headers.get("Authorization") == f"Bearer {self.bot_token}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.downloads.append(FileDownload(file_id, name, authorized, headers))
        if not authorized:
            # Real Slack answers a login page with status 200, not 401 (SLACK_API.md §3).
            return web.Response(text=_LOGIN_PAGE, content_type="text/html")
        stored = self._files.get(file_id)
        if stored is None or stored.info["name"] != name:
            return web.Response(status=404, text="file not found")
        response = web.StreamResponse(
            headers={
                "Content-Type": stored.info["mimetype"],
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            }
        )
        response.content_length = stored.blob.size
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in stored.blob.chunks():
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """Step 2 of files_upload_v2: the upload URL itself is the credential (no token)."""
        await self._delay()
        pending = self._uploads.get(request.match_info["file_id"])
        if pending is None:
            return web.Response(status=404, text="upload not found")
        data = bytearray()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader) and part.filename is not None:
                    data.extend(await part.read())
                    break
        else:
            async for chunk in request.content.iter_chunked(_CHUNK):
                data.extend(chunk)
        pending.data = bytes(data)
        return web.Response(text=f"OK - {len(data)}")

    # ------------------------------------------------------------------ Web API methods

    def _api_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"args": args}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.test/",
            "team": "Fake",
            "user": "argo-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        text, blocks = _content(args)
        if text is None and blocks is None:
            raise _SlackError("no_text")
        _check_text(text, 40_000)
        _check_blocks(blocks, max_blocks=50)
        thread_ts = _opt_str(args, "thread_ts")
        if thread_ts is not None:
            root = self.find_message(channel, thread_ts)
            if root is None or root.is_reply:
                raise _SlackError("thread_not_found")
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            user=self.bot_user_id,
            bot_id=BOT_ID,
            metadata=_json_arg(args, "metadata", "invalid_metadata_format"),
            reply_broadcast=_flag(args.get("reply_broadcast")),
        )
        self._keep(message)
        return {"channel": channel, "ts": message.ts, "message": message.to_api()}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        message = self._own_message(channel, args.get("ts"), "cant_update_message")
        text, blocks = _content(args)
        if text is None and blocks is None:
            raise _SlackError("no_text")
        _check_text(text, 4_000)
        _check_blocks(blocks, max_blocks=50)
        metadata = _json_arg(args, "metadata", "invalid_metadata_format")
        message.history.append(
            MessageVersion(message.text, message.blocks, message.metadata, time.time())
        )
        # Slack keeps fields the update leaves out (an empty blocks list clears them).
        if text is not None:
            message.text = text
        if blocks is not None:
            message.blocks = blocks
        if metadata is not None:
            message.metadata = metadata
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text or "",
            "message": message.to_api(),
        }

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        message = self._own_message(channel, args.get("ts"), "cant_delete_message")
        message.deleted = True
        return {"channel": channel, "ts": message.ts}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        user = _opt_str(args, "user")
        if user is None:
            raise _SlackError("user_not_in_channel")
        text, blocks = _content(args)
        if text is None and blocks is None:
            raise _SlackError("no_text")
        _check_text(text, 40_000)
        _check_blocks(blocks, max_blocks=50)
        ts = self._next_ts()
        self.ephemerals.append(
            Ephemeral(channel, user, text, blocks, _opt_str(args, "thread_ts"), ts)
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args)
        ts = _opt_str(args, "message_ts")
        if ts is None or self.find_message(channel, ts) is None:
            raise _SlackError("message_not_found")
        return {
            "channel": channel,
            "permalink": f"https://fake.slack.test/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        reaction = self._reaction(args)
        if reaction in self.reactions:
            raise _SlackError("already_reacted")
        self.reactions.append(reaction)
        return {}

    def _reactions_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        reaction = self._reaction(args)
        if reaction not in self.reactions:
            raise _SlackError("no_reaction")
        self.reactions.remove(reaction)
        return {}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger_id = _opt_str(args, "trigger_id")
        if trigger_id is None:
            raise _SlackError("invalid_trigger_id")
        view = _view_arg(args)
        if trigger_id in self._used_triggers:
            raise _SlackError("exchanged_trigger_id")
        self._used_triggers.add(trigger_id)
        stored = self._complete_view(view, f"V{self._next_id_number():010d}")
        self.views.append({"trigger_id": trigger_id, "view": stored})
        return {"view": stored}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view = _view_arg(args)
        view_id = _opt_str(args, "view_id")
        external_id = _opt_str(args, "external_id")
        if view_id is None and external_id is None:
            raise _SlackError("invalid_arguments", response_metadata=_messages("view_id"))
        entry = next(
            (
                e
                for e in self.views
                if (view_id is not None and e["view"]["id"] == view_id)
                or (external_id is not None and e["view"].get("external_id") == external_id)
            ),
            None,
        )
        if entry is None:
            raise _SlackError("not_found")
        expected_hash = _opt_str(args, "hash")
        if expected_hash is not None and expected_hash != entry["view"]["hash"]:
            raise _SlackError("hash_conflict")
        entry.setdefault("history", []).append(entry["view"])
        entry["view"] = self._complete_view(view, entry["view"]["id"])
        return {"view": entry["view"]}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = _opt_str(args, "user")
        if user_id is None:
            raise _SlackError("user_not_found")
        name = f"user-{user_id}"
        return {
            "user": {
                "id": user_id,
                "team_id": self.team_id,
                "name": name,
                "real_name": name,
                "deleted": False,
                "is_bot": user_id == self.bot_user_id,
                "tz": "UTC",
                "profile": {"display_name": name, "real_name": name},
            }
        }

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel_object(_channel(args))}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """A thread, root first; message metadata only with `include_all_metadata`."""
        channel = _channel(args)
        ts = _opt_str(args, "ts")
        if ts is None or self.find_message(channel, ts) is None:
            raise _SlackError("thread_not_found")
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        messages = []
        for message in self.thread(channel, ts):
            if message.deleted:
                continue
            shown = message.to_api()
            if not with_metadata:
                shown.pop("metadata", None)
            messages.append(shown)
        return {"messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel_object(_channel(args))}

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = _opt_str(args, "file")
        stored = self._files.get(file_id or "")
        if stored is None:
            raise _SlackError("file_not_found")
        return {"file": stored.info, "comments": [], "response_metadata": {"next_cursor": ""}}

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = _opt_str(args, "filename")
        try:
            length = int(args["length"])
        except (KeyError, TypeError, ValueError):
            length = -1
        if filename is None or length < 0:
            raise _SlackError("invalid_arguments", response_metadata=_messages("filename/length"))
        file_id = f"F{self._next_id_number():010d}"
        self._uploads[file_id] = _PendingUpload(file_id, filename, length)
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        items = _json_arg(args, "files", "invalid_arguments")
        if not isinstance(items, list) or not items:
            raise _SlackError("invalid_arguments", response_metadata=_messages("files"))
        channels = [c for c in str(args.get("channels") or "").split(",") if c]
        if channel_id := _opt_str(args, "channel_id"):
            channels.insert(0, channel_id)
        thread_ts = _opt_str(args, "thread_ts")
        if thread_ts is not None and len(channels) != 1:
            raise _SlackError("invalid_arguments", response_metadata=_messages("channel_id"))
        for channel in channels:
            root = None if thread_ts is None else self.find_message(channel, thread_ts)
            if thread_ts is not None and (root is None or root.is_reply):
                raise _SlackError("thread_not_found")
        objects = []
        for item in items:
            pending = self._uploads.get(str(item.get("id"))) if isinstance(item, dict) else None
            if pending is None or pending.data is None:
                raise _SlackError("file_not_found")
            title = item.get("title") or pending.filename
            objects.append((pending, title))
        files = []
        for pending, title in objects:
            del self._uploads[pending.file_id]
            mimetype = "application/octet-stream"
            filetype = pending.filename.rpartition(".")[2] if "." in pending.filename else "binary"
            info = self._store_file(
                pending.filename,
                _Blob(len(pending.data or b""), content=pending.data),
                mimetype,
                filetype,
                self.bot_user_id,
                title,
                file_id=pending.file_id,
            )
            files.append(info)
        for channel in channels:
            self._keep(
                Message(
                    channel=channel,
                    ts=self._next_ts(),
                    text=_opt_str(args, "initial_comment") or "",
                    thread_ts=thread_ts,
                    user=self.bot_user_id,
                    bot_id=BOT_ID,
                    files=files,
                )
            )
        return {"files": [{"id": f["id"], "title": f["title"]} for f in files]}

    # ------------------------------------------------------------------ helpers

    async def _delay(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def _check_auth(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise _SlackError("not_authed")
        if authorization != f"Bearer {self.bot_token}":
            raise _SlackError("invalid_auth")

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    def _next_ts(self) -> str:
        self._ts_counter += 1
        micros = self._ts_counter * _TS_STEP_MICROS
        return f"{_TS_BASE_SECONDS + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id_number(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _own_message(self, channel: str, ts: Any, not_own_error: str) -> Message:
        message = None if ts is None else self.find_message(channel, str(ts))
        if message is None or message.deleted:
            raise _SlackError("message_not_found")
        if message.user != self.bot_user_id:
            raise _SlackError(not_own_error)
        return message

    def _reaction(self, args: dict[str, Any]) -> tuple[str, str, str]:
        channel = _channel(args)
        name = _opt_str(args, "name")
        if name is None:
            raise _SlackError("invalid_name")
        ts = _opt_str(args, "timestamp")
        message = None if ts is None else self.find_message(channel, ts)
        if message is None or message.deleted:
            raise _SlackError("message_not_found")
        return (channel, message.ts, name.strip(":"))

    def _complete_view(self, view: dict[str, Any], view_id: str) -> dict[str, Any]:
        return {
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            **view,
            "id": view_id,
            "team_id": self.team_id,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "root_view_id": view_id,
            "previous_view_id": None,
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
        }

    def _channel_object(self, channel: str) -> dict[str, Any]:
        private = channel.startswith("G")
        return {
            "id": channel,
            "name": self.channel_names.get(channel, f"channel-{channel.lower()}"),
            "is_channel": not private,
            "is_group": private,
            "is_private": private,
            "is_im": channel.startswith("D"),
            "is_archived": False,
            "is_member": True,
            "created": _TS_BASE_SECONDS,
            "context_team_id": self.team_id,
        }

    def _store_file(
        self,
        name: str,
        blob: _Blob,
        mimetype: str,
        filetype: str,
        user: str,
        title: str | None,
        *,
        file_id: str | None = None,
    ) -> dict[str, Any]:
        file_id = file_id or f"F{self._next_id_number():010d}"
        quoted = quote(name, safe="")  # a name may hold "/" or "..": keep it one path segment
        now = int(time.time())
        info: dict[str, Any] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title if title is not None else name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": filetype.upper(),
            "user": user,
            "user_team": self.team_id,
            "mode": "hosted",
            "editable": False,
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "size": blob.size,
            "url_private": f"{self.url}/files/{file_id}/{quoted}",
            "url_private_download": f"{self.url}/files/{file_id}/download/{quoted}",
            "permalink": f"https://fake.slack.test/files/{user}/{file_id}/{quoted}",
            "permalink_public": f"https://slack-files.fake.slack.test/{self.team_id}-{file_id}",
        }
        self._files[file_id] = _StoredFile(info, blob)
        return dict(info)


# ---------------------------------------------------------------------- request parsing


async def _read_args(request: web.Request) -> tuple[dict[str, Any], str | None]:
    """Merge query string, form body and JSON body, later sources winning, like Slack does."""
    args: dict[str, Any] = dict(request.query)
    error: str | None = None
    if request.content_type == "application/json":
        raw = await request.read()
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                args.update(parsed)
            else:
                error = "invalid_json"
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            args[key] = value if isinstance(value, str) else getattr(value, "filename", "")
    return args, error


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _channel(args: dict[str, Any]) -> str:
    channel = _opt_str(args, "channel")
    if channel is None:
        raise _SlackError("channel_not_found")
    return channel


def _json_arg(args: dict[str, Any], key: str, error: str) -> Any:
    """Arguments sent as form/query fields carry JSON as a string; JSON bodies carry it parsed."""
    value = args.get(key)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _SlackError(error) from None
    return value


def _content(args: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    text = args.get("text")
    text = None if text is None or text == "" else str(text)
    blocks = _json_arg(args, "blocks", "invalid_blocks_format")
    if blocks is not None and not isinstance(blocks, list):
        raise _SlackError("invalid_blocks_format")
    if blocks is not None and not blocks and text is None:
        return None, None
    return text, blocks


def _view_arg(args: dict[str, Any]) -> dict[str, Any]:
    view = _json_arg(args, "view", "invalid_arguments")
    if not isinstance(view, dict):
        raise _SlackError("invalid_arguments", response_metadata=_messages("view"))
    problems = []
    if view.get("type") not in ("modal", "home"):
        problems.append("[ERROR] must be a valid enum value [json-pointer:/view/type]")
    if view.get("type") == "modal":
        title = view.get("title")
        if not isinstance(title, dict) or not 0 < len(str(title.get("text", ""))) <= 24:
            problems.append("[ERROR] must be 1-24 characters [json-pointer:/view/title/text]")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > 100:
        problems.append("[ERROR] must be a list of at most 100 items [json-pointer:/view/blocks]")
    if len(str(view.get("private_metadata", ""))) > 3000:
        problems.append(
            "[ERROR] must be at most 3000 characters [json-pointer:/view/private_metadata]"
        )
    if problems:
        raise _SlackError("invalid_arguments", response_metadata={"messages": problems})
    return view


def _messages(field_name: str) -> dict[str, list[str]]:
    return {"messages": [f"[ERROR] missing required field: {field_name}"]}


def _check_text(text: str | None, limit: int) -> None:
    if text is not None and len(text) > limit:
        raise _SlackError("msg_too_long")


def _check_blocks(blocks: list[dict[str, Any]] | None, *, max_blocks: int) -> None:
    """A light Block Kit check covering the limits a result message is likely to hit."""
    if blocks is None:
        return
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for n, block in enumerate(blocks):
        problems.extend(_block_problems(block, f"/blocks/{n}", block_ids))
    if problems:
        raise _SlackError(
            "invalid_blocks", errors=problems, response_metadata={"messages": problems}
        )


def _block_problems(block: Any, pointer: str, block_ids: set[str]) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"[ERROR] missing required field: type [json-pointer:{pointer}]"]
    problems: list[str] = []
    kind = block["type"]
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or len(block_id) > 255:
            problems.append(
                f"[ERROR] block_id must be at most 255 characters [json-pointer:{pointer}]"
            )
        elif block_id in block_ids:
            problems.append(f"[ERROR] duplicate block_id [json-pointer:{pointer}/block_id]")
        else:
            block_ids.add(block_id)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(f"[ERROR] section needs text or fields [json-pointer:{pointer}]")
        if "text" in block:
            problems.extend(_text_problems(block["text"], 3000, f"{pointer}/text"))
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            problems.append(
                f"[ERROR] no more than 10 items allowed [json-pointer:{pointer}/fields]"
            )
        else:
            for i, item in enumerate(fields):
                problems.extend(_text_problems(item, 2000, f"{pointer}/fields/{i}"))
        if isinstance(block.get("accessory"), dict):
            problems.extend(_element_problems(block["accessory"], f"{pointer}/accessory"))
    elif kind == "header":
        problems.extend(_text_problems(block.get("text"), 150, f"{pointer}/text", plain=True))
    elif kind in ("actions", "context"):
        limit = 25 if kind == "actions" else 10
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= limit:
            problems.append(f"[ERROR] must have 1-{limit} items [json-pointer:{pointer}/elements]")
        else:
            for i, element in enumerate(elements):
                if kind == "actions":
                    problems.extend(_element_problems(element, f"{pointer}/elements/{i}"))
                elif isinstance(element, dict) and element.get("type") in ("mrkdwn", "plain_text"):
                    problems.extend(_text_problems(element, 3000, f"{pointer}/elements/{i}"))
    elif kind == "markdown" and len(str(block.get("text", ""))) > 12000:
        problems.append(f"[ERROR] must be at most 12000 characters [json-pointer:{pointer}/text]")
    return problems


def _text_problems(obj: Any, limit: int, pointer: str, *, plain: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [
            f"[ERROR] must be a text object of type {'/'.join(allowed)} [json-pointer:{pointer}]"
        ]
    text = obj.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= limit:
        return [f"[ERROR] must be 1-{limit} characters [json-pointer:{pointer}/text]"]
    return []


def _element_problems(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"[ERROR] missing required field: type [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(str(element.get("action_id", ""))) > 255:
        problems.append(
            f"[ERROR] must be at most 255 characters [json-pointer:{pointer}/action_id]"
        )
    if element["type"] == "button":
        problems.extend(_text_problems(element.get("text"), 75, f"{pointer}/text", plain=True))
        if len(str(element.get("value", ""))) > 2000:
            problems.append(
                f"[ERROR] must be at most 2000 characters [json-pointer:{pointer}/value]"
            )
        if len(str(element.get("url", ""))) > 3000:
            problems.append(f"[ERROR] must be at most 3000 characters [json-pointer:{pointer}/url]")
    return problems


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
