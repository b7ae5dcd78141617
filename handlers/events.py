"""Slack events the app subscribes to but does not act on yet.

Bolt answers 404 to an event no listener takes, and Slack then retries it, so every
subscribed event gets a listener.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

IGNORED_EVENTS = ("app_mention", "message", "file_shared")


def register(bolt: AsyncApp) -> None:
    async def ignore() -> None:
        return None

    for event in IGNORED_EVENTS:
        bolt.event(event)(ignore)
