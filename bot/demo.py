"""`argo-chatops demo`: one `/argo run` end to end on this machine, no accounts needed.

Starts the stand-ins (a fake Slack Web API, the Argo Server emulator, moto's S3 server),
starts the real service against them, sends a signed slash command the way Slack does,
waits for the exit hook's result in the run's thread, prints the thread as a person would
see it, and downloads an artifact through its presigned link to prove the link works.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import create_app
from bot.settings import Settings

DEMO_CHANNEL = "C0DEMO"
DEMO_USER = "U0ALICE"
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")


def free_port() -> int:
    """A port the OS says is free now (for processes that must know it before binding)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _plain(mrkdwn: str) -> str:
    text = _LINK.sub(lambda m: f"{m.group(2)} [{_short(m.group(1))}]", mrkdwn)
    text = text.replace(f"<@{DEMO_USER}>", "@alice")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _short(url: str) -> str:
    return url if len(url) <= 72 else url[:69] + "..."


def _render(blocks: list[dict[str, Any]] | None, text: str | None) -> list[str]:
    if not blocks:
        return [_plain(text or "")]
    lines: list[str] = []
    for block in blocks:
        if block.get("type") == "section" and block.get("text"):
            lines.extend(_plain(block["text"]["text"]).splitlines())
        elif block.get("type") == "context":
            lines.append(" · ".join(_plain(e.get("text", "")) for e in block.get("elements", [])))
        elif block.get("type") == "actions":
            lines.append("  ".join(f"[{e['text']['text']}]" for e in block.get("elements", [])))
    return lines


async def run_demo(*, template: str, parameters: str, out: Any = sys.stdout) -> int:
    from stand_ins.argo_emulator import ArgoEmulator
    from stand_ins.fake_slack import FakeSlack
    from stand_ins.s3_server import S3Server
    from stand_ins.slack_requests import signed, slash_command

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    bot_token = "xoxb-demo-" + secrets.token_hex(8)
    signing_secret = secrets.token_hex(16)
    argo_token = secrets.token_hex(16)
    s3_server = S3Server(bucket="argo-artifacts")
    say("Starting the stand-ins: fake Slack, Argo Server emulator, S3 (moto)…")
    s3 = await asyncio.to_thread(s3_server.start)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every S3 request
    slack = FakeSlack(bot_token=bot_token)
    argo = ArgoEmulator(token=argo_token, schema_path=schema_path(), s3=s3)
    argo.load_templates(templates_path())
    runner: web.AppRunner | None = None
    try:
        await slack.start()
        await argo.start()
        with tempfile.TemporaryDirectory(prefix="argo-chatops-demo-") as state_dir:
            port = free_port()
            settings = Settings(
                _env_file=None,
                slack_bot_token=bot_token,
                slack_signing_secret=signing_secret,
                slack_api_url=slack.api_url,
                argo_server_url=argo.url,
                argo_token=argo_token,
                argo_ui_url="https://argo.example.test",
                s3_endpoint_url=s3.endpoint_url,
                s3_access_key=s3.access_key,
                s3_secret_key=s3.secret_key,
                s3_bucket=s3.bucket,
                public_url=f"http://127.0.0.1:{port}",
                webhook_secret=secrets.token_hex(16),
                database_url=f"sqlite:///{Path(state_dir) / 'state.db'}",
                poll_interval_seconds=5,
                host="127.0.0.1",
                port=port,
            )
            runner = web.AppRunner(create_app(settings), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            say(f"argo-chatops is listening on http://127.0.0.1:{port}")

            text = f"run {template} {parameters}".strip()
            say(f"\n@alice types:  /argo {text}")
            body = slash_command(
                text,
                user_id=DEMO_USER,
                user_name="alice",
                channel_id=DEMO_CHANNEL,
                response_url=slack.response_url(),
            )
            headers = signed(signing_secret, body, content_type="application/x-www-form-urlencoded")
            async with aiohttp.ClientSession() as http:
                started = time.perf_counter()
                async with http.post(
                    f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers
                ) as response:
                    ack = await response.json(content_type=None) if response.status == 200 else {}
                    say(
                        f"Slack got HTTP {response.status} in "
                        f"{(time.perf_counter() - started) * 1000:.0f} ms: {ack.get('text', '')}"
                    )

                def finished() -> bool:
                    return any(m.thread_ts for m in slack.messages.get(DEMO_CHANNEL, [])) or bool(
                        slack.responses
                        and "Started" not in str(slack.responses[-1].body)
                        and "Starting" not in str(slack.responses[-1].body)
                    )

                await slack.wait_for(finished, timeout=60)
                await asyncio.sleep(0.3)  # let the thread root edit land
                return await _show_thread(slack, http, say)
    finally:
        if runner is not None:
            await runner.cleanup()
        await argo.close()
        await slack.close()
        await asyncio.to_thread(s3_server.stop)


async def _show_thread(slack: Any, http: aiohttp.ClientSession, say: Any) -> int:
    channel = slack.messages.get(DEMO_CHANNEL, [])
    roots = [m for m in channel if not m.thread_ts and not m.deleted]
    if not roots:
        say("\nThe run did not start. What the bot told alice privately:")
        for post in slack.responses:
            say("  " + _plain(str(post.body.get("text", ""))))
        return 1
    root = roots[-1]
    say(f"\n#demo — thread of message {root.ts}")
    say("─" * 72)
    for line in _render(root.blocks, root.text):
        say(f"argo-chatops │ {line}")
    for reply in slack.thread(DEMO_CHANNEL, root.ts)[1:]:
        say("  ↳ reply")
        for line in _render(reply.blocks, reply.text):
            say(f"  argo-chatops │ {line}")
    say("─" * 72)

    links = [
        (url, name)
        for reply in slack.thread(DEMO_CHANNEL, root.ts)[1:]
        for block in reply.blocks or []
        for url, name in _LINK.findall(str(block.get("text", {}).get("text", "")))
        if "X-Amz-Signature" in url
    ]
    if not links:
        say("No artifact links in the thread.")
        return 1
    for url, name in links:
        async with http.get(url.replace("&amp;", "&")) as download:
            content = await download.read()
        say(f"\nGET presigned link for {name}: HTTP {download.status}, {len(content)} bytes")
        if download.status != 200:
            return 1
        if name.endswith((".md", ".markdown", ".json", ".csv", ".txt")):
            lines = content.decode(errors="replace").splitlines()
            shown = 5 if name.endswith(".csv") else 25
            for line in lines[:shown]:
                say(f"    {line}")
            if len(lines) > shown:
                say(f"    … {len(lines) - shown} more lines")
    return 0


def schema_path() -> Path:
    return Path(str(resources.files("stand_ins") / "schema" / "argo-workflows-schema.json"))


def templates_path() -> Path:
    return Path(str(resources.files("workflows") / "templates"))
