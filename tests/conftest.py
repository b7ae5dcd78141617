"""Fixtures: the service on a real port, driven over HTTP against local stand-ins.

Slack is a fake Web API that records calls, Argo is an emulator that validates every
manifest against the published schema and runs exit hooks like Argo, and S3 is moto's
server reached through aiobotocore. PostgreSQL is the server on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.app import SERVICES, Services, create_app
from bot.settings import Settings
from bot.storage import S3Storage
from stand_ins.argo_emulator import ArgoEmulator
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import S3Config, S3Server
from stand_ins.slack_requests import block_actions, interaction, signed, slash_command
from workflows.manifest import hook_token

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ARGO_CHATOPS_SHARED", ROOT.parent / "shared"))
SCHEMA_PATH = ROOT / "stand_ins" / "schema" / "argo-workflows-schema.json"
TEMPLATES_DIR = ROOT / "workflows" / "templates"

BOT_TOKEN = "xoxb-test-bot-token"
SIGNING_SECRET = "test-signing-secret-0123456789"
ARGO_TOKEN = "argo-test-token"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_SCRUBBED_PREFIXES = ("AWS_", "SLACK_", "ARGO_", "S3_", "DATABASE_URL", "PUBLIC_URL", "WEBHOOK_")


@pytest.fixture(autouse=True, scope="session")
def quiet_s3_server_logs() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's AWS/Slack/Argo variables must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith(_SCRUBBED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(bucket="argo-artifacts")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> S3Config:
    return s3_server.config


@pytest.fixture
async def storage(s3: S3Config) -> AsyncIterator[S3Storage]:
    """The service's own S3 client, open on the S3 stand-in's bucket."""
    store = S3Storage(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
    )
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def argo(s3: S3Config) -> AsyncIterator[ArgoEmulator]:
    emulator = ArgoEmulator(token=ARGO_TOKEN, schema_path=SCHEMA_PATH, s3=s3)
    emulator.load_templates(TEMPLATES_DIR)
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        yield from _fresh_postgres_database()


def _fresh_postgres_database() -> Iterator[str]:
    """A database of its own for one test, dropped afterwards."""
    import asyncpg

    name = f"argo_chatops_{secrets.token_hex(6)}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def run(statement: str) -> None:
        # Its own thread and loop: this runs inside async fixtures and tests too.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, admin(statement)).result()

    run(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _fresh_postgres_database()


def make_settings(
    *,
    slack: FakeSlack,
    argo: ArgoEmulator,
    s3: S3Config,
    database_url: str,
    port: int,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": slack.api_url,
        "slack_file_hosts": slack.host,  # the fake serves the files: the token may go there
        "argo_server_url": argo.url,
        "argo_token": f"Bearer {ARGO_TOKEN}",
        "argo_namespace": "argo",
        "argo_ui_url": "https://argo.example.test",
        "s3_endpoint_url": s3.endpoint_url,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_bucket": s3.bucket,
        "s3_region": s3.region,
        "public_url": f"http://127.0.0.1:{port}",
        "webhook_secret": WEBHOOK_SECRET,
        "database_url": database_url,
        "poll_interval_seconds": 3600,
        "progress_interval_seconds": 3600,
        "host": "127.0.0.1",
        "port": port,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass(frozen=True)
class CommandResponse:
    """Slack's view of the service's answer to a slash command."""

    status: int
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


def _ack_body(text: str) -> dict[str, Any]:
    """Bolt answers `ack(text=...)` as plain text and richer acks as JSON; Slack takes both."""
    if not text:
        return {}
    try:
        body = json.loads(text)
    except ValueError:
        return {"text": text}
    return body if isinstance(body, dict) else {"text": text}


@dataclass
class Bot:
    """The running service and the ways a user, Slack or Argo reach it."""

    settings: Settings
    server: TestServer
    http: aiohttp.ClientSession
    slack: FakeSlack
    argo: ArgoEmulator

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))

    @property
    def services(self) -> Services:
        return self.server.app[SERVICES]

    async def command(
        self,
        text: str,
        *,
        user_id: str = "U1",
        channel_id: str = "C1",
        timestamp: int | None = None,
        signing_secret: str = SIGNING_SECRET,
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> CommandResponse:
        body = slash_command(
            text,
            command=self.settings.slack_command,
            user_id=user_id,
            channel_id=channel_id,
            response_url=response_url or self.slack.response_url(),
            trigger_id=trigger_id,
        )
        headers = signed(
            signing_secret,
            body,
            content_type="application/x-www-form-urlencoded",
            timestamp=timestamp,
        )
        async with self.http.post(
            f"{self.url}slack/events", data=body, headers=headers
        ) as response:
            text = await response.text()
        return CommandResponse(status=response.status, body=_ack_body(text))

    async def click(
        self,
        action_id: str,
        message: Any,
        *,
        user_id: str = "U1",
        channel_id: str = "C1",
    ) -> aiohttp.ClientResponse:
        """Press the button `action_id` on a message the bot posted (a fake Slack Message)."""
        [button] = [
            element
            for block in message.blocks or []
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        ]
        payload = block_actions(
            [
                {
                    "action_id": action_id,
                    "block_id": next(
                        block.get("block_id", "")
                        for block in message.blocks
                        if button in block.get("elements", [])
                    ),
                    "type": "button",
                    "value": button.get("value", ""),
                    "text": button["text"],
                }
            ],
            user_id=user_id,
            channel_id=channel_id,
            message=message.to_api(),
            response_url=self.slack.response_url(),
        )
        body = interaction(payload)
        headers = signed(SIGNING_SECRET, body, content_type="application/x-www-form-urlencoded")
        response = await self.http.post(f"{self.url}slack/events", data=body, headers=headers)
        await response.read()
        return response

    async def hook(
        self, name: str, *, namespace: str = "argo", token: str | None = None, body: Any = None
    ) -> aiohttp.ClientResponse:
        if token is None:
            token = hook_token(WEBHOOK_SECRET, namespace, name)
        payload = body if body is not None else {"name": name, "namespace": namespace}
        response = await self.http.post(
            f"{self.url}hooks/argo",
            data=json.dumps(payload),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        await response.read()
        return response

    async def wait_idle(self) -> None:
        """Background work of the bot and the emulator has settled (hooks, rechecks)."""
        for _ in range(3):
            await self.argo.wait_idle()
            await self.services.slack_traffic.drained()  # work left for a quiet moment
            await self.services.tasks.wait_idle()

    async def started_runs(self, count: int, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109
        """Names of the workflows created so far, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while len(self.argo.created) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.argo.created)} workflows created, wanted {count}")
            await asyncio.sleep(0.02)
        return [manifest["metadata"]["name"] for manifest in self.argo.created]


@pytest.fixture
async def bot_factory(
    slack: FakeSlack,
    argo: ArgoEmulator,
    s3: S3Config,
    database_url: str,
    unused_tcp_port_factory: Any,
) -> AsyncIterator[Any]:
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**overrides: Any) -> Bot:
        port = unused_tcp_port_factory()
        settings = make_settings(
            slack=slack, argo=argo, s3=s3, database_url=database_url, port=port, **overrides
        )
        server = TestServer(create_app(settings), host="127.0.0.1", port=port)
        await server.start_server()
        http = aiohttp.ClientSession()
        started.append((server, http))
        return Bot(settings=settings, server=server, http=http, slack=slack, argo=argo)

    yield start
    for server, http in reversed(started):
        await http.close()
        await server.close()


@pytest.fixture
async def bot(bot_factory: Any) -> Bot:
    return await bot_factory()
