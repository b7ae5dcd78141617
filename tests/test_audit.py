"""The audit trail: every command, click, file, form and hook leaves a row and a log line.

Rows are written in the background after the ack; the tests wait for the bot's background
work and then read the store (and, for `/argo audit`, what the admin was answered).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.audit import ANONYMOUS_ROWS_PER_MINUTE
from bot.database import open_database
from bot.models import AuditEntry
from bot.store import Store
from tests.conftest import Bot
from tests.lifecycle_support import announcements, root_of, start
from tests.slack_deliveries import BOT_USER, share

ADMIN_POLICY = "admins: [UADMIN]\n"


async def trail(bot: Bot, target: str | None = None) -> list[AuditEntry]:
    await bot.wait_idle()
    return list(reversed(await bot.services.store.recent_audit(target=target, limit=100)))


def brief(entries: list[AuditEntry]) -> list[tuple[Any, ...]]:
    return [(e.action, e.actor, e.channel, e.target, e.outcome) for e in entries]


async def admin_bot(bot_factory: Any, tmp_path: Path) -> Bot:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ADMIN_POLICY)
    return await bot_factory(policy_file=policy)


async def test_a_run_is_audited_from_the_command_to_its_exit_hook(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=2")
    entries = await trail(bot)
    assert brief(entries) == [
        ("command", "U1", "C1", name, "ok"),
        ("hook", None, None, name, "ok"),
    ]
    assert entries[0].detail == "run csv-summary"
    assert entries[1].detail == "accepted"
    assert [brief(await trail(bot, name))] == [brief(entries)]


async def test_mistakes_and_denials_are_audited_with_what_the_person_was_told(
    bot_factory: Any, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("templates:\n  csv-summary: {users: [U2]}\n")
    bot = await bot_factory(policy_file=policy)
    for text in ('run csv-summary title="open', "run no-such-template", "run csv-summary", "hlep"):
        await bot.command(text)
        await bot.wait_idle()
    entries = await trail(bot)
    assert brief(entries) == [
        ("command", "U1", "C1", None, "invalid"),
        ("command", "U1", "C1", "no-such-template", "invalid"),
        ("command", "U1", "C1", "csv-summary", "denied"),
        ("command", "U1", "C1", None, "invalid"),
    ]
    assert entries[0].detail.startswith("run: I could not read that command")
    assert entries[1].detail.startswith("There is no workflow template `no-such-template`")
    assert entries[2].detail == (
        "You may not run `csv-summary`. Ask whoever runs this bot if you need to."
    )
    assert entries[3].detail == "unknown verb hlep"
    assert bot.argo.created == []


async def test_buttons_and_lifecycle_verbs_are_audited(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    [failed] = announcements(bot, root_of(bot, name).ts)
    await bot.command(f"status {name}", user_id="U2")
    await bot.wait_idle()
    await bot.click("argo_retry", failed, user_id="U2")
    await bot.wait_idle()
    await bot.click("argo_logs", failed, user_id="U3")
    entries = [e for e in await trail(bot) if e.action != "hook"]
    assert brief(entries) == [
        ("command", "U1", "C1", name, "ok"),
        ("command", "U2", "C1", name, "ok"),
        ("button", "U2", "C1", name, "denied"),
        ("button", "U3", "C1", name, "ok"),
    ]
    assert entries[1].detail == "status"
    assert entries[2].detail.startswith(f"argo_retry: You may not retry `{name}`")
    assert entries[3].detail == "argo_logs"


async def test_file_started_runs_are_audited(bot: Bot) -> None:
    file = bot.slack.add_file("sales.csv", b"city,temperature\nOslo,3\n")
    await share(bot, f"<@{BOT_USER}> run summarize-csv", [file])
    [name] = await bot.started_runs(1)
    entries = [e for e in await trail(bot) if e.action != "hook"]
    assert brief(entries) == [("file", "U1", "C1", name, "ok")]
    assert entries[0].detail == "run summarize-csv"


async def test_exit_hooks_with_a_bad_token_or_an_unknown_workflow_are_audited(bot: Bot) -> None:
    assert (await bot.hook("csv-summary-nope1", token="0" * 64)).status == 401
    assert (await bot.hook("csv-summary-nope2")).status == 404
    assert brief(await trail(bot)) == [
        ("hook", None, None, "csv-summary-nope1", "denied"),
        ("hook", None, None, "csv-summary-nope2", "invalid"),
    ]
    assert [e.detail for e in await trail(bot)] == ["bad token", "unknown workflow"]


async def test_rows_for_anonymous_callers_are_capped_but_every_call_is_logged(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    for n in range(ANONYMOUS_ROWS_PER_MINUTE + 10):
        assert (await bot.hook(f"flood-{n}", token="0" * 64)).status == 401
    rows = await trail(bot)
    # The cap is per minute: a minute boundary in the middle lets a few more through.
    assert ANONYMOUS_ROWS_PER_MINUTE <= len(rows) < ANONYMOUS_ROWS_PER_MINUTE + 10
    logged = [r for r in caplog.records if getattr(r, "audit", None)]
    assert len(logged) == ANONYMOUS_ROWS_PER_MINUTE + 10


async def test_each_entry_is_also_a_structured_log_line(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    await bot.command("help", user_id="U4", channel_id="C9")
    await bot.wait_idle()
    [record] = [r for r in caplog.records if getattr(r, "audit", None)]
    assert record.getMessage() == "audit: command ok"
    assert record.audit == {  # type: ignore[attr-defined]
        "actor": "U4",
        "channel": "C9",
        "action": "command",
        "target": None,
        "outcome": "ok",
        "detail": "help",
    }


async def test_admins_read_the_audit_trail_of_one_workflow(
    bot_factory: Any, tmp_path: Path
) -> None:
    bot = await admin_bot(bot_factory, tmp_path)
    name = await start(bot, "run csv-summary rows=2")
    await start(bot, "run csv-summary rows=3", user_id="U2")
    await bot.command(f"audit {name}", user_id="UADMIN")
    await bot.wait_idle()
    answer = bot.slack.responses[-1].body
    shown = json.dumps(answer, ensure_ascii=False)
    assert answer["text"] == f"Audit trail of `{name}`: 2 entries"
    assert "<@U1> in <#C1> · command `" + name + "` · *ok* · run csv-summary" in shown
    assert "exit hook · hook `" + name + "` · *ok* · accepted" in shown
    assert "<@U2>" not in shown  # the other run is not this workflow's
    # Without a workflow: the newest entries of everything, the admin's own question included.
    await bot.command("audit", user_id="UADMIN")
    await bot.wait_idle()
    everything = json.dumps(bot.slack.responses[-1].body)
    assert "<@U2>" in everything and "<@UADMIN>" in everything


async def test_only_admins_may_read_the_audit_trail(bot_factory: Any, tmp_path: Path) -> None:
    bot = await admin_bot(bot_factory, tmp_path)
    await bot.command("audit", user_id="U1")
    await bot.wait_idle()
    assert bot.slack.responses[-1].body["text"] == (
        ":warning: Only admins named in the access policy (`admins` in `POLICY_FILE`) may read "
        "the audit trail."
    )
    assert brief(await trail(bot)) == [("command", "U1", "C1", None, "denied")]


async def test_without_a_policy_nobody_reads_the_audit_trail(bot: Bot) -> None:
    await bot.command("audit", user_id="U1")
    await bot.wait_idle()
    assert "Only admins named in the access policy" in bot.slack.responses[-1].body["text"]


async def test_a_failing_audit_write_never_breaks_the_action(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    async with bot.services.store.database.transaction() as connection:
        await connection.execute("DROP TABLE audit_log")
    name = await start(bot, "run csv-summary rows=2")
    await bot.wait_idle()
    assert "succeeded" in announcements(bot, root_of(bot, name).ts)[0].text
    assert any(name in json.dumps(post.body) for post in bot.slack.responses)
    assert any("could not store an audit entry" in r.getMessage() for r in caplog.records)


async def test_migrating_a_database_of_schema_4_adds_the_audit_log_and_the_rate_indexes(
    database_url: str,
) -> None:
    store = Store.from_url(database_url)
    await store.migrate()
    await store.close()
    # Take the database back to what schema step 4 left.
    database = open_database(database_url)
    async with database.transaction() as connection:
        await connection.execute("DROP TABLE audit_log")
        await connection.execute("DROP INDEX runs_by_user")
        await connection.execute("DROP INDEX runs_by_channel")
        await connection.execute("DELETE FROM schema_info WHERE version >= 5")
    store = Store.from_url(database_url)
    try:
        await store.migrate()
        await store.migrate()  # idempotent
        assert await store.schema_version() == store.latest_schema_version >= 5
        list_indexes = {
            "sqlite": "SELECT name FROM pragma_index_list('runs')",
            "postgresql": "SELECT indexname AS name FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = 'runs'",
        }[database.dialect]
        async with database.connection() as connection:
            indexes = {row["name"] for row in await connection.fetch(list_indexes)}
        assert {"runs_by_user", "runs_by_channel"} <= indexes
        await store.add_audit(
            AuditEntry(at=1.0, actor="U1", action="command", outcome="ok", target="x")
        )
        [entry] = await store.recent_audit(target="x")
        assert (entry.actor, entry.outcome, entry.channel, entry.detail) == ("U1", "ok", None, "")
    finally:
        await store.close()
        await database.close()
