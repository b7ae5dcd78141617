"""`argo-chatops check`: every row ok against healthy stand-ins, and each broken one named
with a hint while the others stay ok."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.check import PROBE_PREFIX, Row, run_checks
from bot.settings import Settings
from bot.store import Store
from stand_ins import fake_slack
from stand_ins.s3_server import S3Server
from tests.conftest import ARGO_TOKEN, BOT_TOKEN, ROOT, SIGNING_SECRET, WEBHOOK_SECRET, Bot

ROWS = ["slack", "argo", "s3", "database", "public_url"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The rows other than `database` do not depend on the backend: SQLite only here."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def closed_port(unused_tcp_port_factory: Any) -> int:
    return int(unused_tcp_port_factory())


def broken(bot: Bot, **changes: Any) -> Settings:
    values = {k: SecretStr(v) if k.endswith(("token", "key")) else v for k, v in changes.items()}
    return bot.settings.model_copy(update=values)


def by_name(rows: list[Row]) -> dict[str, Row]:
    assert [row.name for row in rows] == ROWS
    return {row.name: row for row in rows}


def only_failure(rows: list[Row]) -> Row:
    failed = [row for row in rows if not row.ok]
    assert len(failed) == 1, rows
    assert failed[0].hint, "a failing row always says what to do"
    return failed[0]


async def test_every_row_is_ok_against_healthy_stand_ins(bot: Bot, s3_server: S3Server) -> None:
    rows = by_name(await run_checks(bot.settings))
    assert all(row.ok for row in rows.values()), rows
    assert "all 8 scopes granted" in rows["slack"].detail
    assert "argo-chatops-notify present" in rows["argo"].detail
    assert "system:serviceaccount:argo:argo-chatops" in rows["argo"].detail
    assert "write, read, presigned GET and delete ok" in rows["s3"].detail
    assert "schema version" in rows["database"].detail
    assert "/hooks/argo answers" in rows["public_url"].detail
    assert await s3_server.list_keys(PROBE_PREFIX) == [], "the probe object is cleaned up"
    # What the stand-ins saw: a real auth.test and the Argo reads, nothing created.
    assert len(bot.slack.calls_to("auth.test")) == 1
    assert bot.argo.created == []


@pytest.mark.postgres
async def test_the_database_row_accepts_a_migrated_postgresql(bot: Bot, postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    try:
        await store.migrate()
    finally:
        await store.close()
    rows = by_name(await run_checks(broken(bot, database_url=postgres_url)))
    assert rows["database"].ok, rows["database"]
    assert rows["database"].detail.startswith("postgresql://")


async def test_a_wrong_slack_token_fails_the_slack_row(bot: Bot) -> None:
    row = only_failure(await run_checks(broken(bot, slack_bot_token="xoxb-wrong-token-123")))
    assert row.name == "slack"
    assert "invalid_auth" in row.detail and "SLACK_BOT_TOKEN" in row.hint
    assert "xoxb-wrong-token-123" not in row.detail + row.hint


async def test_missing_scopes_fail_the_slack_row_naming_them(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes = tuple(s for s in fake_slack.SCOPES if s not in ("chat:write.public", "files:read"))
    monkeypatch.setattr(fake_slack, "SCOPES", scopes)
    row = only_failure(await run_checks(bot.settings))
    assert row.name == "slack"
    assert "chat:write.public, files:read" in row.detail
    assert "reinstall" in row.hint and "deploy/slack-app-manifest.yaml" in row.hint


async def test_unreachable_slack_fails_the_slack_row(bot: Bot, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/api/"
    row = only_failure(await run_checks(broken(bot, slack_api_url=url)))
    assert row.name == "slack" and "cannot reach" in row.detail and "SLACK_API_URL" in row.hint


async def test_a_wrong_argo_token_fails_the_argo_row(bot: Bot) -> None:
    row = only_failure(await run_checks(broken(bot, argo_token="not-the-token")))
    assert row.name == "argo"
    assert "refused the token" in row.detail and "ARGO_TOKEN" in row.hint


async def test_a_namespace_the_token_may_not_use_fails_the_argo_row(bot: Bot) -> None:
    row = only_failure(await run_checks(broken(bot, argo_namespace="team-b")))
    assert row.name == "argo"
    assert "forbidden" in row.detail and "rbac.yaml" in row.hint


async def test_a_missing_notify_template_fails_the_argo_row(bot: Bot) -> None:
    del bot.argo.templates["argo-chatops-notify"]
    row = only_failure(await run_checks(bot.settings))
    assert row.name == "argo"
    assert "argo-chatops-notify missing" in row.detail
    assert "workflows/templates/argo-chatops-notify.yaml" in row.hint


async def test_unreachable_argo_fails_the_argo_row(bot: Bot, closed_port: int) -> None:
    row = only_failure(
        await run_checks(broken(bot, argo_server_url=f"http://127.0.0.1:{closed_port}"))
    )
    assert row.name == "argo" and "cannot reach" in row.detail and "ARGO_SERVER_URL" in row.hint


async def test_a_missing_bucket_fails_the_s3_row(bot: Bot) -> None:
    row = only_failure(await run_checks(broken(bot, s3_bucket="no-such-bucket")))
    assert row.name == "s3"
    assert "no-such-bucket does not exist" in row.detail and "S3_BUCKET" in row.hint


async def test_unreachable_s3_fails_the_s3_row(bot: Bot, closed_port: int) -> None:
    row = only_failure(
        await run_checks(broken(bot, s3_endpoint_url=f"http://127.0.0.1:{closed_port}"))
    )
    assert row.name == "s3" and "cannot reach" in row.detail and "S3_ENDPOINT_URL" in row.hint


async def test_a_missing_sqlite_file_fails_the_database_row(bot: Bot, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.db"
    row = only_failure(await run_checks(broken(bot, database_url=f"sqlite:///{missing}")))
    assert row.name == "database" and "does not exist" in row.detail
    assert not missing.exists(), "check must not create the database"


async def test_an_unmigrated_database_fails_the_database_row(bot: Bot, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    row = only_failure(await run_checks(broken(bot, database_url=f"sqlite:///{empty}")))
    assert row.name == "database"
    assert "no schema" in row.detail and "argo-chatops migrate" in row.hint


async def test_an_unreachable_postgresql_fails_without_showing_its_password(
    bot: Bot, closed_port: int
) -> None:
    url = f"postgresql://chatops:pg-password-42@127.0.0.1:{closed_port}/chatops"
    row = only_failure(await run_checks(broken(bot, database_url=url)))
    assert row.name == "database" and "cannot use" in row.detail and "DATABASE_URL" in row.hint
    assert "pg-password-42" not in row.detail + row.hint
    assert f"chatops:[redacted]@127.0.0.1:{closed_port}/chatops" in row.detail


async def test_an_unreachable_public_url_fails_its_row(bot: Bot, closed_port: int) -> None:
    row = only_failure(await run_checks(broken(bot, public_url=f"http://127.0.0.1:{closed_port}")))
    assert row.name == "public_url" and "unreachable" in row.detail and "PUBLIC_URL" in row.hint


async def test_a_public_url_served_by_something_else_fails_its_row(bot: Bot) -> None:
    row = only_failure(await run_checks(broken(bot, public_url=bot.slack.url)))
    assert row.name == "public_url" and "HTTP 404" in row.detail


def environment(settings: Settings, **overrides: str) -> dict[str, str]:
    """The service's environment as an operator would set it."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value)
    env.update(overrides)
    return env


async def run_cli(settings: Settings, **overrides: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "check",
        cwd=ROOT,
        env=environment(settings, **overrides),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_command_prints_the_table_and_exits_zero_when_all_is_well(bot: Bot) -> None:
    code, out, err = await run_cli(bot.settings, LOG_LEVEL="DEBUG")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert [line.split()[:2] for line in lines[1:6]] == [[name, "ok"] for name in ROWS]
    assert lines[-1] == "all ok"
    # Its logs (DEBUG, so the HTTP clients talk a lot) are JSON lines without a secret.
    assert err.strip(), "DEBUG logging produced nothing"
    for line in err.splitlines():
        event = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(event)
    for secret in (BOT_TOKEN, SIGNING_SECRET, ARGO_TOKEN, WEBHOOK_SECRET):
        assert secret not in out + err


async def test_the_command_exits_non_zero_with_a_hint_when_a_row_fails(bot: Bot) -> None:
    code, out, _ = await run_cli(bot.settings, S3_BUCKET="no-such-bucket")
    assert code == 1
    [s3_line] = [line for line in out.splitlines() if line.startswith("s3 ")]
    assert s3_line.split()[1] == "FAIL"
    assert "hint: Set S3_BUCKET" in out
    assert out.splitlines()[-1] == "1 of 5 failed: s3"


async def test_a_dependency_that_hangs_fails_its_row_within_the_budget(bot: Bot) -> None:
    bot.argo.latency = 5.0
    started = time.monotonic()
    rows = by_name(await run_checks(bot.settings, row_seconds=1.0))
    assert time.monotonic() - started < 4.0
    assert not rows["argo"].ok
    assert rows["argo"].detail in (
        "no answer within 1 s",
        "cannot reach the Argo Server: the Argo Server did not answer in time",
    )
    assert rows["slack"].ok and rows["s3"].ok
