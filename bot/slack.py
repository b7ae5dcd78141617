"""Posting to Slack: the Web API client and response URLs, behind one small adapter."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.messages import SlackMessage

logger = logging.getLogger(__name__)


class SlackError(Exception):
    """Slack refused a call or could not be reached (the message never names the token)."""


def build_web_client(
    *, token: str, base_url: str, session: aiohttp.ClientSession | None = None
) -> AsyncWebClient:
    """The Web API client, with slack-sdk's retries for rate limits, 5xx and dropped links."""
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackMessenger:
    """Everything the bot posts: thread roots, thread replies, edits, private answers."""

    def __init__(self, client: AsyncWebClient, session: aiohttp.ClientSession) -> None:
        self.client = client
        self._session = session

    async def post(
        self, channel: str, message: SlackMessage, *, thread_ts: str | None = None
    ) -> str:
        response = await self._call(
            "chat.postMessage",
            channel=channel,
            text=message.text,
            blocks=message.blocks,
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(response["ts"])

    async def update(self, channel: str, ts: str, message: SlackMessage) -> None:
        await self._call(
            "chat.update", channel=channel, ts=ts, text=message.text, blocks=message.blocks
        )

    async def delete(self, channel: str, ts: str) -> None:
        await self._call("chat.delete", channel=channel, ts=ts)

    async def tell_user(
        self, *, user_id: str, channel_id: str, text: str, response_url: str | None
    ) -> None:
        """A private answer: through the command's response_url, else an ephemeral message."""
        if response_url:
            webhook = AsyncWebhookClient(response_url, session=self._session, timeout=10)
            try:
                result = await webhook.send(
                    text=text, response_type="ephemeral", replace_original=True
                )
                if result.status_code == 200:
                    return
                logger.warning("response_url answered HTTP %s", result.status_code)
            except (aiohttp.ClientError, TimeoutError):
                logger.warning("response_url unreachable; falling back to an ephemeral message")
        await self._call("chat.postEphemeral", channel=channel_id, user=user_id, text=text)

    async def _call(self, method: str, **arguments: object) -> dict:
        try:
            response = await self.client.api_call(
                method, json={k: v for k, v in arguments.items() if v is not None}
            )
        except SlackApiError as error:
            raise SlackError(
                f"Slack {method} failed: {error.response.get('error', 'error')}"
            ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SlackError(f"Slack {method} unreachable: {error.__class__.__name__}") from error
        return dict(response.data) if isinstance(response.data, dict) else {}
