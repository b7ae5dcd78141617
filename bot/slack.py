"""Posting to Slack: the Web API client and response URLs, behind one small adapter."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry import HttpRequest as RetryHttpRequest
from slack_sdk.http_retry import HttpResponse as RetryHttpResponse
from slack_sdk.http_retry import RetryState
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.logging_setup import SLACK_SDK_LOGGER
from bot.messages import SlackMessage

logger = logging.getLogger(__name__)


class SlackError(Exception):
    """Slack refused a call or could not be reached (the message never names the token).

    `transient`: Slack was down, overloaded or unreachable even after the client's retries,
    so the same call may well work later; otherwise Slack refused it for a reason.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# Error codes Slack answers when the problem is on its side or momentary.
TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def _is_transient(code: str) -> bool:
    return code in TRANSIENT_SLACK_ERRORS or code.startswith(("HTTP 5", "HTTP 429"))


def slack_error_code(error: SlackApiError) -> str:
    """Slack's error code (`channel_not_found`), or the HTTP status when the body is not JSON."""
    data = getattr(error.response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"HTTP {getattr(error.response, 'status_code', '?')}"


def build_web_client(
    *, token: str, base_url: str, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    """The Web API client, with slack-sdk's retries for rate limits, 5xx and dropped links."""
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        session=session,
        logger=logging.getLogger(SLACK_SDK_LOGGER),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackMessenger:
    """Everything the bot posts: thread roots, thread replies, edits, private answers.

    Methods that take a JSON body (`chat.postMessage`, `chat.update`, ...: every announcement
    and thread-root edit) are posted straight through the shared session with the client's
    token, base URL and retry handlers; slack_sdk's `api_call` around the same request cost
    ~0.1 ms of CPU more per call, measured. The rest goes through the client.
    """

    def __init__(self, client: AsyncWebClient, session: aiohttp.ClientSession) -> None:
        self.client = client
        self._session = session
        self._api_url = client.base_url
        self._headers = {
            "Authorization": f"Bearer {client.token}",
            "Content-Type": "application/json; charset=utf-8",
        }
        self._timeout = aiohttp.ClientTimeout(total=client.timeout)

    async def post(
        self,
        channel: str,
        message: SlackMessage,
        *,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        response = await self._call(
            "chat.postMessage",
            channel=channel,
            text=message.text,
            blocks=message.blocks or None,
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    async def thread_metadata(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The message metadata of every message in a thread (conversations.replies)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            with _as_slack_error("conversations.replies"):
                response = await self.client.conversations_replies(
                    channel=channel,
                    ts=thread_ts,
                    include_all_metadata=True,
                    limit=200,
                    cursor=cursor,
                )
            for message in response.get("messages") or []:
                if isinstance(message.get("metadata"), dict):
                    found.append(message["metadata"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return found

    async def update(self, channel: str, ts: str, message: SlackMessage) -> None:
        await self._call(
            "chat.update", channel=channel, ts=ts, text=message.text, blocks=message.blocks or None
        )

    async def delete(self, channel: str, ts: str) -> None:
        await self._call("chat.delete", channel=channel, ts=ts)

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """views.open: the trigger id lives about 3 s and opens one view."""
        await self._call("views.open", trigger_id=trigger_id, view=view)

    async def file_info(self, file_id: str) -> dict[str, Any]:
        """files.info (a GET, as Slack wants it): the full object of a Slack Connect share."""
        try:
            response = await self.client.files_info(file=file_id)
        except SlackApiError as error:
            raise SlackError(f"Slack files.info failed: {slack_error_code(error)}") from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SlackError(f"Slack files.info unreachable: {error.__class__.__name__}") from error
        found = response.get("file")
        return dict(found) if isinstance(found, dict) else {}

    async def tell_user(
        self,
        *,
        user_id: str,
        channel_id: str,
        text: str,
        response_url: str | None,
        blocks: list[dict] | None = None,
    ) -> None:
        """A private answer: through the command's response_url, else an ephemeral message."""
        if response_url:
            webhook = AsyncWebhookClient(
                response_url,
                session=self._session,
                timeout=10,
                logger=logging.getLogger(SLACK_SDK_LOGGER),
            )
            try:
                result = await webhook.send(
                    text=text, blocks=blocks, response_type="ephemeral", replace_original=True
                )
                if result.status_code == 200:
                    return
                logger.warning("response_url answered HTTP %s", result.status_code)
            except (aiohttp.ClientError, TimeoutError):
                logger.warning("response_url unreachable; falling back to an ephemeral message")
        await self._call(
            "chat.postEphemeral", channel=channel_id, user=user_id, text=text, blocks=blocks
        )

    async def ephemeral(
        self, channel: str, user_id: str, message: SlackMessage, *, thread_ts: str | None = None
    ) -> None:
        """A message only `user_id` sees, e.g. the answer to a button, in the button's thread."""
        await self._call(
            "chat.postEphemeral",
            channel=channel,
            user=user_id,
            text=message.text,
            blocks=message.blocks or None,
            thread_ts=thread_ts,
        )

    async def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message (a run's thread root), or None when Slack gives none."""
        try:
            response = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
        except (SlackApiError, aiohttp.ClientError, TimeoutError):
            logger.warning("no permalink for a message in %s", channel, exc_info=True)
            return None
        link = response.get("permalink")
        return link if isinstance(link, str) else None

    async def upload(
        self,
        channel: str,
        *,
        thread_ts: str | None,
        filename: str,
        content: bytes,
        title: str,
        comment: str | None = None,
    ) -> None:
        """Share a file in a thread: files.getUploadURLExternal, the upload, then
        files.completeUploadExternal (slack-sdk's files_upload_v2)."""
        try:
            await self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                filename=filename,
                content=content,
                title=title,
                initial_comment=comment,
            )
        except SlackApiError as error:
            raise SlackError(f"Slack file upload failed: {slack_error_code(error)}") from error
        except SlackRequestError as error:
            raise SlackError("Slack file upload failed: the upload URL refused the file") from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SlackError(
                f"Slack file upload unreachable: {error.__class__.__name__}"
            ) from error

    async def _call(self, method: str, **arguments: object) -> dict[str, Any]:
        """POST a JSON-body Web API method; Slack's `ok: false` and failures as SlackError.

        Retries are the client's handlers (dropped links, 429 after its Retry-After, 5xx),
        asked in order as slack_sdk asks them; an answer that is `ok` skips them.
        """
        url = self._api_url + method
        body = json.dumps({k: v for k, v in arguments.items() if v is not None}).encode()
        state = RetryState()
        while True:
            state.next_attempt_requested = False
            answer: RetryHttpResponse | None = None
            failure: Exception | None = None
            data: dict[str, Any] = {}
            try:
                async with self._session.post(
                    url, data=body, headers=self._headers, timeout=self._timeout
                ) as response:
                    raw = await response.read()
                    data = _json_object(raw)
                    if response.status == 200 and data.get("ok") is True:
                        return data
                    answer = RetryHttpResponse(
                        status_code=response.status, headers=dict(response.headers), body=data
                    )
            except (aiohttp.ClientError, TimeoutError) as error:
                failure = error
            request = RetryHttpRequest(method="POST", url=url, headers=self._headers, data=body)
            if await self._retry(state, request, answer, failure):
                continue
            if failure is not None:
                raise _unreachable(method, failure) from failure
            assert answer is not None
            raise _refused(method, str(data.get("error") or f"HTTP {answer.status_code}"))

    async def _retry(
        self,
        state: RetryState,
        request: RetryHttpRequest,
        answer: RetryHttpResponse | None,
        failure: Exception | None,
    ) -> bool:
        """Whether a handler takes the failed attempt (it waits before saying so)."""
        for handler in self.client.retry_handlers:
            if await handler.can_retry_async(
                state=state, request=request, response=answer, error=failure
            ):
                await handler.prepare_for_next_attempt_async(
                    state=state, request=request, response=answer, error=failure
                )
                return state.next_attempt_requested
        return False


def _json_object(raw: bytes) -> dict[str, Any]:
    """A Web API answer's JSON object, or {} for anything else (an HTML error page, ...)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@contextmanager
def _as_slack_error(method: str) -> Iterator[None]:
    """Slack's refusals and network failures as SlackError, saying whether to try later."""
    try:
        yield
    except SlackApiError as error:
        raise _refused(method, slack_error_code(error)) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise _unreachable(method, error) from error


def _refused(method: str, code: str) -> SlackError:
    return SlackError(f"Slack {method} failed: {code}", transient=_is_transient(code))


def _unreachable(method: str, error: BaseException) -> SlackError:
    return SlackError(f"Slack {method} unreachable: {error.__class__.__name__}", transient=True)
