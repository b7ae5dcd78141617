"""deploy/slack-app-manifest.yaml cannot drift from the code.

The listeners come from the running service's Bolt app (what `create_app` registered), the
Web API methods from the source, the command from Settings. Adding a listener, a Web API call
or a scope in the code without updating the manifest fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import Settings
from bot.slack_app import (
    BOT_SCOPES,
    listener_inventory,
    manifest_problems,
    web_api_methods,
)
from tests.conftest import ROOT, Bot

MANIFEST_PATH = ROOT / "deploy" / "slack-app-manifest.yaml"
SOURCE_DIRS = ("bot", "handlers", "workflows")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The manifest does not depend on the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'state.db'}"


def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST_PATH.read_text())


def methods_in_code() -> set[str]:
    found: set[str] = set()
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if path.name != "slack_app.py":  # its scope tables name every method
                found |= web_api_methods(path.read_text())
    return found


async def test_manifest_matches_the_listeners_methods_and_scopes_of_the_code(bot: Bot) -> None:
    inventory = listener_inventory(bot.services.bolt)
    assert inventory.commands == {"/argo"}
    assert "app_mention" in inventory.events
    assert manifest_problems(manifest(), inventory, methods_in_code()) == []


def test_manifest_command_is_the_settings_default() -> None:
    [command] = manifest()["features"]["slash_commands"]
    assert command["command"] == Settings.model_fields["slack_command"].default
    assert command["should_escape"] is False


def test_the_code_calls_slack_methods_the_scan_can_see() -> None:
    """The scan must find the calls the bot is known to make, or the check proves nothing."""
    methods = methods_in_code()
    assert {"chat.postMessage", "chat.update", "chat.postEphemeral"} <= methods
    assert "api.call" not in methods and "head.object" not in methods


async def test_a_new_event_listener_fails_until_the_manifest_subscribes_it(bot: Bot) -> None:
    bolt = bot.services.bolt

    async def on_reaction() -> None:
        return None

    bolt.event("reaction_added")(on_reaction)
    problems = manifest_problems(manifest(), listener_inventory(bolt), methods_in_code())
    assert any("reaction_added" in p and "does not subscribe" in p for p in problems)

    fixed = manifest()
    fixed["settings"]["event_subscriptions"]["bot_events"].append("reaction_added")
    problems = manifest_problems(fixed, listener_inventory(bolt), methods_in_code())
    assert any("reactions:read" in p for p in problems), problems


async def test_a_new_web_api_call_fails_until_its_scope_is_granted(bot: Bot) -> None:
    methods = methods_in_code() | web_api_methods("await client.reactions_add(name='tada')")
    problems = manifest_problems(manifest(), listener_inventory(bot.services.bolt), methods)
    assert any("reactions:write" in p for p in problems), problems


async def test_subscribed_events_need_a_listener_and_interactivity_needs_the_switch(
    bot: Bot,
) -> None:
    changed = manifest()
    changed["settings"]["event_subscriptions"]["bot_events"].append("app_home_opened")
    changed["settings"]["interactivity"]["is_enabled"] = False
    bolt = bot.services.bolt

    async def on_click() -> None:
        return None

    bolt.action("rerun")(on_click)
    problems = manifest_problems(changed, listener_inventory(bolt), methods_in_code())
    assert any("app_home_opened" in p and "no listener" in p for p in problems)
    assert any("interactivity" in p for p in problems)


def test_check_expects_exactly_the_scopes_the_manifest_requests() -> None:
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == set(BOT_SCOPES)
