"""Helpers shared by the lifecycle, button and progress tests: runs, threads and answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Bot

# A template whose second step fails on its first run and succeeds when retried: the flag
# file it checks is created by the failing run. Both steps print real log lines.
FLAKY_TEMPLATE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "flaky",
        "namespace": "argo",
        "labels": {"argo-chatops/enabled": "true"},
    },
    "spec": {
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "flag"}]},
        "templates": [
            {
                "name": "main",
                "steps": [
                    [{"name": "prepare", "template": "prepare"}],
                    [{"name": "flaky", "template": "flaky"}],
                ],
            },
            {
                "name": "prepare",
                "script": {
                    "image": "python:3.12-alpine",
                    "command": ["python"],
                    "source": "print('prepare ran')\n",
                },
            },
            {
                "name": "flaky",
                "script": {
                    "image": "python:3.12-alpine",
                    "command": ["python"],
                    "env": [{"name": "FLAG", "value": "{{workflow.parameters.flag}}"}],
                    "source": (
                        "import os, sys\n"
                        "flag = os.environ['FLAG']\n"
                        "if not os.path.exists(flag):\n"
                        "    open(flag, 'w').close()\n"
                        "    print('first try: failing on purpose', file=sys.stderr)\n"
                        "    sys.exit(3)\n"
                        "print('second try: fine')\n"
                    ),
                },
            },
        ],
    },
}

# One step that prints `lines` numbered lines (more than a Slack message shows).
CHATTY_TEMPLATE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "chatty",
        "namespace": "argo",
        "labels": {"argo-chatops/enabled": "true"},
    },
    "spec": {
        "entrypoint": "talk",
        "arguments": {"parameters": [{"name": "lines", "value": "500"}]},
        "templates": [
            {
                "name": "talk",
                "script": {
                    "image": "python:3.12-alpine",
                    "command": ["python"],
                    "env": [{"name": "LINES", "value": "{{workflow.parameters.lines}}"}],
                    "source": (
                        "import os\n"
                        "for n in range(1, int(os.environ['LINES']) + 1):\n"
                        "    print(f'line {n:04d} <of> the log & more')\n"
                    ),
                },
            }
        ],
    },
}


def roots(bot: Bot, channel: str = "C1") -> list:
    """The bot's top-level messages in a channel (thread roots), oldest first."""
    return [m for m in bot.slack.messages.get(channel, []) if not m.thread_ts and not m.deleted]


def root_of(bot: Bot, name: str, channel: str = "C1") -> Any:
    [root] = [m for m in roots(bot, channel) if name in (m.text or "")]
    return root


def replies(bot: Bot, thread_ts: str, channel: str = "C1") -> list:
    return [m for m in bot.slack.thread(channel, thread_ts) if m.ts != thread_ts]


def announcements(bot: Bot, thread_ts: str, channel: str = "C1") -> list:
    """Results posted in a thread (they carry the run's buttons)."""
    return [
        m
        for m in replies(bot, thread_ts, channel)
        if any(block.get("type") == "actions" for block in m.blocks or [])
    ]


def rendered(message: Any) -> str:
    return json.dumps(message.blocks or []) + (message.text or "")


def answers(bot: Bot) -> list[str]:
    """Every private answer: response_url posts and ephemeral messages, oldest first."""
    posted = [json.dumps(post.body) for post in bot.slack.responses]
    return posted + [json.dumps([e.text, e.blocks]) for e in bot.slack.ephemerals]


async def ask(bot: Bot, text: str, *, user_id: str = "U1") -> str:
    """Type a command and wait for the private answer that replaces the ack."""
    before = len(bot.slack.responses)
    response = await bot.command(text, user_id=user_id)
    assert response.status == 200
    await bot.services.tasks.wait_idle()  # the bot's work; the emulator may hold a step
    assert len(bot.slack.responses) > before, f"no answer to {text!r}"
    return json.dumps(bot.slack.responses[-1].body)


async def start(bot: Bot, text: str, *, wait: bool = True, user_id: str = "U1") -> str:
    """Start a run with a command; returns its workflow name (once Argo has it).

    `wait` also waits for the run to end and be announced; leave it off for runs the
    emulator holds (Pending, or in a held step).
    """
    before = len(bot.argo.created)
    await bot.command(text, user_id=user_id)
    names = await bot.started_runs(before + 1)
    if wait:
        await bot.wait_idle()
    else:
        await bot.services.tasks.wait_idle()
    return names[-1]


def put_requests(bot: Bot, verb: str) -> list:
    return [r for r in bot.argo.requests if r.method == "PUT" and r.path.endswith(f"/{verb}")]


async def ops_bot(bot_factory: Any, tmp_path: Path) -> Bot:
    """A bot whose access policy lets U2 and U9 stop, retry and resubmit runs others started
    (by default only the person who started a run may): two people clicking the same button."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("control_others: [U2, U9]\n")
    return await bot_factory(policy_file=policy)
