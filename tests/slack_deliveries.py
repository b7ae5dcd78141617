"""Signed Events API and interactivity deliveries to the running bot, as Slack sends them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stand_ins.s3_server import S3Server
from stand_ins.slack_requests import (
    FORM,
    JSON,
    app_mention_event,
    event_callback,
    file_share_event,
    interaction,
    signed,
    view_submission,
)
from tests.conftest import SIGNING_SECRET, Bot

BOT_USER = "UBOT"  # what the fake Slack's auth.test says the bot is


@dataclass(frozen=True)
class Delivery:
    status: int
    body: dict[str, Any]


async def _post(bot: Bot, body: bytes, headers: dict[str, str]) -> Delivery:
    async with bot.http.post(f"{bot.url}slack/events", data=body, headers=headers) as response:
        text = await response.text()
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        parsed = {"text": text}
    return Delivery(response.status, parsed if isinstance(parsed, dict) else {})


async def deliver_event(
    bot: Bot, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
) -> Delivery:
    body = event_callback(event, event_id=event_id, bot_user_id=BOT_USER)
    headers = signed(SIGNING_SECRET, body, content_type=JSON, retry_num=retry_num)
    return await _post(bot, body, headers)


async def share(
    bot: Bot,
    text: str,
    files: list[dict[str, Any]],
    *,
    channel: str = "C1",
    user: str = "U1",
    as_mention: bool = True,
    as_file_share: bool = False,
    thread_ts: str | None = None,
) -> str:
    """A person posts `text` with `files`; Slack delivers it as the chosen events. Returns ts."""
    message = bot.slack.add_user_message(channel, text, user=user, files=files, thread_ts=thread_ts)
    if as_mention:
        event = app_mention_event(
            text, channel=channel, user=user, ts=message.ts, thread_ts=thread_ts, files=files
        )
        assert (await deliver_event(bot, event)).status == 200
    if as_file_share:
        event = file_share_event(
            files, channel=channel, user=user, text=text, ts=message.ts, thread_ts=thread_ts
        )
        assert (await deliver_event(bot, event)).status == 200
    return message.ts


async def submit_view(
    bot: Bot, view: dict[str, Any], values: dict[str, Any], *, user_id: str = "U1"
) -> Delivery:
    body = interaction(view_submission(view, values, user_id=user_id))
    return await _post(bot, body, signed(SIGNING_SECRET, body, content_type=FORM))


async def empty_bucket(s3_server: S3Server) -> None:
    """The S3 server lives for the whole session: start a test with no objects and no uploads."""
    async with s3_server.client() as s3:
        for upload in (await s3.list_multipart_uploads(Bucket=s3_server.bucket)).get("Uploads", []):
            await s3.abort_multipart_upload(
                Bucket=s3_server.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        keys = [{"Key": key} for key in await s3_server.list_keys()]
        if keys:
            await s3.delete_objects(Bucket=s3_server.bucket, Delete={"Objects": keys})
