"""Who may run what, where, how often, and who may change whose runs.

Through the signed HTTP surface like every other test: each denial is asserted with the exact
words the person gets, and with what the stand-ins saw: no Workflow created in Argo, no object
in S3, no thread root in Slack.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bot.models import Run, RunState
from bot.policy import DEFAULT_RUNS_PER_USER_PER_HOUR, PolicyError, load_policy
from bot.settings import Settings, describe_validation_error
from stand_ins.s3_server import S3Server
from stand_ins.slack_requests import new_trigger_id
from tests.conftest import TEMPLATES_DIR, Bot
from tests.lifecycle_support import announcements, put_requests, root_of, start
from tests.slack_deliveries import BOT_USER, empty_bucket, share
from tests.test_settings import REQUIRED

POLICY = """\
admins: [UADMIN]
groups:
  data-team: [U2, U3]
templates:
  csv-summary:
    channels: [CDATA]
    users: [U1, "group:data-team"]
  "*":
    users: ["group:data-team"]
"""
MENTION = f"<@{BOT_USER}>"
CSV = b"city,temperature\nOslo,3.5\nLima,20\n"

# A template that exists in Argo but did not opt in to Slack (no argo-chatops/enabled label).
HIDDEN = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "drop-database", "namespace": "argo"},
    "spec": {
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "target", "value": "prod"}]},
        "templates": [{"name": "main", "container": {"image": "alpine"}}],
    },
}


@pytest.fixture(autouse=True)
async def no_objects_left_by_other_tests(s3_server: S3Server) -> None:
    await empty_bucket(s3_server)


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


async def policy_bot(bot_factory: Any, tmp_path: Path, text: str = POLICY, **more: Any) -> Bot:
    return await bot_factory(policy_file=write_policy(tmp_path, text), **more)


async def answer_to(bot: Bot, text: str, *, user_id: str = "U1", channel_id: str = "C1") -> str:
    """Type a command; the private answer that replaces the ack (its text)."""
    before = len(bot.slack.responses)
    response = await bot.command(text, user_id=user_id, channel_id=channel_id)
    assert response.status == 200
    await bot.wait_idle()
    assert len(bot.slack.responses) > before, f"no answer to {text!r}"
    return str(bot.slack.responses[-1].body["text"])


async def assert_nothing_reached_argo_or_s3(bot: Bot, s3_server: S3Server) -> None:
    assert bot.argo.created == []
    assert [r for r in bot.argo.requests if r.method in ("POST", "PUT", "DELETE")] == []
    assert await s3_server.list_keys("sessions/") == []
    assert await s3_server.list_multipart_uploads() == []
    assert bot.slack.calls_to("chat.postMessage") == []


# -- opt-in templates -------------------------------------------------------------------------


async def test_a_template_without_the_enabled_label_answers_exactly_like_an_unknown_one(
    bot: Bot, s3_server: S3Server
) -> None:
    bot.argo.add_template(HIDDEN)
    hidden = await answer_to(bot, "run drop-database target=staging")
    unknown = await answer_to(bot, "run no-such-thing target=staging")
    assert hidden == unknown.replace("no-such-thing", "drop-database")
    assert hidden == (
        ":warning: There is no workflow template `drop-database`. "
        "Available templates: `csv-summary`, `summarize-csv`."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_templates_lists_only_enabled_templates_and_asks_argo_for_them_by_label(
    bot: Bot,
) -> None:
    bot.argo.add_template(HIDDEN)
    answer = await answer_to(bot, "templates")
    assert "csv-summary" in answer and "summarize-csv" in answer
    assert "drop-database" not in answer and "argo-chatops-notify" not in answer
    [listed] = [r for r in bot.argo.requests if r.path == "/api/v1/workflow-templates/argo"]
    assert listed.query["listOptions.labelSelector"] == "argo-chatops/enabled=true"


async def test_the_exit_hook_notifier_is_never_runnable_even_when_labelled(
    bot: Bot, s3_server: S3Server
) -> None:
    notifier = yaml.safe_load((TEMPLATES_DIR / "argo-chatops-notify.yaml").read_text())
    assert "argo-chatops/enabled" not in notifier["metadata"].get("labels", {})
    notifier["metadata"].setdefault("labels", {})["argo-chatops/enabled"] = "true"
    bot.argo.add_template(notifier)
    answer = await answer_to(bot, "run argo-chatops-notify url=http://evil.example token=x")
    assert answer.startswith(":warning: There is no workflow template `argo-chatops-notify`.")
    assert "argo-chatops-notify" not in await answer_to(bot, "templates")
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_the_run_form_is_not_opened_for_a_template_without_the_label(
    bot: Bot, s3_server: S3Server
) -> None:
    bot.argo.add_template(
        {**HIDDEN, "spec": {**HIDDEN["spec"], "arguments": {"artifacts": [{"name": "dump"}]}}}
    )
    await bot.command("run drop-database", trigger_id=new_trigger_id())
    await bot.wait_idle()
    assert bot.slack.views == []
    [answer] = bot.slack.responses
    assert "There is no workflow template `drop-database`" in answer.body["text"]
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_a_run_whose_template_lost_the_label_cannot_be_resubmitted(
    bot_factory: Any,
) -> None:
    bot = await bot_factory()
    name = await start(bot, "run csv-summary rows=2")
    del bot.argo.templates["csv-summary"]["metadata"]["labels"]["argo-chatops/enabled"]
    # Another replica (the first one caches templates for 30 s) gets the resubmit.
    bot = await bot_factory()
    answer = await answer_to(bot, f"resubmit {name}")
    assert answer.startswith(":warning: There is no workflow template `csv-summary`.")
    assert len(bot.argo.created) == 1


# -- who may run what, where --------------------------------------------------------------------


async def test_a_person_the_template_does_not_name_is_refused(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    answer = await answer_to(bot, "run csv-summary", user_id="U9", channel_id="CDATA")
    assert answer == (
        ":warning: You may not run `csv-summary`. Ask an admin (<@UADMIN>) if you need to."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_a_channel_the_template_does_not_name_is_refused_and_the_right_one_named(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    answer = await answer_to(bot, "run csv-summary", user_id="U1", channel_id="C1")
    assert answer == (
        ":warning: You may not run `csv-summary` in this channel. It may be run in <#CDATA>. "
        "Ask an admin (<@UADMIN>) if you need to."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_a_template_the_policy_does_not_list_falls_under_the_star_rule(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    answer = await answer_to(bot, "run summarize-csv", user_id="U1", channel_id="CDATA")
    assert answer == (
        ":warning: You may not run `summarize-csv`. Ask an admin (<@UADMIN>) if you need to."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_group_members_and_admins_may_run_where_the_policy_says(
    bot_factory: Any, tmp_path: Path
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    bot.argo.auto_run = False
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="U2", channel_id="CDATA")
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="U1", channel_id="CDATA")
    # An admin may run anything anywhere.
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="UADMIN", channel_id="C7")
    assert len(bot.argo.created) == 3


async def test_templates_shows_only_what_this_person_may_run_here(
    bot_factory: Any, tmp_path: Path
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    mine = await answer_to(bot, "templates", user_id="U1", channel_id="CDATA")
    assert "csv-summary" in mine and "summarize-csv" not in mine
    elsewhere = await answer_to(bot, "templates", user_id="U1", channel_id="C1")
    assert elsewhere == "The access policy lets you run no template in this channel."
    team = await answer_to(bot, "templates", user_id="U3", channel_id="CDATA")
    assert "csv-summary" in team and "summarize-csv" in team


async def test_a_file_drop_the_policy_refuses_downloads_and_uploads_nothing(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("drop_zones:\n  C0DROPS:\n    template: summarize-csv\n")
    bot = await policy_bot(
        bot_factory,
        tmp_path,
        "templates:\n  summarize-csv:\n    channels: [CDATA]\n",
        routes_file=routes,
    )
    file = bot.slack.add_file("sales.csv", CSV)
    thread = await share(bot, "", [file], channel="C0DROPS", as_mention=False, as_file_share=True)
    await bot.wait_idle()
    [reply] = [m for m in bot.slack.thread("C0DROPS", thread) if m.ts != thread]
    assert reply.text == (
        "<@U1> :warning: You may not run `summarize-csv` in this channel. It may be run in "
        "<#CDATA>. Ask whoever runs this bot if you need to."
    )
    assert bot.slack.downloads == []
    assert bot.argo.created == []
    assert await s3_server.list_keys() == []


async def test_a_mention_with_files_the_policy_refuses_uploads_nothing(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    file = bot.slack.add_file("sales.csv", CSV)
    thread = await share(bot, f"{MENTION} run summarize-csv", [file], user="U9")
    await bot.wait_idle()
    [reply] = [m for m in bot.slack.thread("C1", thread) if m.ts != thread]
    assert reply.text == (
        "<@U9> :warning: You may not run `summarize-csv`. Ask an admin (<@UADMIN>) if you need to."
    )
    assert bot.slack.downloads == [] and bot.argo.created == []
    assert await s3_server.list_keys() == []


async def test_the_run_form_is_not_opened_for_someone_the_policy_refuses(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path)
    await bot.command("run summarize-csv", user_id="U1", trigger_id=new_trigger_id())
    await bot.wait_idle()
    assert bot.slack.views == []
    [answer] = bot.slack.responses
    assert answer.body["text"] == (
        ":warning: You may not run `summarize-csv`. Ask an admin (<@UADMIN>) if you need to."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


# -- rate limits ------------------------------------------------------------------------------


async def test_runs_per_person_per_hour_are_limited(
    bot_factory: Any, tmp_path: Path, s3_server: S3Server
) -> None:
    bot = await policy_bot(bot_factory, tmp_path, "rate_limits:\n  runs_per_user_per_hour: 2\n")
    bot.argo.auto_run = False
    for _ in range(2):
        assert "Started" in await answer_to(bot, "run csv-summary")
    created = list(bot.argo.created)
    roots = len(bot.slack.calls_to("chat.postMessage"))
    answer = await answer_to(bot, "run csv-summary")
    assert answer == (
        ":warning: You have started 2 runs in the last hour, the most allowed per person. "
        "Nothing was started; try again in 60 minutes."
    )
    assert bot.argo.created == created and len(bot.slack.calls_to("chat.postMessage")) == roots
    # Somebody else is not held back by it.
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="U2")


async def test_runs_per_channel_per_hour_are_limited(bot_factory: Any, tmp_path: Path) -> None:
    bot = await policy_bot(
        bot_factory,
        tmp_path,
        "rate_limits:\n  runs_per_user_per_hour: null\n  runs_per_channel_per_hour: 1\n",
    )
    bot.argo.auto_run = False
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="U1")
    answer = await answer_to(bot, "run csv-summary", user_id="U2")
    assert answer == (
        ":warning: This channel has started 1 run in the last hour, the most allowed per "
        "channel. Nothing was started; try again in 60 minutes."
    )
    assert len(bot.argo.created) == 1
    assert "Started" in await answer_to(bot, "run csv-summary", user_id="U2", channel_id="C2")


async def add_past_runs(bot: Bot, count: int, *, age: timedelta, user_id: str = "U1") -> None:
    for n in range(count):
        await bot.services.store.add_run(
            Run(
                name=f"csv-summary-{user_id.lower()}{n:03d}",
                namespace="argo",
                template="csv-summary",
                user_id=user_id,
                channel_id="C1",
                state=RunState.ANNOUNCED,
                created_at=datetime.now(UTC) - age,
            )
        )


async def test_without_a_policy_a_person_may_start_60_runs_an_hour(
    bot: Bot, s3_server: S3Server
) -> None:
    await add_past_runs(bot, DEFAULT_RUNS_PER_USER_PER_HOUR, age=timedelta(minutes=30))
    answer = await answer_to(bot, "run csv-summary")
    assert answer == (
        ":warning: You have started 60 runs in the last hour, the most allowed per person. "
        "Nothing was started; try again in 30 minutes."
    )
    await assert_nothing_reached_argo_or_s3(bot, s3_server)


async def test_runs_older_than_an_hour_do_not_count(bot: Bot) -> None:
    bot.argo.auto_run = False
    await add_past_runs(bot, DEFAULT_RUNS_PER_USER_PER_HOUR, age=timedelta(minutes=61))
    assert "Started" in await answer_to(bot, "run csv-summary")


async def test_the_rate_limit_count_is_one_indexed_query(bot: Bot) -> None:
    store = bot.services.store
    await add_past_runs(bot, 3, age=timedelta(minutes=5))
    await add_past_runs(bot, 2, age=timedelta(minutes=5), user_id="U2")
    count, oldest = await store.runs_started_since(time.time() - 3600, user_id="U1")
    assert count == 3 and oldest is not None and time.time() - oldest < 400
    assert (await store.runs_started_since(time.time() - 3600, channel_id="C1"))[0] == 5
    assert (await store.runs_started_since(time.time() - 60, channel_id="C1")) == (0, None)


# -- not your run -------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["stop", "terminate", "retry", "resubmit"])
async def test_only_the_person_who_started_a_run_may_change_it(bot: Bot, verb: str) -> None:
    bot.argo.auto_run = False
    name = await start(bot, "run csv-summary rows=3", wait=False)
    answer = await answer_to(bot, f"{verb} {name}", user_id="U2")
    assert answer == (
        f":warning: You may not {verb} `{name}`: <@U1> started it, and only they, an admin or "
        f"someone the access policy allows may {verb} it. Ask whoever runs this bot if you "
        "need to."
    )
    assert put_requests(bot, verb) == [] and len(bot.argo.created) == 1
    assert bot.argo.workflows[name]["spec"].get("shutdown") is None


async def test_buttons_of_someone_elses_run_are_refused_too(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    [failed] = announcements(bot, root_of(bot, name).ts)
    for action in ("argo_retry", "argo_resubmit"):
        assert (await bot.click(action, failed, user_id="U2")).status == 200
    await bot.wait_idle()
    said = sorted(e.text for e in bot.slack.ephemerals if e.user == "U2")
    assert said == [
        f":warning: You may not {verb} `{name}`: <@U1> started it, and only they, an admin or "
        f"someone the access policy allows may {verb} it. Ask whoever runs this bot if you "
        "need to."
        for verb in ("resubmit", "retry")
    ]
    assert put_requests(bot, "retry") == [] and len(bot.argo.created) == 1
    # Logs are not a change: anyone in the channel may ask for them.
    assert (await bot.click("argo_logs", failed, user_id="U2")).status == 200
    await bot.wait_idle()
    assert "Posted the logs" in bot.slack.ephemerals[-1].text


async def test_admins_and_control_others_may_change_runs_of_others(
    bot_factory: Any, tmp_path: Path
) -> None:
    bot = await policy_bot(
        bot_factory,
        tmp_path,
        "admins: [UADMIN]\ngroups:\n  ops: [UOPS]\ncontrol_others: ['group:ops']\n",
    )
    bot.argo.auto_run = False
    bot.argo.shutdown_delay = 1.0
    first = await start(bot, "run csv-summary rows=3", wait=False)
    second = await start(bot, "run csv-summary rows=3", wait=False)
    assert "Asked Argo to stop" in await answer_to(bot, f"stop {first}", user_id="UOPS")
    assert "Asked Argo to terminate" in await answer_to(
        bot, f"terminate {second}", user_id="UADMIN"
    )
    denied = await answer_to(bot, f"terminate {first}", user_id="U5")
    assert denied.startswith(f":warning: You may not terminate `{first}`: <@U1> started it")
    assert denied.endswith("Ask an admin (<@UADMIN>) if you need to.")


# -- the policy file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("admins: U1\n", "admins must be a list"),
        ("admin: [U1]\n", "admin is not a policy setting"),
        ("admins: [alice]\n", "admins.0 is not a Slack user ID (e.g. U0123456789) or group:"),
        ("admins: ['group:ops']\n", "admins names 'group:ops', which is not under groups"),
        ("groups: {Ops: [U1]}\n", "groups.Ops is not a group name"),
        ("groups: {ops: ['@bob']}\n", "groups.ops.0 is not a Slack user ID"),
        (
            "templates: {csv-summary: {channels: ['#data']}}\n",
            "templates.csv-summary.channels.0 is not a channel ID (use the ID, e.g. C0123456789",
        ),
        ("templates: {csv-summary: {chanels: [C1]}}\n", "templates.csv-summary.chanels is not a"),
        ("templates: {Bad_Name: {}}\n", "templates.Bad_Name is not a template name (or `*`)"),
        ("rate_limits: {runs_per_user_per_hour: 0}\n", "must be at least 1 (or null"),
        ("rate_limits: {runs_per_user_per_hour: many}\n", "must be a whole number"),
        ("admins: [U1]\nadmins: [U2]\n", "not valid YAML (duplicate key 'admins'"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("admins: [U1\n", "not valid YAML"),
    ],
)
def test_a_bad_policy_file_stops_start_up_with_one_clear_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **REQUIRED, policy_file=path)
    line = describe_validation_error(caught.value)
    assert line.startswith(f"configuration error: POLICY_FILE Value error, {path}: ")
    assert expected in line and "\n" not in line


def test_a_missing_policy_file_is_named() -> None:
    with pytest.raises(PolicyError, match=r"/nowhere/policy.yaml: cannot read it"):
        load_policy(Path("/nowhere/policy.yaml"))


def test_an_empty_policy_file_is_the_default_policy(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "# nothing yet\n"))
    assert policy.admins == () and policy.templates == {}
    assert policy.rate_limits.runs_per_user_per_hour == DEFAULT_RUNS_PER_USER_PER_HOUR
    assert policy.rate_limits.runs_per_channel_per_hour is None
