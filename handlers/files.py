"""Mentions with files and drops in drop zones: translate the event, hand it to the service.

A mention with files may arrive as `app_mention`, as `message`/`file_share` whose text holds
the mention, or as both; the service starts one run per message either way. Every other
message subtype (edits, joins, bot posts) is acknowledged and ignored.
"""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot.file_runs import FileRunService, SharedMessage
from bot.slack_files import SlackFile


class FileEventHandler:
    def __init__(self, service: FileRunService) -> None:
        self._service = service

    def register(self, bolt: AsyncApp) -> None:
        bolt.event("app_mention")(self.on_mention)
        bolt.event("message")(self.on_message)

    async def on_mention(self, event: dict[str, Any], context: Any, body: dict[str, Any]) -> None:
        await self._service.accept(shared_message(event, context, body, mentioned=True))

    async def on_message(self, event: dict[str, Any], context: Any, body: dict[str, Any]) -> None:
        if event.get("subtype") != "file_share" or event.get("bot_id") or not event.get("user"):
            return
        bot_user_id = context.get("bot_user_id") or ""
        mentioned = bool(bot_user_id) and f"<@{bot_user_id}" in str(event.get("text") or "")
        await self._service.accept(shared_message(event, context, body, mentioned=mentioned))


def shared_message(
    event: dict[str, Any], context: Any, body: dict[str, Any], *, mentioned: bool
) -> SharedMessage:
    text = str(event.get("text") or "")
    bot_user_id = context.get("bot_user_id") or ""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return SharedMessage(
        channel_id=str(event.get("channel", "")),
        user_id=str(event.get("user", "")),
        ts=str(event.get("ts", "")),
        text=text.strip(),
        mentions_bot=mentioned,
        files=tuple(
            SlackFile.from_api(raw) for raw in event.get("files") or [] if isinstance(raw, dict)
        ),
        thread_ts=event.get("thread_ts"),
        team_id=body.get("team_id"),
    )
