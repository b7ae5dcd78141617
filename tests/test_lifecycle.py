"""`/argo templates|list|status|logs|stop|terminate|retry|resubmit`, through signed commands.

Each test asserts what Argo received and what people saw: the private answer, and what
went into the run's thread.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from bot import lifecycle_messages as views
from bot.commands import (
    ActionCommand,
    CommandError,
    ListCommand,
    LogsCommand,
    StatusCommand,
    TemplatesCommand,
    parse_command,
)
from bot.models import ParameterSpec, Phase, Run, RunAction, RunState, TemplateInfo
from tests.conftest import ARGO_TOKEN, Bot
from tests.lifecycle_support import (
    CHATTY_TEMPLATE,
    FLAKY_TEMPLATE,
    announcements,
    answers,
    ask,
    ops_bot,
    put_requests,
    rendered,
    replies,
    root_of,
    start,
)
from workflows.manifest import hook_token

WEBHOOK_SECRET = "test-webhook-secret-0123456789"


def log_requests(bot: Bot, name: str) -> list:
    return [r for r in bot.argo.requests if r.path == f"/api/v1/workflows/argo/{name}/log"]


async def create_foreign_workflow(bot: Bot, name: str) -> None:
    """A workflow somebody started with the Argo CLI: Argo has it, the bot does not."""
    manifest = {
        "metadata": {"name": name, "namespace": "argo"},
        "spec": {"workflowTemplateRef": {"name": "csv-summary"}},
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{bot.argo.url}/api/v1/workflows/argo",
            json={"workflow": manifest},
            headers={"Authorization": f"Bearer {ARGO_TOKEN}"},
        ) as response,
    ):
        assert response.status == 200


# -- help and templates ---------------------------------------------------------------------


async def test_help_names_every_verb_with_an_example(bot: Bot) -> None:
    response = await bot.command("help")
    for verb in ("run", "templates", "list", "status", "logs", "stop", "terminate", "retry"):
        assert f"/argo {verb}" in response.text, verb
    assert "resubmit <workflow>" in response.text
    assert bot.argo.requests == []


async def test_templates_lists_runnable_templates_with_parameters(bot: Bot) -> None:
    response = await bot.command("templates")
    assert "Listing the templates" in response.text
    await bot.wait_idle()
    answer = bot.slack.responses[-1].body
    assert answer["response_type"] == "ephemeral"
    shown = json.dumps(answer["blocks"])
    assert "*csv-summary*" in shown and "Generate or take a CSV" in shown
    assert "`rows` = `20`" in shown
    assert "one of `markdown`, `json`" in shown
    # The exit-hook notifier is plumbing, not something to run.
    assert "argo-chatops-notify" not in shown
    assert [r.path for r in bot.argo.requests] == ["/api/v1/workflow-templates/argo"]


async def test_templates_when_argo_is_down_says_so(bot: Bot) -> None:
    bot.argo.fail_next("GET", r"/workflow-templates/", status=503, times=10)
    answer = await ask(bot, "templates")
    assert "Argo is not answering right now" in answer


# -- list -----------------------------------------------------------------------------------


async def test_list_shows_recent_runs_with_phase_who_and_thread_link(bot: Bot) -> None:
    ok = await start(bot, "run csv-summary rows=3")
    failed = await start(bot, "run csv-summary rows=0")
    bot.argo.requests.clear()

    answer = await ask(bot, "list")
    assert ok in answer and failed in answer
    assert ":white_check_mark:" in answer and ":x:" in answer
    assert "<@U1>" in answer and "Succeeded" in answer and "Failed" in answer
    assert "https://fake.slack.test/archives/C1/p" in answer  # the thread links
    # Every run listed is over: the store knows their phase, Argo is not asked.
    assert bot.argo.requests == []

    answer = await ask(bot, "list failed")
    assert failed in answer and ok not in answer
    answer = await ask(bot, "list mine succeeded", user_id="U2")
    assert "none found" in answer


async def test_list_running_asks_argo_once_for_the_live_phases(bot: Bot) -> None:
    bot.argo.auto_run = False
    names = [await start(bot, "run csv-summary rows=3", wait=False) for _ in range(3)]
    bot.argo.requests.clear()
    answer = await ask(bot, "list running")
    assert all(name in answer for name in names)
    assert "Running" in answer
    [listed] = bot.argo.requests
    assert listed.path == "/api/v1/workflows/argo"
    assert listed.query["listOptions.labelSelector"] == "argo-chatops/managed=true"
    assert "items.status.phase" in listed.query["fields"]


async def test_list_with_a_bad_filter_explains_itself(bot: Bot) -> None:
    response = await bot.command("list everything")
    assert "`everything` is not a list filter" in response.text
    assert bot.argo.requests == []


# -- status ---------------------------------------------------------------------------------


async def test_status_of_a_running_run_shows_progress_and_the_running_step(bot: Bot) -> None:
    bot.argo.hold_step("summarize")
    name = await start(bot, "run csv-summary rows=3", wait=False)
    await bot.slack.wait_for(
        lambda: bot.argo.workflows[name]["status"].get("progress") == "1/2", timeout=15
    )
    answer = await ask(bot, f"status {name}")
    assert "*Running*" in answer and "1/2 steps" in answer
    assert "*Running now:* `summarize`" in answer
    assert "Open in Argo" in answer and "Thread" in answer
    gets = [r for r in bot.argo.requests if r.path == f"/api/v1/workflows/argo/{name}"]
    assert len(gets) == 1
    bot.argo.release_step("summarize")
    await bot.wait_idle()


async def test_status_of_a_failed_run_shows_the_failed_step_and_its_message(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    answer = await ask(bot, f"status `{name}`")
    assert "*Failed*" in answer and "took" in answer
    assert "*Failed step:* `summarize`" in answer
    assert "the CSV has no data rows" in answer


async def test_status_of_a_workflow_argo_no_longer_has(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    del bot.argo.workflows[name]
    answer = await ask(bot, f"status {name}")
    assert "no longer in Argo" in answer and "Succeeded" in answer


# -- the clear answers: unknown, not ours, Argo errors ----------------------------------------


WORKFLOW_VERBS = ("status", "logs", "stop", "terminate", "retry", "resubmit")


async def test_unknown_workflow_gets_a_clear_answer_and_nothing_changes(bot: Bot) -> None:
    for verb in WORKFLOW_VERBS:
        bot.argo.requests.clear()
        answer = await ask(bot, f"{verb} nothing-here-x7k2p")
        assert "There is no workflow `nothing-here-x7k2p` in namespace `argo`" in answer, verb
        assert [r.method for r in bot.argo.requests] == ["GET"], verb
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_workflow_the_bot_did_not_start_is_left_alone(bot: Bot) -> None:
    bot.argo.auto_run = False
    await create_foreign_workflow(bot, "someone-elses-run")
    for verb in WORKFLOW_VERBS:
        bot.argo.requests.clear()
        answer = await ask(bot, f"{verb} someone-elses-run")
        assert "was not started from Slack by this bot" in answer, verb
        assert [r.method for r in bot.argo.requests] == ["GET"], verb
    assert bot.argo.workflows["someone-elses-run"]["status"]["phase"] == "Running"
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_argo_unreachable_while_looking_up_a_workflow(bot: Bot) -> None:
    bot.argo.fail_next("GET", r"/api/v1/workflows/argo/", status=503, times=10)
    answer = await ask(bot, "status nothing-here-x7k2p")
    assert "Argo is not answering right now" in answer


async def test_a_malformed_workflow_name_is_refused_before_anything_happens(bot: Bot) -> None:
    response = await bot.command("stop ../../etc/passwd")
    assert "is not a workflow name" in response.text
    assert bot.argo.requests == []


# -- logs -----------------------------------------------------------------------------------


async def test_logs_post_every_step_in_the_thread_and_tell_the_asker(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    root = root_of(bot, name)
    answer = await ask(bot, f"logs {name}")
    assert "Posted the logs of" in answer and "its thread" in answer

    [request] = log_requests(bot, name)
    assert request.query == {"logOptions.container": "main"}
    [posted] = [m for m in replies(bot, root.ts) if "Logs of" in (m.text or "")]
    shown = rendered(posted)
    assert "all 10 lines" in shown  # generate prints one line, summarize its 9-line table
    assert "[generate] wrote 3 rows" in shown
    assert "[summarize] # CSV summary" in shown
    assert "asked by <@U1>" in shown
    # Short enough for the message: no file.
    assert bot.slack.calls_to("files.getUploadURLExternal") == []


async def test_logs_of_one_step_ask_argo_for_that_pod_only(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    root = root_of(bot, name)
    await ask(bot, f"logs {name} summarize")
    [request] = log_requests(bot, name)
    pod = request.query["podName"]
    assert pod.startswith(f"{name}-summarize-")
    assert {record.pod for record in bot.argo.logs[name] if "CSV" in record.content} == {pod}
    [posted] = [m for m in replies(bot, root.ts) if "Logs of" in (m.text or "")]
    shown = rendered(posted)
    assert "error: the CSV has no data rows" in shown
    assert "wrote 0 rows" not in shown and "[summarize]" not in shown


async def test_long_logs_show_the_tail_and_upload_the_whole_log_into_the_thread(
    bot: Bot,
) -> None:
    bot.argo.add_template(CHATTY_TEMPLATE)
    name = await start(bot, "run chatty lines=500")
    root = root_of(bot, name)
    answer = await ask(bot, f"logs {name}")
    assert "Posted the logs" in answer

    [tail] = [m for m in replies(bot, root.ts) if "Logs of" in (m.text or "")]
    shown = rendered(tail)
    assert "of 500 lines" in shown and "line 0500 &lt;of&gt; the log &amp; more" in shown
    assert "line 0001" not in shown
    for block in tail.blocks:
        assert len(block.get("text", {}).get("text", "")) <= 3000

    # The full log went into the same thread with the current upload flow.
    [url_call] = bot.slack.calls_to("files.getUploadURLExternal")
    assert url_call.args["filename"] == f"{name}.log"
    [complete] = bot.slack.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == root.ts
    [shared] = [m for m in replies(bot, root.ts) if m.files]
    content = bot.slack.file_bytes(shared.files[0]["id"]).decode()
    assert content.splitlines()[0] == "line 0001 <of> the log & more"
    assert len(content.splitlines()) == 500


async def test_logs_asked_twice_in_a_row_are_posted_once(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    await ask(bot, f"logs {name}")
    answer = await ask(bot, f"logs {name}")
    assert "were just posted" in answer
    assert len(log_requests(bot, name)) == 1


async def test_logs_of_an_unknown_step_name_the_steps_there_are(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    answer = await ask(bot, f"logs {name} publish")
    assert "has no step `publish`" in answer and "`generate`, `summarize`" in answer
    assert log_requests(bot, name) == []


async def test_a_log_stream_failing_midway_is_reported_and_nothing_is_posted(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    root = root_of(bot, name)
    before = len(replies(bot, root.ts))
    bot.argo.log_stream_error = 'pods "x" is forbidden: cannot get resource pods/log'
    answer = await ask(bot, f"logs {name}")
    assert "Argo is not answering right now" in answer and "pods/log" in answer
    assert len(replies(bot, root.ts)) == before


async def test_logs_when_argo_refuses_the_log_request(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    bot.argo.fail_next("GET", r"/log$", status=403, message="pods/log is forbidden")
    answer = await ask(bot, f"logs {name}")
    assert "Argo refused to read the logs" in answer and "pods/log is forbidden" in answer


# -- stop and terminate ---------------------------------------------------------------------


async def test_stop_asks_argo_runs_the_exit_handler_and_announces(bot: Bot) -> None:
    bot.argo.hold_step("summarize")
    name = await start(bot, "run csv-summary rows=3", wait=False)
    await bot.slack.wait_for(lambda: bool(bot.argo.workflows[name]["status"].get("nodes")))
    root = root_of(bot, name)
    answer = await ask(bot, f"stop {name}")
    assert "Asked Argo to stop" in answer

    [stop] = put_requests(bot, "stop")
    assert stop.path == f"/api/v1/workflows/argo/{name}/stop"
    assert bot.argo.workflows[name]["spec"]["shutdown"] == "Stop"
    assert len(bot.argo.hook_calls) == 1  # Stop runs the exit handler
    thread = [rendered(m) for m in replies(bot, root.ts)]
    assert any("<@U1> asked Argo to stop" in text for text in thread)
    [result] = announcements(bot, root.ts)
    assert "failed" in result.text and "Stopped with strategy" in rendered(result)
    bot.argo.release_step("summarize")


async def test_terminate_skips_the_exit_handler_and_is_still_announced(bot: Bot) -> None:
    bot.argo.auto_run = False
    name = await start(bot, "run csv-summary rows=3", wait=False)
    root = root_of(bot, name)
    answer = await ask(bot, f"terminate {name}")
    assert "Asked Argo to terminate" in answer
    assert len(put_requests(bot, "terminate")) == 1
    assert bot.argo.hook_calls == []
    # No hook and the poller is an hour away: the bot looks again by itself.
    await bot.slack.wait_for(lambda: len(announcements(bot, root.ts)) == 1, timeout=10)
    [result] = announcements(bot, root.ts)
    assert "Terminate" in rendered(result)
    assert any("terminated" in rendered(m) for m in replies(bot, root.ts))


async def test_stop_of_a_finished_run_changes_nothing(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    answer = await ask(bot, f"stop {name}")
    assert "has already finished (Succeeded)" in answer
    assert put_requests(bot, "stop") == []


async def test_stop_asked_twice_at_once_asks_argo_once(bot_factory, tmp_path: Path) -> None:
    bot = await ops_bot(bot_factory, tmp_path)  # U2 may stop U1's run
    bot.argo.auto_run = False
    bot.argo.shutdown_delay = 1.0  # Argo answers at once and stops the workflow later
    name = await start(bot, "run csv-summary rows=3", wait=False)
    await asyncio.gather(bot.command(f"stop {name}"), bot.command(f"stop {name}", user_id="U2"))
    await bot.wait_idle()
    said = answers(bot)
    assert sum("Asked Argo to stop" in answer for answer in said) == 1
    assert sum("already asked to stop" in answer for answer in said) == 1
    assert len(put_requests(bot, "stop")) == 1


async def test_terminate_after_stop_is_allowed(bot: Bot) -> None:
    bot.argo.auto_run = False
    bot.argo.hook_copies = 0  # Argo is slow to finish the stop: the run is still going
    name = await start(bot, "run csv-summary rows=3", wait=False)
    bot.argo.fail_next("PUT", r"/stop$", status=503, times=5, message="etcd timeout")
    answer = await ask(bot, f"stop {name}")
    assert "Argo is not answering right now" in answer and "etcd timeout" in answer
    # The failed stop was forgotten: asking again (here: terminate) goes through.
    answer = await ask(bot, f"terminate {name}")
    assert "Asked Argo to terminate" in answer
    assert bot.argo.workflows[name]["spec"]["shutdown"] == "Terminate"


# -- retry ----------------------------------------------------------------------------------


async def test_retry_reruns_the_failed_step_and_announces_the_new_result(
    bot: Bot, tmp_path: Path
) -> None:
    bot.argo.add_template(FLAKY_TEMPLATE)
    name = await start(bot, f"run flaky flag={tmp_path / 'flag'}")
    root = root_of(bot, name)
    [failed] = announcements(bot, root.ts)
    assert "failed" in failed.text and "<@U1>" in failed.text  # the starter is mentioned

    answer = await ask(bot, f"retry {name}")
    assert "Retrying" in answer
    [retry] = put_requests(bot, "retry")
    assert retry.path == f"/api/v1/workflows/argo/{name}/retry"
    await bot.wait_idle()

    _, second = announcements(bot, root.ts)
    assert second.text.startswith(f"{name} succeeded")
    assert any("<@U1> retried the failed steps" in rendered(m) for m in replies(bot, root.ts))
    # Only the failed step ran again.
    prepared = [r for r in bot.argo.logs[name] if r.content == "prepare ran"]
    assert len(prepared) == 1
    stored = await bot.services.store.get_run(name)
    assert stored is not None and stored.phase.value == "Succeeded"
    assert "Succeeded" in rendered(bot.slack.find_message("C1", root.ts))


async def test_retry_of_a_succeeded_run_is_refused(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=3")
    answer = await ask(bot, f"retry {name}")
    assert "succeeded: there is nothing to retry" in answer and "resubmit" in answer
    assert put_requests(bot, "retry") == []


async def test_retry_of_a_running_run_is_refused(bot: Bot) -> None:
    bot.argo.auto_run = False
    name = await start(bot, "run csv-summary rows=3", wait=False)
    answer = await ask(bot, f"retry {name}")
    assert "is still running" in answer
    assert put_requests(bot, "retry") == []


async def test_retry_refused_by_argo_can_be_asked_again(bot: Bot) -> None:
    name = await start(bot, "run csv-summary rows=0")
    bot.argo.fail_next("PUT", r"/retry$", status=403, message="retry is forbidden here")
    answer = await ask(bot, f"retry {name}")
    assert "Argo refused to retry" in answer and "retry is forbidden here" in answer
    stored = await bot.services.store.get_run(name)
    assert stored is not None and stored.state.value == "announced"
    answer = await ask(bot, f"retry {name}")
    assert "Retrying" in answer
    assert len(put_requests(bot, "retry")) == 2
    await bot.wait_idle()


async def test_a_retry_left_behind_by_a_dead_replica_is_settled_from_argo(bot: Bot) -> None:
    never = await start(bot, "run csv-summary rows=0")
    reached = await start(bot, "run csv-summary rows=0")
    store = bot.services.store
    for name in (never, reached):  # claimed by a replica that died at once (lease over)
        assert await store.begin_retry(name, "dead-replica", lease_seconds=-1)
    bot.argo.auto_run = False
    await bot.argo.retry(reached)  # that replica got as far as Argo for this one

    await bot.services.progress.refresh_once()

    stored_never = await store.get_run(never)
    assert stored_never is not None and stored_never.state.value == "announced"
    stored_reached = await store.get_run(reached)
    assert stored_reached is not None and stored_reached.state.value == "running"
    await bot.argo.complete(reached, "Succeeded")
    await bot.wait_idle()
    _, again = announcements(bot, root_of(bot, reached).ts)
    assert again.text.startswith(f"{reached} succeeded")
    answer = await ask(bot, f"retry {never}")
    assert "Retrying" in answer
    await bot.wait_idle()


# -- resubmit -------------------------------------------------------------------------------


async def test_resubmit_starts_a_new_tracked_run_in_a_new_thread(
    bot_factory, tmp_path: Path
) -> None:
    bot = await ops_bot(bot_factory, tmp_path)  # U2 may resubmit U1's run
    old = await start(bot, 'run csv-summary rows=4 title="Again"')
    old_root = root_of(bot, old)
    answer = await ask(bot, f"resubmit {old}", user_id="U2")
    await bot.wait_idle()
    assert "Resubmitted" in answer

    # A fresh create of the same template and parameters: the bot's name, label and hook.
    assert put_requests(bot, "resubmit") == []
    first, again = bot.argo.created
    new = again["metadata"]["name"]
    assert new != old and new.startswith("csv-summary-") and new in answer
    assert again["spec"]["workflowTemplateRef"] == first["spec"]["workflowTemplateRef"]
    assert again["spec"]["arguments"] == first["spec"]["arguments"]
    assert again["metadata"]["labels"]["argo-chatops/managed"] == "true"
    exit_hook = again["spec"]["hooks"]["exit"]["arguments"]["parameters"]
    hook = {p["name"]: p["value"] for p in exit_hook}
    assert hook["token"] == hook_token(WEBHOOK_SECRET, "argo", new)

    # Announced like any run, in its own thread, and the two threads point at each other.
    new_root = root_of(bot, new)
    assert new_root.ts != old_root.ts and "<@U2>" in new_root.text
    [result] = announcements(bot, new_root.ts)
    assert "succeeded" in result.text
    old_note = next(m for m in replies(bot, old_root.ts) if "resubmitted this run" in rendered(m))
    assert new in rendered(old_note) and new_root.ts.replace(".", "") in rendered(old_note)
    new_note = next(m for m in replies(bot, new_root.ts) if "Resubmitted from" in rendered(m))
    assert old in rendered(new_note)
    stored = await bot.services.store.get_run(new)
    assert stored is not None and stored.user_id == "U2" and stored.parameters["rows"] == "4"

    # Resubmitting the same run again points at the first resubmission.
    answer = await ask(bot, f"resubmit {old}")
    assert f"already resubmitted as `{new}`" in answer
    assert len(bot.argo.created) == 2


async def test_resubmit_whose_template_changed_explains_and_can_be_asked_again(
    bot: Bot,
) -> None:
    old = await start(bot, "run csv-summary rows=4")
    bot.argo.fail_next("POST", r"/api/v1/workflows/argo$", status=400, message="quota exceeded")
    answer = await ask(bot, f"resubmit {old}")
    assert "Argo did not start `csv-summary`: quota exceeded" in answer
    answer = await ask(bot, f"resubmit {old}")
    assert "Resubmitted" in answer
    await bot.wait_idle()


async def test_argo_resubmit_endpoint_would_carry_the_old_hook_token(bot: Bot) -> None:
    """Why resubmit is a fresh create: Argo's copy keeps the old workflow's hook token."""
    name = await start(bot, "run csv-summary rows=3")
    copy = bot.argo.resubmit(name)
    new = copy["metadata"]["name"]
    await bot.argo.wait_idle()
    assert copy["metadata"]["labels"]["workflows.argoproj.io/resubmitted-from-workflow"] == name
    arguments = copy["spec"]["hooks"]["exit"]["arguments"]["parameters"]
    token = next(p["value"] for p in arguments if p["name"] == "token")
    assert token == hook_token(WEBHOOK_SECRET, "argo", name)
    # The copy's hook names the new workflow with the old token: refused.
    [call] = [c for c in bot.argo.hook_calls if c.workflow == new]
    assert call.status == 401


async def test_commands_are_acked_at_once_however_slow_argo_is(bot: Bot) -> None:
    bot.argo.latency = 3.0
    started = asyncio.get_running_loop().time()
    response = await bot.command("status nothing-here-x7k2p")
    # Well before Argo could have answered (a busy CI machine once took 1.01 s to ack).
    assert asyncio.get_running_loop().time() - started < 2.0
    assert "Looking up `nothing-here-x7k2p`" in response.text
    await bot.wait_idle()
    bot.argo.latency = 0


# -- parsing and Slack's limits (pure) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("templates", TemplatesCommand()),
        ("list", ListCommand()),
        ("list mine failed", ListCommand(scope="mine", phase="failed")),
        ("LIST running all", ListCommand(scope="all", phase="running")),
        ("status `csv-summary-x7k2p`", StatusCommand(workflow="csv-summary-x7k2p")),
        ("logs csv-summary-x7k2p summarize", LogsCommand("csv-summary-x7k2p", "summarize")),
        ("stop wf-x7k2p", ActionCommand(RunAction.STOP, "wf-x7k2p")),
        ("terminate wf-x7k2p", ActionCommand(RunAction.TERMINATE, "wf-x7k2p")),
        ("retry wf-x7k2p", ActionCommand(RunAction.RETRY, "wf-x7k2p")),
        ("resubmit wf-x7k2p", ActionCommand(RunAction.RESUBMIT, "wf-x7k2p")),
    ],
)
def test_lifecycle_verbs_parse(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status", "Which workflow? Usage: `status <workflow>`"),
        ("logs", "Usage: `logs <workflow> [step]`"),
        ("retry Not_A_Name", "is not a workflow name"),
        ("stop a-b extra", "`stop` does not take `extra`"),
        ("templates please", "`templates` does not take `please`"),
        ("list yesterday", "is not a list filter"),
    ],
)
def test_lifecycle_mistakes_explain_themselves(text: str, message: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_command(text)
    assert message in str(raised.value)


def test_answers_stay_within_slack_limits() -> None:
    now = datetime.now(UTC)
    many = [
        TemplateInfo(
            name=f"template-{n:03d}",
            description="d" * 4000,
            parameters=tuple(
                ParameterSpec(name=f"p{i}", default="v" * 300, enum=("a",) * 30) for i in range(40)
            ),
        )
        for n in range(80)
    ]
    templates = views.templates_message(many, command="/argo")
    runs = [
        views.ListedRun(
            run=Run(
                name=f"wf-{n:05d}",
                namespace="argo",
                template="t" * 200,
                user_id="U1",
                channel_id="C1",
                created_at=now,
                state=RunState.ANNOUNCED,
                phase=Phase.FAILED,
            ),
            phase=Phase.FAILED,
            progress=None,
            thread_link="https://fake.slack.test/archives/C1/p1" + "0" * 1000,
        )
        for n in range(200)
    ]
    listed = views.runs_list(runs, title="Runs", now=now, stale=True)
    lines = ["x" * 5000, *(f"line {n} ```" for n in range(1000))]
    logs, partial = views.logs_message("wf-x", None, lines, asked_by="U1", dropped=0)
    assert partial
    for message in (templates, listed, logs):
        assert len(message.blocks) <= 50
        for block in message.blocks:
            for text in [block.get("text", {}), *block.get("elements", [])]:
                assert len(text.get("text", "")) <= 3000
    assert "```" not in logs.blocks[1]["text"]["text"][3:-3]
