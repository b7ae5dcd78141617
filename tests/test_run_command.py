"""`/argo run`: from a signed slash command to the result in the run's thread."""

from __future__ import annotations

import json
import time

import aiohttp
import jsonschema
import pytest

from tests.conftest import SCHEMA_PATH, Bot


def schema_validator() -> jsonschema.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    workflow = {"$ref": "#/definitions/io.argoproj.workflow.v1alpha1.Workflow"}
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class({**schema, **workflow})


def thread_replies(bot: Bot, channel: str, thread_ts: str) -> list:
    return [m for m in bot.slack.thread(channel, thread_ts) if m.ts != thread_ts]


def root_messages(bot: Bot, channel: str = "C1") -> list:
    return [m for m in bot.slack.messages.get(channel, []) if not m.thread_ts]


async def run_to_completion(bot: Bot, text: str, channel: str = "C1") -> tuple[str, str]:
    """Run a command, wait for the announcement; returns (workflow name, thread ts)."""
    response = await bot.command(text, channel_id=channel)
    assert response.status == 200
    [name] = await bot.started_runs(1)
    await bot.wait_idle()
    [root] = [m for m in root_messages(bot, channel) if name in m.text]
    return name, root.ts


async def test_run_posts_thread_root_and_announces_result_with_presigned_links(bot: Bot) -> None:
    response = await bot.command('run csv-summary rows=5 title="Hello world"')
    assert response.status == 200
    assert "Starting `csv-summary`" in response.text

    [name] = await bot.started_runs(1)
    assert name.startswith("csv-summary-") and len(name) == len("csv-summary-") + 5
    await bot.wait_idle()

    # What Argo received: a valid Workflow with our name, the template, the parameters,
    # the managed label and an exit hook carrying this workflow's own token.
    [manifest] = bot.argo.created
    schema_validator().validate(manifest)
    assert manifest["metadata"]["name"] == name
    assert manifest["metadata"]["labels"]["argo-chatops/managed"] == "true"
    assert manifest["spec"]["workflowTemplateRef"] == {"name": "csv-summary"}
    assert manifest["spec"]["arguments"]["parameters"] == [
        {"name": "rows", "value": "5"},
        {"name": "title", "value": "Hello world"},
    ]
    hook = manifest["spec"]["hooks"]["exit"]
    assert hook["templateRef"] == {"name": "argo-chatops-notify", "template": "notify"}
    hook_arguments = {p["name"]: p["value"] for p in hook["arguments"]["parameters"]}
    assert hook_arguments["url"] == f"{bot.url}hooks/argo"
    assert hook_arguments["status"] == "{{workflow.status}}"
    assert len(hook_arguments["token"]) == 64
    assert "test-webhook-secret" not in json.dumps(manifest)

    # The thread root names the run and the person; the result is in its thread.
    [root] = root_messages(bot)
    assert name in root.text and "<@U1>" in root.text
    assert "title=Hello world" in json.dumps(root.history[0].blocks if root.history else [])
    [result] = thread_replies(bot, "C1", root.ts)
    assert "succeeded" in result.text
    rendered = json.dumps(result.blocks)
    assert "summary.markdown" in rendered and "data.csv" in rendered
    assert "https://argo.example.test/workflows/argo/" + name in rendered

    # The thread root was edited to show the final state.
    assert root.history, "the thread root was never edited"
    assert "Succeeded" in json.dumps(root.blocks)

    # Each presigned link downloads exactly the artifact's bytes.
    links = [
        element
        for block in result.blocks
        for element in _links(block)
        if element[1] in ("summary.markdown", "data.csv")
    ]
    assert len(links) == 2
    async with aiohttp.ClientSession() as http:
        for url, file_name in links:
            step = "summarize" if file_name == "summary.markdown" else "generate"
            expected = await _read_s3(bot, f"sessions/{name}/{step}/{file_name}")
            async with http.get(url) as download:
                assert download.status == 200
                assert await download.read() == expected
            assert "X-Amz-Expires=86400" in url

    # The person who typed the command was told privately that it started.
    assert any(name in json.dumps(post.body) for post in bot.slack.responses)


def _links(block: dict) -> list[tuple[str, str]]:
    import re

    text = json.dumps(block)
    return re.findall(r"<(https?://[^|>]+)\|([^>]+)>", text.replace("\\u0026", "&"))


async def _read_s3(bot: Bot, key: str) -> bytes:
    from aiobotocore.session import AioSession

    s3 = bot.settings
    session = AioSession()
    async with session.create_client(
        "s3",
        endpoint_url=str(s3.s3_endpoint_url),
        aws_access_key_id=s3.s3_access_key.get_secret_value(),
        aws_secret_access_key=s3.s3_secret_key.get_secret_value(),
        region_name=s3.s3_region,
    ) as client:
        obj = await client.get_object(Bucket=s3.s3_bucket, Key=key)
        async with obj["Body"] as body:
            return await body.read()


async def test_failed_run_reports_the_failed_step_and_message(bot: Bot) -> None:
    name, thread_ts = await run_to_completion(bot, "run csv-summary rows=0")
    [result] = thread_replies(bot, "C1", thread_ts)
    rendered = json.dumps(result.blocks)
    assert "failed" in result.text
    assert "*Failed step:* `summarize`" in rendered
    assert "exit code" in rendered
    [root] = root_messages(bot)
    assert "Failed" in json.dumps(root.blocks)
    assert bot.services.store is not None
    stored = await bot.services.store.get_run(name)
    assert stored is not None and stored.phase.value == "Failed"


async def test_ack_does_not_wait_for_a_slow_argo(bot: Bot) -> None:
    bot.argo.latency = 2.0
    started = time.monotonic()
    response = await bot.command("run csv-summary")
    acked_after = time.monotonic() - started
    assert response.status == 200
    # Argo had not even answered the template lookup when Slack got its answer.
    assert bot.argo.created == []
    assert acked_after < bot.argo.latency
    await bot.started_runs(1, timeout=20)
    bot.argo.latency = 0
    await bot.wait_idle()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run no-such-template", "There is no workflow template `no-such-template`"),
        ("run csv-summary colour=blue", "`colour` is not a parameter of `csv-summary`"),
        ("run csv-summary format=xml", "`format` must be one of `markdown`, `json`"),
        ("run csv-summary rows={{workflow.name}}", "may not contain"),
        ('run csv-summary title="unterminated', "check your quotes"),
        ("run csv-summary rows", "is not a parameter: write `name=value`"),
    ],
)
async def test_command_mistakes_are_answered_privately_and_create_nothing(
    bot: Bot, text: str, expected: str
) -> None:
    response = await bot.command(text)
    assert response.status == 200
    await bot.wait_idle()
    private = [response.text] + [json.dumps(post.body) for post in bot.slack.responses]
    assert any(expected in answer for answer in private), private
    assert bot.argo.created == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_unknown_template_lists_the_available_ones(bot: Bot) -> None:
    await bot.command("run nope")
    await bot.wait_idle()
    [answer] = bot.slack.responses
    assert "`csv-summary`" in answer.body["text"]
    assert answer.body["response_type"] == "ephemeral"


async def test_missing_required_parameter_is_refused(bot: Bot) -> None:
    bot.argo.add_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {
                "name": "deploy",
                "namespace": "argo",
                "labels": {"argo-chatops/enabled": "true"},
            },
            "spec": {
                "entrypoint": "main",
                "arguments": {"parameters": [{"name": "env", "enum": ["staging", "prod"]}]},
                "templates": [{"name": "main", "container": {"image": "alpine"}}],
            },
        }
    )
    await bot.command("run deploy")
    await bot.wait_idle()
    assert "`env` is required" in bot.slack.responses[0].body["text"]
    assert bot.argo.created == []


async def test_argo_down_is_answered_at_once_and_nothing_is_posted(bot: Bot) -> None:
    bot.argo.fail_next("GET", r"/api/v1/workflow-templates/.*", status=503, times=10)
    await bot.command("run csv-summary")
    await bot.wait_idle()
    [answer] = bot.slack.responses
    assert "Argo is not answering" in answer.body["text"]
    assert bot.slack.calls_to("chat.postMessage") == []
    assert bot.argo.created == []


async def test_argo_refusing_the_workflow_leaves_no_thread_root(bot: Bot) -> None:
    bot.argo.fail_next("POST", r"/api/v1/workflows/argo$", status=403, times=1)
    await bot.command("run csv-summary")
    await bot.wait_idle()
    [answer] = bot.slack.responses
    assert "Argo did not start `csv-summary`" in answer.body["text"]
    [posted] = bot.slack.calls_to("chat.postMessage")
    root = bot.slack.find_message("C1", posted.response["ts"])
    assert root is not None and root.deleted
    assert bot.argo.workflows == {}


async def test_a_create_retried_after_a_lost_answer_is_not_submitted_twice(bot: Bot) -> None:
    # Argo creates the workflow but the answer is lost (a 503 after the fact looks the
    # same to the bot); the retry gets 409 and the bot carries on with its chosen name.
    bot.argo.fail_next("POST", r"/api/v1/workflows/argo$", status=503, times=1)
    name, thread_ts = await run_to_completion(bot, "run csv-summary rows=3")
    assert len(bot.argo.workflows) == 1 and name in bot.argo.workflows
    assert len(thread_replies(bot, "C1", thread_ts)) == 1


async def test_help_and_unknown_verbs_get_the_command_reference(bot: Bot) -> None:
    response = await bot.command("frobnicate")
    assert "I don't know `frobnicate`" in response.text
    assert "/argo run <template>" in response.text
    response = await bot.command("")
    assert "/argo run <template>" in response.text


async def test_bad_signature_is_rejected_and_nothing_happens(bot: Bot) -> None:
    response = await bot.command("run csv-summary", signing_secret="not-the-secret")
    assert response.status == 401
    await bot.wait_idle()
    assert bot.argo.requests == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_stale_timestamp_is_rejected_and_nothing_happens(bot: Bot) -> None:
    response = await bot.command("run csv-summary", timestamp=int(time.time()) - 301)
    assert response.status == 401
    await bot.wait_idle()
    assert bot.argo.requests == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_healthz_answers(bot: Bot) -> None:
    async with bot.http.get(f"{bot.url}healthz") as response:
        assert response.status == 200
    async with bot.http.get(f"{bot.url}readyz") as response:
        assert response.status == 200


async def test_a_name_already_used_by_an_earlier_run_is_not_reused(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bot.command("run csv-summary rows=2")
    [first] = await bot.started_runs(1)
    await bot.wait_idle()
    # The random suffix comes up with the first run's name again, then a fresh one.
    names = iter([first, "csv-summary-zzzzz"])
    monkeypatch.setattr("bot.runs.workflow_name", lambda template: next(names))
    await bot.command("run csv-summary rows=2")
    await bot.started_runs(2)
    await bot.wait_idle()
    assert [m["metadata"]["name"] for m in bot.argo.created] == [first, "csv-summary-zzzzz"]
    assert all("went wrong" not in json.dumps(post.body) for post in bot.slack.responses)
