"""Slack events the app subscribes to but does not act on.

Bolt answers 404 to an event no listener takes, and Slack then retries it, so every
subscribed event gets a listener. `app_mention` and `message` are taken by
`handlers/files.py` (mentions with files, drop zones); `file_shared` fires in addition to
the message that carries the file, which is the one source of truth.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

IGNORED_EVENTS = ("file_shared",)


def register(bolt: AsyncApp) -> None:
    async def ignore() -> None:
        return None

    for event in IGNORED_EVENTS:
        bolt.event(event)(ignore)
