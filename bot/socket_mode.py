"""Socket Mode: the bot dials out to Slack over a WebSocket instead of being called.

For workspaces where Slack cannot reach the service. It runs beside the HTTP server, which
still serves `/hooks/argo` (Argo must reach `PUBLIC_URL`; without that the poller alone
announces runs), `/healthz`, `/readyz` and `/metrics`. The same Bolt app handles both
transports, so every listener works either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

logger = logging.getLogger(__name__)

RECONNECT_MAX_SECONDS = 60.0


@contextlib.asynccontextmanager
async def connected(bolt: AsyncApp, app_token: str) -> AsyncIterator[AsyncSocketModeHandler]:
    """Keep a Socket Mode connection while the service runs.

    The first connection is made in the background and retried with backoff, so a Slack
    outage at start-up delays Slack traffic instead of failing the service; once connected,
    slack-sdk's client reconnects by itself.
    """
    handler = AsyncSocketModeHandler(bolt, app_token=app_token, logger=logger)
    task = asyncio.get_running_loop().create_task(_connect(handler), name="socket-mode-connect")
    try:
        yield handler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await handler.close_async()


async def _connect(handler: AsyncSocketModeHandler) -> None:
    delay = 1.0
    while True:
        try:
            await handler.connect_async()
        except Exception:
            logger.exception("Socket Mode connection failed; retrying in %.0f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        else:
            logger.info("connected to Slack in Socket Mode")
            return
