"""Build the HTTP requests Slack sends to the bot, signed the way Slack signs them.

Tests post these bodies to the bot's real ``/slack/events`` endpoint, so Bolt's signature check
runs as in production instead of being switched off. Field sets follow SLACK_API.md §2-§4
(slash command form, Events API envelope, interactivity ``payload=<json>`` form).
"""

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

__all__ = [
    "FORM",
    "JSON",
    "app_mention_event",
    "block_actions",
    "event_callback",
    "file_share_event",
    "interaction",
    "new_trigger_id",
    "sign",
    "signed",
    "slash_command",
    "url_verification",
    "view_submission",
]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Signature headers for ``body``; Content-Type is guessed (JSON if it starts with ``{``)."""
    content_type = JSON if body.lstrip().startswith(b"{") else FORM
    return signed(signing_secret, body, content_type=content_type, timestamp=timestamp)


def signed(
    signing_secret: str,
    body: bytes,
    *,
    content_type: str,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
) -> dict[str, str]:
    """All headers of a Slack delivery; ``retry_num`` adds Slack's retry headers."""
    ts = int(time.time()) if timestamp is None else timestamp
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=str(ts), body=body)
    if signature is None:  # only when timestamp is None, which cannot happen here
        raise ValueError("could not sign the request")
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature,
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return headers


def new_trigger_id() -> str:
    """A trigger id shaped like Slack's (``<digits>.<digits>.<hex>``), unique per call."""
    return f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"


def slash_command(
    text: str,
    *,
    command: str = "/argo",
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    channel_name: str = "general",
    team_id: str = "T0001",
    team_domain: str = "fake",
    api_app_id: str = "A0001",
    response_url: str,
    trigger_id: str | None = None,
    token: str = "legacy-verification-token",
) -> bytes:
    """The form body of a slash command; a fresh ``trigger_id`` unless one is given."""
    fields = {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode(fields).encode()


def event_callback(
    event: dict[str, Any],
    *,
    event_id: str | None = None,
    team_id: str = "T0001",
    api_app_id: str = "A0001",
    bot_user_id: str = "UBOT",
    event_time: int | None = None,
    token: str = "legacy-verification-token",
) -> bytes:
    """The JSON Events API envelope around ``event``; keep ``event_id`` to simulate retries."""
    envelope = {
        "token": token,
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }
    return json.dumps(envelope).encode()


def url_verification(challenge: str, *, token: str = "legacy-verification-token") -> bytes:
    """What Slack POSTs when the Events Request URL is saved."""
    return json.dumps({"token": token, "challenge": challenge, "type": "url_verification"}).encode()


def interaction(payload: dict[str, Any]) -> bytes:
    """Interactivity form body: a single ``payload`` field holding JSON."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def file_share_event(
    files: list[dict[str, Any]],
    *,
    channel: str = "C1",
    user: str = "U1",
    text: str = "",
    ts: str,
    thread_ts: str | None = None,
    channel_type: str = "channel",
) -> dict[str, Any]:
    """A ``message``/``file_share`` event; take ``ts`` from ``FakeSlack.add_user_message``."""
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "file_share",
        "text": text,
        "files": files,
        "upload": True,
        "user": user,
        "display_as_bot": False,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def app_mention_event(
    text: str,
    *,
    channel: str = "C1",
    user: str = "U1",
    ts: str,
    thread_ts: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``app_mention`` event; ``text`` should contain ``<@BOT_USER_ID>``."""
    event: dict[str, Any] = {
        "type": "app_mention",
        "text": text,
        "user": user,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    if files:
        event["files"] = files
    return event


def _user(user_id: str, user_name: str, team_id: str) -> dict[str, str]:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}


def block_actions(
    actions: list[dict[str, Any]],
    *,
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    team_id: str = "T0001",
    api_app_id: str = "A0001",
    message: dict[str, Any] | None = None,
    response_url: str | None = None,
    trigger_id: str | None = None,
    view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload (pass it to :func:`interaction`).

    Each action needs at least ``action_id`` and ``type``; ``block_id``/``value`` as the button had.
    """
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "fake"},
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "token": "legacy-verification-token",
        "trigger_id": trigger_id or new_trigger_id(),
        "actions": [{"action_ts": f"{time.time():.6f}", **a} for a in actions],
        "is_enterprise_install": False,
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", "")}
        payload["view"] = view
    else:
        payload["container"] = {
            "type": "message",
            "message_ts": (message or {}).get("ts", ""),
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        payload["channel"] = {"id": channel_id, "name": "general"}
        payload["message"] = message or {}
        payload["response_url"] = response_url or ""
    return payload


def view_submission(
    view: dict[str, Any],
    values: dict[str, dict[str, dict[str, Any]]],
    *,
    user_id: str = "U1",
    user_name: str = "alice",
    team_id: str = "T0001",
    api_app_id: str = "A0001",
) -> dict[str, Any]:
    """A ``view_submission`` payload for an opened ``view`` (e.g. ``fake.views[-1]["view"]``).

    ``values`` is ``{block_id: {action_id: state}}``, e.g.
    ``{"upload": {"files": {"type": "file_input", "files": [file_object]}}}``.
    """
    submitted = {**view, "state": {"values": values}}
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "fake"},
        "user": _user(user_id, user_name, team_id),
        "api_app_id": api_app_id,
        "token": "legacy-verification-token",
        "trigger_id": new_trigger_id(),
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
    }
