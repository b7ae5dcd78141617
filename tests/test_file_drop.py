"""Files shared in Slack become workflow inputs: mentions with files and drop zones.

Every test goes through the signed `/slack/events` endpoint with the fake Slack serving the
file bytes, and checks what landed in S3 (bytes and key), what the Argo emulator received and
what the person was told in the thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.database import open_database
from bot.models import RunState
from bot.settings import describe_validation_error
from bot.store import Store
from stand_ins.fake_slack import FakeSlack, Message
from stand_ins.s3_server import S3Server
from stand_ins.slack_requests import app_mention_event, file_share_event
from tests.conftest import BOT_TOKEN, Bot, make_settings
from tests.slack_deliveries import BOT_USER, deliver_event, empty_bucket, share
from tests.test_run_command import schema_validator

MENTION = f"<@{BOT_USER}>"
CSV = b"city,temperature\nOslo,3.5\nLima,20\nOsaka,11\n"
DROP_ZONE = "C0DROPS"
MiB = 1024 * 1024

JOIN_SCRIPT = """\
import os
out = os.environ["OUT"]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as joined:
    for side in ("LEFT", "RIGHT"):
        with open(os.environ[side]) as part:
            joined.write(part.read())
"""
CSV_JOIN = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "csv-join",
        "namespace": "argo",
        "labels": {"argo-chatops/enabled": "true"},
    },
    "spec": {
        "entrypoint": "join",
        "arguments": {"artifacts": [{"name": "left"}, {"name": "right"}]},
        "templates": [
            {
                "name": "join",
                "inputs": {
                    "artifacts": [
                        {"name": "left", "path": "/tmp/in/left.csv", "archive": {"none": {}}},
                        {"name": "right", "path": "/tmp/in/right.csv", "archive": {"none": {}}},
                    ]
                },
                "outputs": {
                    "artifacts": [
                        {
                            "name": "joined",
                            "path": "/tmp/out/joined.csv",
                            "archive": {"none": {}},
                            "s3": {"key": "sessions/{{workflow.name}}/join/joined.csv"},
                        }
                    ]
                },
                "script": {
                    "image": "python:3.12-alpine",
                    "command": ["python"],
                    "env": [
                        {"name": "LEFT", "value": "{{inputs.artifacts.left.path}}"},
                        {"name": "RIGHT", "value": "{{inputs.artifacts.right.path}}"},
                        {"name": "OUT", "value": "{{outputs.artifacts.joined.path}}"},
                    ],
                    "source": JOIN_SCRIPT,
                },
            }
        ],
    },
}


# -- helpers ---------------------------------------------------------------------------------


def bot_replies(bot: Bot, channel: str, thread_ts: str) -> list[Message]:
    return [
        m
        for m in bot.slack.thread(channel, thread_ts)
        if m.ts != thread_ts and m.user == bot.slack.bot_user_id
    ]


def told(bot: Bot, channel: str, thread_ts: str) -> str:
    """Everything the bot said in a thread, as one string (text and blocks, latest versions)."""
    return "\n".join(
        f"{m.text} {json.dumps(m.blocks)}" for m in bot_replies(bot, channel, thread_ts)
    )


def status_message(bot: Bot, channel: str, thread_ts: str) -> Message:
    """The bot's own message for a run in a person's thread (posted when the files came)."""
    [status] = [
        m
        for m in bot_replies(bot, channel, thread_ts)
        if "Received" in json.dumps([m.blocks, *(v.blocks for v in m.history)])
    ]
    return status


def input_artifacts(manifest: dict[str, Any]) -> dict[str, str]:
    return {a["name"]: a["s3"]["key"] for a in manifest["spec"]["arguments"].get("artifacts", [])}


async def assert_nothing_started(bot: Bot, s3_server: S3Server) -> None:
    assert bot.argo.created == []
    assert await s3_server.list_keys("sessions/") == []
    assert await s3_server.list_multipart_uploads() == []


@pytest.fixture(autouse=True)
async def no_objects_left_by_other_tests(s3_server: S3Server) -> None:
    await empty_bucket(s3_server)


@pytest.fixture
async def drop_zone_bot(bot_factory: Any, tmp_path: Path) -> Bot:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"""\
drop_zones:
  {DROP_ZONE}:
    template: summarize-csv
    parameters: {{title: Dropped numbers, format: markdown}}
    file_types: [csv, tsv]
"""
    )
    return await bot_factory(routes_file=routes)


@pytest.fixture
async def other_slack() -> AsyncIterator[FakeSlack]:
    """A second file host: another workspace, or someone pretending to be Slack."""
    async with FakeSlack(bot_token="xoxb-someone-else") as fake:
        yield fake


# -- mentions with files -----------------------------------------------------------------------


async def test_mention_with_a_csv_summarises_that_csv_and_answers_in_its_thread(
    bot: Bot, s3_server: S3Server
) -> None:
    file = bot.slack.add_file("sales.csv", CSV)
    thread = await share(bot, f"{MENTION} run summarize-csv title=Sales", [file])
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    # S3 got the bytes under the run's inputs; Argo got them as the template's input artifact.
    key = f"sessions/{name}/inputs/sales.csv"
    assert await s3_server.read_object(key) == CSV
    [manifest] = bot.argo.created
    schema_validator().validate(manifest)
    assert manifest["spec"]["arguments"]["artifacts"] == [{"name": "data", "s3": {"key": key}}]
    assert manifest["spec"]["arguments"]["parameters"] == [{"name": "title", "value": "Sales"}]
    # ...and the workflow really summarised that CSV.
    summary = await s3_server.read_object(f"sessions/{name}/summarize/summary.markdown")
    assert b"# Sales" in summary and b"3 rows, 2 columns." in summary

    # The token went to the file host only, once.
    [download] = bot.slack.downloads
    assert download.authorized and download.file_id == file["id"]

    # The person's message is the thread root; the bot only replied in its thread.
    assert [m for m in bot.slack.messages["C1"] if m.user == "UBOT" and not m.thread_ts] == []
    status, result = bot_replies(bot, "C1", thread)
    sha = hashlib.sha256(CSV).hexdigest()
    status_text = json.dumps(status.blocks)
    assert name in status.text and "sales.csv" in status_text and sha[:12] in status_text
    assert "Succeeded" in status_text  # edited at the end, like a thread root
    versions = [json.dumps(v.blocks) for v in status.history]
    assert any("Received 1 file" in v for v in versions)
    assert any("Uploaded" in v for v in versions)
    assert "succeeded" in result.text and "summary.markdown" in json.dumps(result.blocks)

    # Size and SHA-256 are recorded with the run.
    stored = await bot.services.store.get_run(name)
    assert stored is not None and stored.thread_ts == thread and stored.root_ts == status.ts
    [recorded] = stored.inputs
    assert (recorded.artifact, recorded.file_name, recorded.key) == ("data", "sales.csv", key)
    assert (recorded.size, recorded.sha256) == (len(CSV), sha)


async def test_mention_with_two_files_matches_them_by_name_then_in_declared_order(
    bot: Bot, s3_server: S3Server
) -> None:
    bot.argo.add_template(CSV_JOIN)
    first = bot.slack.add_file("b.csv", b"b\n2\n")
    second = bot.slack.add_file("a.csv", b"a\n1\n")
    # Uploaded as b, a: `left=a.csv` puts a first; b takes the remaining input, `right`.
    await share(bot, f"{MENTION} run csv-join left=a.csv", [first, second])
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    [manifest] = bot.argo.created
    schema_validator().validate(manifest)
    assert input_artifacts(manifest) == {
        "left": f"sessions/{name}/inputs/a.csv",
        "right": f"sessions/{name}/inputs/b.csv",
    }
    assert manifest["spec"]["arguments"]["parameters"] == []
    assert await s3_server.read_object(f"sessions/{name}/inputs/a.csv") == b"a\n1\n"
    assert await s3_server.read_object(f"sessions/{name}/join/joined.csv") == b"a\n1\nb\n2\n"


async def test_files_that_cannot_be_matched_to_inputs_are_refused_before_any_download(
    bot: Bot, s3_server: S3Server
) -> None:
    bot.argo.add_template(CSV_JOIN)
    files = [bot.slack.add_file(f"{n}.csv", CSV) for n in "xyz"]
    thread = await share(bot, f"{MENTION} run csv-join", files)
    other = await share(bot, f"{MENTION} run csv-join left=nope.csv", files[:2])
    await bot.wait_idle()
    assert "3 files are attached but `csv-join` takes 2" in told(bot, "C1", thread)
    assert "no attached file is called `nope.csv`" in told(bot, "C1", other)
    assert bot.slack.downloads == []
    await assert_nothing_started(bot, s3_server)


async def test_one_upload_delivered_twice_and_retried_starts_one_run(
    bot: Bot, bot_factory: Any, s3_server: S3Server
) -> None:
    file = bot.slack.add_file("sales.csv", CSV)
    text = f"{MENTION} run summarize-csv"
    message = bot.slack.add_user_message("C1", text, files=[file])
    mention = app_mention_event(text, ts=message.ts, files=[file])
    upload = file_share_event([file], text=text, ts=message.ts)
    # Slack sends the mention and the file share for the same message, then retries both.
    for delivery in [
        deliver_event(bot, mention, event_id="EvMENTION"),
        deliver_event(bot, upload, event_id="EvUPLOAD"),
        deliver_event(bot, mention, event_id="EvMENTION", retry_num=1),
        deliver_event(bot, upload, event_id="EvUPLOAD", retry_num=2),
    ]:
        assert (await delivery).status == 200
    await bot.wait_idle()
    # A replica started later (or this one after a restart) remembers it too.
    restarted = await bot_factory()
    assert (
        await deliver_event(restarted, mention, event_id="EvMENTION", retry_num=3)
    ).status == 200
    await restarted.wait_idle()

    assert len(bot.argo.created) == 1
    assert len(bot.slack.downloads) == 1
    assert len(await s3_server.list_keys("sessions/")) == 2  # the input and the summary
    assert len(bot_replies(bot, "C1", message.ts)) == 2  # one status message, one result


async def test_a_mention_without_a_command_gets_the_mention_help(bot: Bot) -> None:
    thread = await share(bot, f"{MENTION} hello there", [])
    await bot.wait_idle()
    assert "I don't know `hello`" in told(bot, "C1", thread)
    assert "run <template>" in told(bot, "C1", thread)
    assert bot.argo.created == []


async def test_a_mention_with_a_lifecycle_verb_points_at_the_mention_help(bot: Bot) -> None:
    thread = await share(bot, f"{MENTION} status csv-summary-abcde", [])
    await bot.wait_idle()
    assert "run <template>" in told(bot, "C1", thread)
    assert bot.argo.created == []


# -- drop zones --------------------------------------------------------------------------------


async def test_a_plain_drop_in_a_drop_zone_runs_its_template_in_the_drop_thread(
    drop_zone_bot: Bot, s3_server: S3Server
) -> None:
    bot = drop_zone_bot
    file = bot.slack.add_file("week 12.csv", CSV)
    thread = await share(bot, "", [file], channel=DROP_ZONE, as_mention=False, as_file_share=True)
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    [manifest] = bot.argo.created
    key = f"sessions/{name}/inputs/week_12.csv"
    assert input_artifacts(manifest) == {"data": key}
    assert manifest["spec"]["workflowTemplateRef"] == {"name": "summarize-csv"}
    assert manifest["spec"]["arguments"]["parameters"] == [
        {"name": "title", "value": "Dropped numbers"},
        {"name": "format", "value": "markdown"},
    ]
    assert await s3_server.read_object(key) == CSV
    summary = await s3_server.read_object(f"sessions/{name}/summarize/summary.markdown")
    assert summary.startswith(b"# Dropped numbers")
    assert "succeeded" in told(bot, DROP_ZONE, thread)


async def test_name_value_words_in_a_drop_override_the_zone_defaults(drop_zone_bot: Bot) -> None:
    bot = drop_zone_bot
    file = bot.slack.add_file("sales.csv", CSV)
    await share(bot, "format=json", [file], channel=DROP_ZONE, as_mention=False, as_file_share=True)
    [name] = await bot.started_runs(1)
    await bot.wait_idle()
    [manifest] = bot.argo.created
    assert {"name": "format", "value": "json"} in manifest["spec"]["arguments"]["parameters"]
    assert json.loads(await bot.argo.read_object(f"sessions/{name}/summarize/summary.json"))


async def test_a_drop_outside_drop_zones_is_ignored(drop_zone_bot: Bot) -> None:
    bot = drop_zone_bot
    file = bot.slack.add_file("sales.csv", CSV)
    await share(bot, "", [file], channel="C1", as_mention=False, as_file_share=True)
    await bot.wait_idle()
    assert bot.argo.created == [] and bot.slack.downloads == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_a_file_type_the_drop_zone_does_not_take_is_refused_unread(
    drop_zone_bot: Bot, s3_server: S3Server
) -> None:
    bot = drop_zone_bot
    file = bot.slack.add_file("notes.exe", b"MZ...", mimetype="application/octet-stream")
    thread = await share(bot, "", [file], channel=DROP_ZONE, as_mention=False, as_file_share=True)
    await bot.wait_idle()
    assert "`notes.exe` is not a file type I take here (allowed: csv, tsv)" in told(
        bot, DROP_ZONE, thread
    )
    assert bot.slack.downloads == []
    await assert_nothing_started(bot, s3_server)


# -- limits and hostile input ----------------------------------------------------------------------


async def test_a_file_declared_too_big_is_refused_without_downloading_it(
    bot_factory: Any, s3_server: S3Server
) -> None:
    bot = await bot_factory(max_upload_bytes=1000)
    file = bot.slack.add_file("big.csv", b"x" * 2000)
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()
    assert "`big.csv` is 2.0 KB; the limit is 1000 B." in told(bot, "C1", thread)
    assert bot.slack.downloads == []
    await assert_nothing_started(bot, s3_server)


async def test_a_file_bigger_than_slack_said_is_cut_off_and_its_multipart_upload_aborted(
    bot_factory: Any, s3_server: S3Server
) -> None:
    bot = await bot_factory(max_upload_bytes=12 * MiB)
    size = 20 * MiB  # over two 5 MiB parts: the relay has begun a multipart upload

    def chunks() -> Any:
        for _ in range(size // MiB):
            yield b"7" * MiB

    file = bot.slack.add_file_stream("huge.csv", size, chunks)
    file["size"] = 1024  # what the event claims
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()

    assert "`huge.csv` is larger than the 12.0 MB limit" in told(bot, "C1", thread)
    assert "Nothing was started" in told(bot, "C1", thread)
    await assert_nothing_started(bot, s3_server)  # no object, no orphaned multipart upload
    assert status_message(bot, "C1", thread).deleted
    [run] = [m.text.split()[2] for m in bot_replies(bot, "C1", thread) if m.deleted]
    stored = await bot.services.store.get_run(run)
    assert stored is not None and stored.state is RunState.REJECTED and stored.inputs == ()


async def test_an_upload_s3_refuses_starts_nothing(bot_factory: Any, s3_server: S3Server) -> None:
    bot = await bot_factory(s3_bucket="no-such-bucket")
    file = bot.slack.add_file("sales.csv", CSV)
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()
    assert "I could not store `sales.csv` in the artifact bucket" in told(bot, "C1", thread)
    await assert_nothing_started(bot, s3_server)
    assert status_message(bot, "C1", thread).deleted


@pytest.mark.parametrize(
    ("name", "safe", "shown"),
    [
        ("../../etc/passwd.csv", "passwd.csv", "../../etc/passwd.csv"),
        ("..\\..\\windows\\win.ini.csv", "win.ini.csv", "..\\..\\windows\\win.ini.csv"),
        # A right-to-left override makes `reportgpj.csv` look like `reportvsc.jpg`.
        ("report\u202egpj.csv", "reportgpj.csv", "reportgpj.csv"),
        ("tab\tnull\x00line\r\nfeed.csv", "tabnulllinefeed.csv", "tabnulllinefeed.csv"),
        # Full-width `Sales/` (U+FF33 ... U+FF0F) is a path separator once normalised.
        ("\uff33\uff41\uff4c\uff45\uff53\uff0f2024.csv", "2024.csv", None),
        ("\u30c7\u30fc\u30bf.csv", "file.csv", None),  # nothing ASCII is left of the stem
        (".hidden.csv", "hidden.csv", None),
        ("x" * 400 + ".csv", "x" * 96 + ".csv", "x" * 255),
    ],
)
async def test_hostile_file_names_become_safe_keys(
    bot: Bot, s3_server: S3Server, name: str, safe: str, shown: str | None
) -> None:
    file = bot.slack.add_file(name, CSV)
    await share(bot, f"{MENTION} run summarize-csv", [file])
    [run] = await bot.started_runs(1)
    await bot.wait_idle()
    key = f"sessions/{run}/inputs/{safe}"
    assert input_artifacts(bot.argo.created[0]) == {"data": key}
    assert await s3_server.read_object(key) == CSV
    assert await s3_server.list_keys(f"sessions/{run}/inputs/") == [key]
    stored = await bot.services.store.get_run(run)
    assert stored is not None and stored.inputs[0].file_name == (shown or name)


async def test_two_files_with_the_same_name_get_distinct_keys(
    bot: Bot, s3_server: S3Server
) -> None:
    bot.argo.add_template(CSV_JOIN)
    files = [bot.slack.add_file("data.csv", b"l\n"), bot.slack.add_file("DATA.csv", b"r\n")]
    await share(bot, f"{MENTION} run csv-join", files)
    [run] = await bot.started_runs(1)
    await bot.wait_idle()
    assert input_artifacts(bot.argo.created[0]) == {
        "left": f"sessions/{run}/inputs/data.csv",
        "right": f"sessions/{run}/inputs/DATA-2.csv",
    }
    assert await s3_server.read_object(f"sessions/{run}/join/joined.csv") == b"l\nr\n"


# -- the bot token goes only to Slack ------------------------------------------------------------


async def test_a_file_url_on_another_host_never_gets_the_token(
    bot: Bot, other_slack: FakeSlack, s3_server: S3Server
) -> None:
    file = other_slack.add_file("sales.csv", CSV)  # not a host in SLACK_FILE_HOSTS
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()
    assert other_slack.downloads == []
    assert "does not point at Slack's file servers" in told(bot, "C1", thread)
    await assert_nothing_started(bot, s3_server)


@pytest.fixture
async def redirector(other_slack: FakeSlack) -> AsyncIterator[tuple[str, list[str]]]:
    """A file host in SLACK_FILE_HOSTS whose downloads redirect to `/to/<absolute url>`."""
    seen: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        raise web.HTTPFound(request.match_info["target"])

    app = web.Application()
    app.router.add_get("/to/{target:.+}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"{host}:{port}", seen
    await runner.cleanup()


async def test_a_redirect_to_another_host_is_not_followed_with_the_token(
    bot_factory: Any,
    slack: FakeSlack,
    other_slack: FakeSlack,
    redirector: tuple[str, list[str]],
    s3_server: S3Server,
) -> None:
    host, seen = redirector
    bot = await bot_factory(slack_file_hosts=f"{slack.host},{host}")
    elsewhere = other_slack.add_file("sales.csv", CSV)
    file = {**elsewhere, "url_private_download": f"http://{host}/to/{elsewhere['url_private']}"}
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()
    assert seen == [f"Bearer {BOT_TOKEN}"]  # the listed host got it...
    assert other_slack.downloads == []  # ...the host it pointed to got nothing at all
    assert "sent the download of `sales.csv` to another host" in told(bot, "C1", thread)
    await assert_nothing_started(bot, s3_server)


async def test_a_redirect_within_slack_file_hosts_is_followed(
    bot_factory: Any, slack: FakeSlack, redirector: tuple[str, list[str]], s3_server: S3Server
) -> None:
    host, seen = redirector
    bot = await bot_factory(slack_file_hosts=f"{slack.host},{host}")
    hosted = slack.add_file("sales.csv", CSV)
    file = {**hosted, "url_private_download": f"http://{host}/to/{hosted['url_private_download']}"}
    await share(bot, f"{MENTION} run summarize-csv", [file])
    [run] = await bot.started_runs(1)
    await bot.wait_idle()
    assert seen == [f"Bearer {BOT_TOKEN}"]
    assert [d.authorized for d in slack.downloads] == [True]
    assert await s3_server.read_object(f"sessions/{run}/inputs/sales.csv") == CSV


async def test_slacks_sign_in_page_is_detected_and_never_stored(
    bot_factory: Any, slack: FakeSlack, other_slack: FakeSlack, s3_server: S3Server
) -> None:
    # The other workspace's file server does not know our token: it answers its HTML
    # sign-in page with status 200, as Slack does.
    bot = await bot_factory(slack_file_hosts=f"{slack.host},{other_slack.host}")
    file = other_slack.add_file("sales.csv", CSV)
    thread = await share(bot, f"{MENTION} run summarize-csv", [file])
    await bot.wait_idle()
    [download] = other_slack.downloads
    assert not download.authorized
    assert "Slack answered with its sign-in page instead of `sales.csv`" in told(bot, "C1", thread)
    await assert_nothing_started(bot, s3_server)


async def test_a_slack_connect_file_is_looked_up_with_files_info(
    bot: Bot, s3_server: S3Server
) -> None:
    hosted = bot.slack.add_file("shared.csv", CSV)
    stub = {"id": hosted["id"], "mode": "file_access", "file_access": "check_file_info"}
    await share(bot, f"{MENTION} run summarize-csv", [stub])
    [run] = await bot.started_runs(1)
    await bot.wait_idle()
    assert [c.args.get("file") for c in bot.slack.calls_to("files.info")] == [hosted["id"]]
    assert await s3_server.read_object(f"sessions/{run}/inputs/shared.csv") == CSV


# -- set-up and state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ("drop_zones:\n  '#data':\n    template: summarize-csv\n", "is not a channel ID"),
        ("drop_zones:\n  C0A1:\n    parameters: {}\n", "drop_zones.C0A1.template is required"),
        ("drop_zones:\n  C0A1: {template: x}\n  C0A1: {template: y}\n", "duplicate key 'C0A1'"),
        ("drop_zones:\n  C0A1: {template: x, file_types: ['c s v']}\n", "not a file extension"),
        ("drop_zones: [\n", "not valid YAML"),
    ],
)
async def test_a_bad_routes_file_stops_start_up_with_one_clear_line(
    slack: FakeSlack, argo: Any, s3: Any, tmp_path: Path, routes: str, expected: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(routes)
    with pytest.raises(ValueError) as caught:
        make_settings(
            slack=slack, argo=argo, s3=s3, database_url="sqlite://", port=1, routes_file=path
        )
    line = describe_validation_error(caught.value)
    assert line.startswith("configuration error: ROUTES_FILE ") and expected in line
    assert "\n" not in line


async def test_migrate_gives_an_existing_database_the_input_columns(database_url: str) -> None:
    # The schema as the first release left it: no runs.root_ts, no run_inputs.
    database = open_database(database_url)
    async with database.transaction() as connection:
        await connection.execute(
            "CREATE TABLE runs (name VARCHAR(63) PRIMARY KEY, namespace VARCHAR(63) NOT NULL,"
            " template VARCHAR(253) NOT NULL, parameters TEXT NOT NULL,"
            " user_id VARCHAR(64) NOT NULL, channel_id VARCHAR(64) NOT NULL,"
            " thread_ts VARCHAR(32), state VARCHAR(16) NOT NULL, phase VARCHAR(16) NOT NULL,"
            " created_at FLOAT NOT NULL, finished_at FLOAT, announced_at FLOAT,"
            " claim_owner VARCHAR(64), claim_until FLOAT)"
        )
        await connection.execute(
            "INSERT INTO runs VALUES ('old-abcde', 'argo', 'csv-summary', '{}', 'U1', 'C1',"
            " '1.2', 'announced', 'Succeeded', 1.0, 2.0, 3.0, NULL, NULL)"
        )
        await connection.execute(
            "CREATE TABLE slack_events (event_id VARCHAR(128) PRIMARY KEY, seen_at FLOAT)"
        )
        await connection.execute(
            "CREATE TABLE schema_info (version INTEGER PRIMARY KEY, applied_at FLOAT)"
        )
        await connection.execute("INSERT INTO schema_info VALUES (1, 1.0)")
    await database.close()

    store = Store.from_url(database_url)
    try:
        await store.migrate()
        await store.migrate()  # idempotent
        old = await store.get_run("old-abcde")
        assert old is not None and old.root_ts is None and old.inputs == ()
        assert old.state is RunState.ANNOUNCED
        assert await store.schema_version() == store.latest_schema_version
    finally:
        await store.close()
