"""The run form: `/argo run <template that takes files>` opens a modal; submitting it starts
the run in the channel where the command was typed.

Driven through the signed `/slack/events` endpoint: the slash command, then the
`view_submission` Slack sends, with the fake Slack serving the attached file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stand_ins.s3_server import S3Server
from stand_ins.slack_requests import new_trigger_id
from tests.conftest import Bot, CommandResponse
from tests.slack_deliveries import empty_bucket, submit_view
from tests.test_run_command import schema_validator

CSV = b"team,points\nred,3\nblue,5\n"
CHANNEL = "C0TYPED"
DEPLOY = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {
        "name": "deploy-bundle",
        "namespace": "argo",
        "labels": {"argo-chatops/enabled": "true"},
    },
    "spec": {
        "entrypoint": "main",
        "arguments": {
            "parameters": [
                {"name": "env", "enum": ["staging", "prod"], "description": "Where to"},
                {"name": "ticket"},
                {"name": "note", "value": ""},
            ],
            "artifacts": [{"name": "bundle"}],
        },
        "templates": [{"name": "main", "container": {"image": "alpine"}}],
    },
}


@pytest.fixture(autouse=True)
async def no_objects_left_by_other_tests(s3_server: S3Server) -> None:
    await empty_bucket(s3_server)


async def open_form(bot: Bot, text: str) -> tuple[CommandResponse, str, str]:
    """Type the command in CHANNEL; returns Slack's answer, the trigger id and response_url."""
    trigger, response_url = new_trigger_id(), bot.slack.response_url()
    answer = await bot.command(
        text, channel_id=CHANNEL, trigger_id=trigger, response_url=response_url
    )
    await bot.wait_idle()
    return answer, trigger, response_url


def blocks_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {block["block_id"]: block for block in view["blocks"] if "block_id" in block}


def text_value(value: str) -> dict[str, Any]:
    return {"value": {"type": "plain_text_input", "value": value}}


def choice(value: str) -> dict[str, Any]:
    option = {"text": {"type": "plain_text", "text": value}, "value": value}
    return {"value": {"type": "static_select", "selected_option": option}}


def attached(*files: dict[str, Any]) -> dict[str, Any]:
    return {"files": {"type": "file_input", "files": list(files)}}


async def test_a_template_that_takes_files_opens_the_form_with_its_fields(bot: Bot) -> None:
    answer, trigger, _ = await open_form(bot, 'run summarize-csv title="Weekly numbers"')
    assert answer.status == 200

    [opened] = bot.slack.views
    assert opened["trigger_id"] == trigger  # the command's own trigger, used at once
    view = opened["view"]
    assert view["type"] == "modal" and view["title"]["text"] == "Run summarize-csv"
    assert view["submit"]["text"] == "Start"
    assert json.loads(view["private_metadata"])["channel_id"] == CHANNEL
    fields = blocks_by_id(view)
    assert list(fields) == ["artifact:data", "parameter:title", "parameter:format"]
    upload = fields["artifact:data"]
    assert upload["element"]["type"] == "file_input" and upload["element"]["max_files"] == 1
    assert upload["optional"] is False
    title = fields["parameter:title"]
    assert title["element"]["type"] == "plain_text_input"
    assert title["element"]["initial_value"] == "Weekly numbers"  # typed in the command
    assert title["optional"] is True  # it has a default
    fmt = fields["parameter:format"]["element"]
    assert fmt["type"] == "static_select"
    assert [o["value"] for o in fmt["options"]] == ["markdown", "json"]
    assert fmt["initial_option"]["value"] == "markdown"  # the template's default

    assert bot.argo.created == [] and bot.slack.calls_to("chat.postMessage") == []


async def test_required_fields_are_marked_and_an_enum_without_default_has_no_choice(
    bot: Bot,
) -> None:
    bot.argo.add_template(DEPLOY)
    await open_form(bot, "run deploy-bundle")
    fields = blocks_by_id(bot.slack.views[0]["view"])
    assert fields["parameter:env"]["optional"] is False
    assert fields["parameter:ticket"]["optional"] is False
    assert fields["parameter:note"]["optional"] is True
    assert fields["artifact:bundle"]["optional"] is False
    assert fields["parameter:env"]["element"]["type"] == "static_select"
    assert "initial_option" not in fields["parameter:env"]["element"]
    assert fields["parameter:env"]["hint"]["text"] == "Where to"


async def test_submitting_the_form_starts_the_run_in_the_channel_of_the_command(
    bot: Bot, s3_server: S3Server
) -> None:
    _, _, response_url = await open_form(bot, "run summarize-csv")
    file = bot.slack.add_file("scores.csv", CSV)
    values = {
        "artifact:data": attached(file),
        "parameter:title": text_value("Scores"),
        "parameter:format": choice("json"),
    }
    answer = await submit_view(bot, bot.slack.views[0]["view"], values)
    assert answer.status == 200 and answer.body == {}  # an empty ack closes the form
    [name] = await bot.started_runs(1)
    await bot.wait_idle()

    key = f"sessions/{name}/inputs/scores.csv"
    assert await s3_server.read_object(key) == CSV
    [manifest] = bot.argo.created
    schema_validator().validate(manifest)
    assert manifest["spec"]["arguments"]["artifacts"] == [{"name": "data", "s3": {"key": key}}]
    assert manifest["spec"]["arguments"]["parameters"] == [
        {"name": "title", "value": "Scores"},
        {"name": "format", "value": "json"},
    ]
    summary = json.loads(await s3_server.read_object(f"sessions/{name}/summarize/summary.json"))
    assert summary["title"] == "Scores" and summary["rows"] == 2

    # The thread root is the bot's, in the channel where the command was typed.
    [root] = [m for m in bot.slack.messages[CHANNEL] if not m.thread_ts]
    assert name in root.text and "scores.csv" in json.dumps(root.blocks)
    [result] = [m for m in bot.slack.thread(CHANNEL, root.ts) if m.ts != root.ts]
    assert "succeeded" in result.text
    # The person who typed the command hears privately that it started.
    assert any(name in json.dumps(p.body) and p.url == response_url for p in bot.slack.responses)


async def test_invalid_values_come_back_as_field_errors_and_start_nothing(
    bot: Bot, s3_server: S3Server
) -> None:
    await open_form(bot, "run summarize-csv")
    values = {
        "artifact:data": attached(),
        "parameter:title": text_value("{{workflow.name}}"),
        "parameter:format": choice("xml"),  # not an option Slack would offer: forged
    }
    answer = await submit_view(bot, bot.slack.views[0]["view"], values)
    await bot.wait_idle()
    assert answer.status == 200
    assert answer.body["response_action"] == "errors"
    errors = answer.body["errors"]
    assert errors["artifact:data"] == "Attach one file."
    assert "may not contain {{" in errors["parameter:title"]
    assert "must be one of markdown, json" in errors["parameter:format"]
    assert bot.argo.created == [] and bot.slack.calls_to("chat.postMessage") == []
    assert await s3_server.list_keys("sessions/") == []


async def test_a_missing_required_value_is_a_field_error(bot: Bot) -> None:
    bot.argo.add_template(DEPLOY)
    await open_form(bot, "run deploy-bundle")
    bundle = bot.slack.add_file("app.tgz", b"\x1f\x8b...", mimetype="application/gzip")
    values = {"artifact:bundle": attached(bundle), "parameter:env": choice("prod")}
    answer = await submit_view(bot, bot.slack.views[0]["view"], values)
    assert answer.body == {"response_action": "errors", "errors": {"parameter:ticket": "Required."}}
    assert bot.argo.created == []


async def test_a_file_over_the_limit_is_a_field_error(bot_factory: Any) -> None:
    bot = await bot_factory(max_upload_bytes=10)
    await open_form(bot, "run summarize-csv")
    file = bot.slack.add_file("scores.csv", CSV)
    answer = await submit_view(bot, bot.slack.views[0]["view"], {"artifact:data": attached(file)})
    assert answer.body["errors"] == {"artifact:data": "scores.csv is 25 B; the limit is 10 B."}
    assert bot.slack.downloads == [] and bot.argo.created == []


async def test_a_template_without_inputs_runs_at_once_without_a_form(bot: Bot) -> None:
    await open_form(bot, "run csv-summary rows=3")
    assert bot.slack.views == []
    assert len(await bot.started_runs(1)) == 1


async def test_an_unknown_parameter_is_answered_privately_and_opens_no_form(bot: Bot) -> None:
    _, _, response_url = await open_form(bot, "run summarize-csv colour=red")
    assert bot.slack.views == []
    [answer] = [p for p in bot.slack.responses if p.url == response_url]
    assert "`colour` is not a parameter of `summarize-csv`" in answer.body["text"]


async def test_a_form_slack_will_not_open_is_answered_privately(bot: Bot) -> None:
    bot.slack.error_next("views.open", "expired_trigger_id")
    _, _, response_url = await open_form(bot, "run summarize-csv")
    [answer] = [p for p in bot.slack.responses if p.url == response_url]
    assert "I could not open the form for `summarize-csv`" in answer.body["text"]
    assert "expired_trigger_id" in answer.body["text"]
    assert bot.argo.created == []
