"""What the Slack app must grant and deliver, as the code sees it.

`deploy/slack-app-manifest.yaml` is checked against this module and against the listeners
registered on the running Bolt app (tests/test_slack_app_manifest.py), and
`argo-chatops check` compares the token's granted scopes with `BOT_SCOPES`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

# Every bot scope the app asks for, with the reason (shown by `check` when one is missing).
BOT_SCOPES: dict[str, str] = {
    "commands": "the slash command",
    "chat:write": "post thread roots and results, edit and delete them, answer privately",
    "chat:write.public": "post in public channels the bot was not invited to",
    "app_mentions:read": "the app_mention event",
    "channels:history": "message events in public channels (message.channels)",
    "groups:history": "message events in private channels (message.groups)",
    "files:read": "the file_shared event and reading shared files",
    "files:write": "upload result files into a run's thread",
}

# Scope each bot event needs. A listener for an event missing here fails the manifest test.
EVENT_SCOPES: dict[str, str] = {
    "app_mention": "app_mentions:read",
    "app_home_opened": "",
    "app_uninstalled": "",
    "tokens_revoked": "",
    "file_shared": "files:read",
    "file_created": "files:read",
    "file_change": "files:read",
    "file_deleted": "files:read",
    "file_public": "files:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "reaction_added": "reactions:read",
    "reaction_removed": "reactions:read",
    "member_joined_channel": "channels:read",
    "member_left_channel": "channels:read",
    "link_shared": "links:read",
}

# Scope each Web API method needs (bot token). A method the code calls that is missing here
# fails the manifest test, so a new call cannot ship without its scope.
METHOD_SCOPES: dict[str, str] = {
    "api.test": "",
    "auth.test": "",
    "apps.connections.open": "",  # app-level token (connections:write), not a bot scope
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.getPermalink": "",
    "reactions.add": "reactions:write",
    "reactions.remove": "reactions:write",
    "views.open": "",
    "views.update": "",
    "views.push": "",
    "views.publish": "",
    "files.info": "files:read",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files.upload": "files:write",
    "files.upload_v2": "files:write",
    "conversations.info": "channels:read",
    "conversations.join": "channels:join",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "users.info": "users:read",
}

# Message events come as type "message" with a channel_type; the manifest names them apart.
MESSAGE_CHANNEL_TYPES = {
    "message.channels": "channel",
    "message.groups": "group",
    "message.im": "im",
    "message.mpim": "mpim",
}


@dataclass
class ListenerInventory:
    """What a Bolt app listens to: the manifest must subscribe to exactly this."""

    events: set[str] = field(default_factory=set)  # "message" stands for every message.*
    commands: set[str] = field(default_factory=set)
    interactive: bool = False  # actions, views, shortcuts or options
    unknown: list[str] = field(default_factory=list)  # listeners this module cannot read


# Bolt's built-in matchers are closures named after the Bolt method that made them.
_INTERACTIVE_MATCHERS = {
    "action",
    "block_action",
    "attachment_action",
    "dialog_submission",
    "dialog_cancellation",
    "dialog_suggestion",
    "block_suggestion",
    "options",
    "view",
    "view_submission",
    "view_closed",
    "shortcut",
    "global_shortcut",
    "message_shortcut",
}


def listener_inventory(bolt: AsyncApp) -> ListenerInventory:
    """Read the events, commands and interactivity of every listener registered on `bolt`.

    Bolt keeps no public list of what its listeners match, so this reads the constraint each
    built-in matcher closed over. Anything it cannot read is reported in `unknown` rather than
    skipped, so a Bolt upgrade that changes the internals fails loudly.
    """
    inventory = ListenerInventory()
    for listener in bolt._async_listeners:  # Bolt has no public accessor
        for matcher in listener.matchers:
            _read_matcher(matcher, inventory)
    return inventory


def _read_matcher(matcher: Any, inventory: ListenerInventory) -> None:
    outer = getattr(matcher, "func", None)
    inner = _closure_value(outer, "func") if outer is not None else None
    if not callable(inner):
        return  # a custom matcher (e.g. `matchers=[...]`): it narrows, it does not subscribe
    kind = inner.__qualname__.split(".")[0]
    values = inspect.getclosurevars(inner).nonlocals
    if kind == "event" or kind == "message_event":
        constraint = values.get("event_type", values.get("constraints"))
        event_type = constraint.get("type") if isinstance(constraint, dict) else constraint
        if isinstance(event_type, str):
            inventory.events.add(event_type)
        else:
            inventory.unknown.append(f"event listener matching {event_type!r}")
    elif kind == "command":
        command = values.get("command")
        if isinstance(command, str):
            inventory.commands.add(command)
        else:
            inventory.unknown.append(f"command listener matching {command!r}")
    elif kind in _INTERACTIVE_MATCHERS:
        inventory.interactive = True
    else:
        inventory.unknown.append(f"listener of kind {kind!r}")


def _closure_value(function: Callable[..., Any], name: str) -> Any:
    try:
        return inspect.getclosurevars(function).nonlocals.get(name)
    except TypeError:
        return None


def required_scopes(events: set[str], commands: set[str], methods: set[str]) -> set[str]:
    """Scopes implied by subscribed manifest events, slash commands and Web API methods.

    Raises KeyError naming an event or method this module has no scope for yet.
    """
    scopes = {EVENT_SCOPES[event] for event in events}
    scopes |= {METHOD_SCOPES[method] for method in methods}
    if commands:
        scopes.add("commands")
    return scopes - {""}


_STRING_METHOD = re.compile(r"""["']([a-z]+(?:\.[A-Za-z0-9_]+)+)["']""")
_ATTRIBUTE_CALL = re.compile(r"\.([a-z]+_[A-Za-z0-9_]+)\(")


def web_api_methods(source: str) -> set[str]:
    """Slack Web API methods named in Python source: `api_call("chat.update")` or
    `client.files_info(...)`. Only names slack-sdk's client knows count, so S3 calls like
    `head_object` or unrelated dotted strings are ignored."""
    generic = set(dir(AsyncBaseClient))  # api_call and friends are not Web API methods
    known = {name for name in dir(AsyncWebClient) if not name.startswith("_")} - generic
    found = {m for m in _STRING_METHOD.findall(source) if m.replace(".", "_") in known}
    for attribute in _ATTRIBUTE_CALL.findall(source):
        if attribute in known:
            found.add(attribute.replace("_", ".").replace(".v2", "_v2"))
    return found


def manifest_problems(
    manifest: dict[str, Any], inventory: ListenerInventory, methods: set[str]
) -> list[str]:
    """Every way the app manifest disagrees with the code; empty when they match."""
    problems = [f"cannot tell what this listener subscribes to: {u}" for u in inventory.unknown]
    features = manifest.get("features") or {}
    settings = manifest.get("settings") or {}
    commands = {c.get("command") for c in features.get("slash_commands") or []}
    if commands != inventory.commands:
        problems.append(
            f"slash commands: the manifest has {sorted(map(str, commands))}, "
            f"the listeners take {sorted(inventory.commands)}"
        )
    subscribed = set((settings.get("event_subscriptions") or {}).get("bot_events") or [])
    for event in sorted(inventory.events):
        if event == "message":
            if not subscribed & set(MESSAGE_CHANNEL_TYPES):
                problems.append("a listener takes message events; the manifest has no message.*")
        elif event not in subscribed:
            problems.append(f"a listener takes {event}; the manifest does not subscribe to it")
    for event in sorted(subscribed):
        if ("message" if event in MESSAGE_CHANNEL_TYPES else event) not in inventory.events:
            problems.append(
                f"the manifest subscribes to {event} but no listener takes it "
                "(Bolt answers 404 and Slack retries)"
            )
    for name, table, known in (
        ("event", "EVENT_SCOPES", EVENT_SCOPES),
        ("Web API method", "METHOD_SCOPES", METHOD_SCOPES),
    ):
        for unknown in sorted((subscribed if name == "event" else methods) - set(known)):
            problems.append(f"{name} {unknown}: add the scope it needs to {table} in {__name__}")
    needed = required_scopes(
        subscribed & set(EVENT_SCOPES), inventory.commands, methods & set(METHOD_SCOPES)
    )
    granted = set((manifest.get("oauth_config") or {}).get("scopes", {}).get("bot") or [])
    if missing := sorted(needed - granted):
        problems.append(f"the code needs bot scopes the manifest lacks: {', '.join(missing)}")
    if granted != set(BOT_SCOPES):
        problems.append(
            f"the manifest's scopes differ from BOT_SCOPES (what `check` expects): "
            f"only in the manifest {sorted(granted - set(BOT_SCOPES))}, "
            f"only in BOT_SCOPES {sorted(set(BOT_SCOPES) - granted)}"
        )
    if missing := sorted(needed - set(BOT_SCOPES)):
        problems.append(f"BOT_SCOPES lacks scopes the code needs: {', '.join(missing)}")
    interactivity = settings.get("interactivity") or {}
    if inventory.interactive and not interactivity.get("is_enabled"):
        problems.append("listeners take actions or views; the manifest disables interactivity")
    if not settings.get("socket_mode_enabled"):
        urls = [c.get("url") for c in features.get("slash_commands") or []]
        urls += [(settings.get("event_subscriptions") or {}).get("request_url")]
        urls += [interactivity.get("request_url")] if interactivity.get("is_enabled") else []
        problems += [
            f"{url} is not the service's /slack/events"
            for url in urls
            if not str(url).endswith("/slack/events")
        ]
    return problems
