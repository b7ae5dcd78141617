"""The Argo emulator behaves like the Argo Server where the bot can tell the difference.

Real HTTP everywhere: the emulator on a free port, S3 from moto, and a small receiver app for
the exit hook. The shipped WorkflowTemplates are loaded and `csv-summary` really runs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiobotocore.session import get_session
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from stand_ins.argo_emulator import (
    ArgoEmulator,
    S3Config,
    apply_fields,
    evaluate_condition,
    node_id,
    parse_label_selector,
)
from stand_ins.s3_server import isolated_session_vars

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "workflows" / "templates"
TOKEN = "test-argo-token"
NAMESPACE = "argo"
HOOK_TOKEN = "per-workflow-hook-token"
SCHEMA = REPO / "stand_ins" / "schema" / "argo-workflows-schema.json"


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's AWS settings must not change where the emulator writes."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def s3_config() -> Iterator[S3Config]:
    """One moto S3 server and bucket for the module; every test uses its own workflow names."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    config = S3Config(
        endpoint_url=f"http://{host}:{port}",
        access_key="testing",
        secret_key="testing",
        bucket=f"artifacts-{uuid.uuid4().hex[:12]}",
    )

    async def create_bucket() -> None:
        async with _s3_client(config) as client:
            await client.create_bucket(Bucket=config.bucket)

    # In a thread of its own: this fixture may be set up while the test's event loop runs.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create_bucket()).result()
    yield config
    server.stop()


@dataclass
class Receiver:
    """The bot's webhook, as far as the exit hook can tell."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    emulator: ArgoEmulator | None = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen: dict[str, Any] = {}
        if state.emulator is not None:
            # What the bot would see if it re-read the workflow right now.
            async with (
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
                session.get(
                    f"{state.emulator.url}/api/v1/workflows/{NAMESPACE}/{body['name']}",
                    params={"fields": "metadata.labels,status.phase,status.finishedAt"},
                ) as response,
            ):
                seen = await response.json()
        state.calls.append({"headers": dict(request.headers), "body": body, "seen": seen})
        return web.json_response({"ok": state.status < 400}, status=state.status)

    app = web.Application()
    app.router.add_post("/hooks/argo", hook)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/hooks/argo"))
    yield state
    await server.close()


@pytest.fixture
async def emulator(s3_config: S3Config, receiver: Receiver) -> AsyncIterator[ArgoEmulator]:
    argo = ArgoEmulator(token=TOKEN, schema_path=SCHEMA, s3=s3_config, completion_delay=0.05)
    argo.load_templates(TEMPLATES)
    await argo.start()
    receiver.emulator = argo
    yield argo
    await argo.close()


@pytest.fixture
async def api(emulator: ArgoEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=emulator.url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as session:
        yield session


# --------------------------------------------------------------------------------------------
# Helpers


def _s3_client(config: S3Config) -> Any:
    return get_session(isolated_session_vars()).create_client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        region_name=config.region,
    )


async def _s3_keys(config: S3Config, prefix: str) -> list[str]:
    async with _s3_client(config) as client:
        listing = await client.list_objects_v2(Bucket=config.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def bot_workflow(
    receiver: Receiver,
    *,
    template: str = "csv-summary",
    parameters: dict[str, str] | None = None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Workflow shaped like the ones the bot submits."""
    metadata: dict[str, Any] = {"labels": {"argo-chatops/managed": "true", **(labels or {})}}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{template}-"
    return {
        "metadata": metadata,
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {
                "parameters": [{"name": k, "value": v} for k, v in (parameters or {}).items()]
            },
            "hooks": {
                "exit": {
                    "templateRef": {"name": "argo-chatops-notify", "template": "notify"},
                    "arguments": {
                        "parameters": [
                            {"name": "url", "value": receiver.url},
                            {"name": "token", "value": HOOK_TOKEN},
                            {"name": "status", "value": "{{workflow.status}}"},
                        ]
                    },
                }
            },
        },
    }


def noop_workflow(receiver: Receiver, name: str, labels: dict[str, str] | None = None) -> dict:
    """A standalone Workflow whose only step runs nothing (a container), plus the bot's hook."""
    manifest = bot_workflow(receiver, name=name, labels=labels)
    spec = manifest["spec"]
    del spec["workflowTemplateRef"]
    spec["entrypoint"] = "main"
    spec["templates"] = [
        {"name": "main", "container": {"image": "alpine:3.20", "command": ["true"]}}
    ]
    return manifest


async def create(api: aiohttp.ClientSession, manifest: dict[str, Any]) -> tuple[int, dict]:
    async with api.post(f"/api/v1/workflows/{NAMESPACE}", json={"workflow": manifest}) as response:
        return response.status, await response.json()


async def get_workflow(api: aiohttp.ClientSession, name: str, **params: str) -> dict[str, Any]:
    async with api.get(f"/api/v1/workflows/{NAMESPACE}/{name}", params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def wait_completed(api: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            wf = await get_workflow(api, name)
            if wf["metadata"]["labels"].get("workflows.argoproj.io/completed") == "true":
                return wf
            await asyncio.sleep(0.02)


async def eventually(predicate: Callable[[], bool], timeout_seconds: float = 5) -> None:
    for _ in range(int(timeout_seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def nodes_by_display_name(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["displayName"]: node for node in wf["status"]["nodes"].values()}


# --------------------------------------------------------------------------------------------
# Templates


async def test_shipped_templates_validate_and_are_listed_by_label(
    emulator: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    for path in sorted(TEMPLATES.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        assert manifest["apiVersion"] == "argoproj.io/v1alpha1"
        assert manifest["kind"] == "WorkflowTemplate"
        emulator.add_template(copy.deepcopy(manifest))  # raises ValueError when invalid

    params = {"listOptions.labelSelector": "argo-chatops/enabled=true"}
    async with api.get(f"/api/v1/workflow-templates/{NAMESPACE}", params=params) as response:
        listed = await response.json()
    # summarize-csv reuses csv-summary's step: the file names keep that install order.
    assert [item["metadata"]["name"] for item in listed["items"]] == [
        "csv-summary",
        "summarize-csv",
    ]
    async with api.get(f"/api/v1/workflow-templates/{NAMESPACE}/argo-chatops-notify") as response:
        notify = await response.json()
    wrapper, post = notify["spec"]["templates"]
    assert wrapper["steps"][0][0]["continueOn"] == {"failed": True, "error": True}
    assert post["http"]["url"] == "{{inputs.parameters.url}}"
    async with api.get(f"/api/v1/workflow-templates/{NAMESPACE}/nope") as response:
        assert response.status == 404
        assert (await response.json())["code"] == 5


async def test_template_with_an_unknown_field_cannot_be_installed(emulator: ArgoEmulator) -> None:
    manifest = yaml.safe_load((TEMPLATES / "csv-summary.yaml").read_text())
    manifest["spec"]["templates"][1]["script"]["sourcee"] = "print(1)"
    with pytest.raises(ValueError, match="sourcee"):
        emulator.add_template(manifest)


async def test_posting_a_template_twice_is_a_conflict(api: aiohttp.ClientSession) -> None:
    manifest = yaml.safe_load((TEMPLATES / "argo-chatops-notify.yaml").read_text())
    manifest["metadata"]["name"] = "notify-copy"
    url = f"/api/v1/workflow-templates/{NAMESPACE}"
    async with api.post(url, json={"template": manifest}) as response:
        assert response.status == 200
        assert (await response.json())["metadata"]["uid"]
    async with api.post(url, json={"template": manifest}) as response:
        assert response.status == 409
        assert (await response.json())["code"] == 6


# --------------------------------------------------------------------------------------------
# Create: validation answers


async def test_schema_violation_is_rejected_and_nothing_is_stored(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    manifest = bot_workflow(receiver)
    manifest["spec"]["arguments"]["parameters"] = [{"name": "rows", "value": 5}]
    status, body = await create(api, manifest)
    assert status == 400
    assert body["code"] == 3
    assert "spec.arguments.parameters[0].value" in body["message"]
    assert emulator.workflows == {}
    assert emulator.created == []


async def test_unknown_field_is_rejected_naming_it(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    manifest = bot_workflow(receiver)
    exit_hook = manifest["spec"]["hooks"]["exit"]
    exit_hook["templatRef"] = exit_hook.pop("templateRef")
    status, body = await create(api, manifest)
    assert (status, body["code"]) == (400, 3)
    assert "spec.hooks.exit" in body["message"]
    assert "templatRef" in body["message"]


async def test_template_ref_together_with_templates_is_rejected(
    api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    manifest = bot_workflow(receiver)
    manifest["spec"]["templates"] = [{"name": "x", "container": {"image": "alpine"}}]
    status, body = await create(api, manifest)
    assert status == 400
    assert body == {
        "code": 3,
        "message": "Templates is invalid field in spec if workflow referred WorkflowTemplate "
        "reference",
    }


async def test_missing_template_is_not_found(
    api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    status, body = await create(api, bot_workflow(receiver, template="no-such-template"))
    assert status == 404
    assert body == {
        "code": 5,
        "message": 'workflowtemplates.argoproj.io "no-such-template" not found',
    }


async def test_value_outside_the_enum_is_rejected(
    api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    status, body = await create(api, bot_workflow(receiver, parameters={"format": "html"}))
    assert status == 400
    assert "spec.arguments.format.value should be present in" in body["message"]


async def test_bad_names_are_rejected(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    status, body = await create(api, bot_workflow(receiver, name="x" * 64))
    assert status == 400
    assert "must not be more than 63 characters" in body["message"]
    status, body = await create(api, bot_workflow(receiver, name="Not_DNS"))
    assert status == 400
    assert "RFC 1123" in body["message"]
    status, body = await create(api, bot_workflow(receiver, labels={"user": "Jane Doe"}))
    assert status == 400
    assert "metadata.labels" in body["message"]
    assert emulator.workflows == {}


async def test_duplicate_name_is_a_conflict(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    status, first = await create(api, bot_workflow(receiver, name="csv-summary-dup01"))
    assert status == 200
    status, body = await create(api, bot_workflow(receiver, name="csv-summary-dup01"))
    assert status == 409
    assert body == {
        "code": 6,
        "message": 'workflows.argoproj.io "csv-summary-dup01" already exists',
    }
    assert len(emulator.created) == 1
    assert first["metadata"]["labels"]["workflows.argoproj.io/workflow-template"] == "csv-summary"


async def test_requests_without_the_token_are_unauthenticated(emulator: ArgoEmulator) -> None:
    async with aiohttp.ClientSession(base_url=emulator.url) as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with session.get(f"/api/v1/workflows/{NAMESPACE}", headers=headers) as response:
                assert response.status == 401
                body = await response.json()
                assert body["code"] == 16
                assert body["message"].startswith("token not valid")
    assert [request.path for request in emulator.requests] == [f"/api/v1/workflows/{NAMESPACE}"] * 3


async def test_create_answers_like_argo_before_the_controller_runs(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    status, body = await create(api, bot_workflow(receiver))
    assert status == 200
    name = body["metadata"]["name"]
    assert name.startswith("csv-summary-") and len(name) == len("csv-summary-") + 5
    assert body["metadata"]["uid"] and body["metadata"]["resourceVersion"]
    assert body["metadata"]["creationTimestamp"].endswith("Z")
    assert "phase" not in body["status"]
    assert body["status"]["startedAt"] is None and body["status"]["finishedAt"] is None
    stored = await get_workflow(api, name)
    assert stored["status"]["phase"] == "Running"
    assert stored["metadata"]["labels"]["workflows.argoproj.io/completed"] == "false"
    assert emulator.created[0]["metadata"] == {
        "generateName": "csv-summary-",
        "labels": {"argo-chatops/managed": "true"},
    }


# --------------------------------------------------------------------------------------------
# Execution


async def test_csv_summary_runs_for_real_and_calls_the_hook_before_completing(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver, s3_config: S3Config
) -> None:
    status, body = await create(
        api, bot_workflow(receiver, parameters={"rows": "12", "title": "Weather"})
    )
    assert status == 200
    name = body["metadata"]["name"]
    wf = await wait_completed(api, name)

    assert wf["status"]["phase"] == "Succeeded"
    assert wf["metadata"]["labels"]["workflows.argoproj.io/phase"] == "Succeeded"
    assert wf["status"]["progress"] == "3/3"
    assert wf["status"]["finishedAt"] >= wf["status"]["startedAt"]
    stored_spec = wf["status"]["storedWorkflowTemplateSpec"]
    assert {p["name"]: p["value"] for p in stored_spec["arguments"]["parameters"]} == {
        "rows": "12",
        "title": "Weather",
        "format": "markdown",
    }

    data_key = f"sessions/{name}/generate/data.csv"
    summary_key = f"sessions/{name}/summarize/summary.markdown"
    assert await _s3_keys(s3_config, f"sessions/{name}/") == [data_key, summary_key]
    csv_lines = (await emulator.read_object(data_key)).decode().splitlines()
    assert csv_lines[0] == "city,temperature,humidity"
    assert len(csv_lines) == 13
    summary = (await emulator.read_object(summary_key)).decode()
    assert summary.startswith("# Weather\n")
    assert "| temperature | 12 |" in summary

    nodes = nodes_by_display_name(wf)
    assert nodes[name]["id"] == name and nodes[name]["type"] == "Steps"
    generate, summarize = nodes["generate"], nodes["summarize"]
    assert generate["id"] == node_id(name, f"{name}[0].generate")
    assert generate["type"] == "Pod" and generate["boundaryID"] == name
    assert generate["outputs"]["artifacts"] == [
        {"name": "data", "path": "/tmp/data.csv", "archive": {"none": {}}, "s3": {"key": data_key}}
    ]
    assert summarize["inputs"]["artifacts"][0]["s3"] == {"key": data_key}
    assert summarize["outputs"]["artifacts"][0]["s3"] == {"key": summary_key}
    assert summarize["outputs"]["artifacts"][0]["path"] == "/tmp/out/summary"
    on_exit = nodes[f"{name}.onExit"]
    assert on_exit["type"] == "Steps" and on_exit["phase"] == "Succeeded"
    assert on_exit["nodeFlag"] == {"hooked": True}

    [call] = receiver.calls
    assert call["headers"]["Authorization"] == f"Bearer {HOOK_TOKEN}"
    assert call["headers"]["Content-Type"] == "application/json"
    assert call["body"] == {
        "namespace": NAMESPACE,
        "name": name,
        "uid": wf["metadata"]["uid"],
        "status": "Succeeded",
    }
    # Exit handlers run before the workflow is marked completed.
    assert call["seen"]["status"]["phase"] == "Running"
    assert call["seen"]["status"]["finishedAt"] is None
    assert call["seen"]["metadata"]["labels"]["workflows.argoproj.io/completed"] == "false"
    [hook_call] = emulator.hook_calls
    assert (hook_call.status, hook_call.error) == (200, None)

    # The emulator's own output is a valid Workflow, even under the strict schema.
    emulator._schema.check("Workflow", wf)


async def test_json_format_writes_summary_json(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver, s3_config: S3Config
) -> None:
    _, body = await create(api, bot_workflow(receiver, parameters={"rows": "5", "format": "json"}))
    name = body["metadata"]["name"]
    assert (await wait_completed(api, name))["status"]["phase"] == "Succeeded"
    summary = json.loads(await emulator.read_object(f"sessions/{name}/summarize/summary.json"))
    assert summary["rows"] == 5
    assert [c["column"] for c in summary["columns"]] == ["city", "temperature", "humidity"]


async def test_zero_rows_fails_in_the_summarize_step(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    _, body = await create(api, bot_workflow(receiver, parameters={"rows": "0"}))
    name = body["metadata"]["name"]
    wf = await wait_completed(api, name)

    nodes = nodes_by_display_name(wf)
    summarize = nodes["summarize"]
    assert wf["status"]["phase"] == "Failed"
    assert wf["status"]["message"] == f"child '{summarize['id']}' failed"
    assert summarize["phase"] == "Failed"
    assert summarize["message"].startswith("Error (exit code 2): error: the CSV has no data rows")
    assert nodes["generate"]["phase"] == "Succeeded"
    assert wf["status"]["progress"] == "2/3"
    [call] = receiver.calls
    assert call["body"]["status"] == "Failed"


async def test_a_hook_answered_with_an_error_does_not_fail_the_run(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.status = 500
    await create(api, noop_workflow(receiver, "noop-hook-500"))
    wf = await wait_completed(api, "noop-hook-500")
    assert wf["status"]["phase"] == "Succeeded"
    assert len(receiver.calls) == 1
    assert emulator.hook_calls[0].status == 500


async def test_an_unreachable_bot_does_not_fail_a_successful_run(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """The shipped notifier wraps its call in `continueOn`: a bot outage keeps the phase."""
    manifest = noop_workflow(receiver, "noop-hook-down")
    parameters = manifest["spec"]["hooks"]["exit"]["arguments"]["parameters"]
    parameters[0]["value"] = "http://127.0.0.1:9/hooks/argo"
    await create(api, manifest)
    wf = await wait_completed(api, "noop-hook-down")
    assert wf["status"]["phase"] == "Succeeded"
    nodes = nodes_by_display_name(wf)
    assert nodes["noop-hook-down.onExit"]["phase"] == "Succeeded"
    assert nodes["call-bot"]["phase"] == "Failed"
    assert emulator.hook_calls[0].status is None
    assert emulator.hook_calls[0].error


async def test_an_unreachable_bare_http_exit_handler_fails_a_successful_run(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Argo's own rule, which the shipped notifier is built to avoid."""
    emulator.add_template(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "bare-notify", "namespace": NAMESPACE},
            "spec": {
                "templates": [
                    {"name": "notify", "http": {"url": "http://127.0.0.1:9/x", "method": "POST"}}
                ]
            },
        }
    )
    manifest = noop_workflow(receiver, "noop-bare-hook")
    manifest["spec"]["hooks"]["exit"] = {
        "templateRef": {"name": "bare-notify", "template": "notify"}
    }
    await create(api, manifest)
    wf = await wait_completed(api, "noop-bare-hook")
    assert wf["status"]["phase"] == "Failed"
    assert nodes_by_display_name(wf)["noop-bare-hook.onExit"]["phase"] == "Failed"


async def test_hook_copies_three_sends_three_calls(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.hook_copies = 3
    await create(api, noop_workflow(receiver, "noop-three-hooks"))
    wf = await wait_completed(api, "noop-three-hooks")
    assert wf["status"]["phase"] == "Succeeded"
    assert len(receiver.calls) == 3
    assert {call["body"]["name"] for call in receiver.calls} == {"noop-three-hooks"}


async def test_hook_copies_zero_drops_the_hook_but_the_run_completes(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.hook_copies = 0
    await create(api, noop_workflow(receiver, "noop-no-hook"))
    wf = await wait_completed(api, "noop-no-hook")
    assert wf["status"]["phase"] == "Succeeded"
    assert receiver.calls == []
    assert "noop-no-hook.onExit" not in nodes_by_display_name(wf)


async def test_terminate_fails_the_run_without_the_hook(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    _, body = await create(api, bot_workflow(receiver))
    name = body["metadata"]["name"]
    await emulator.terminate(name)
    await emulator.wait_idle()
    wf = await get_workflow(api, name)
    assert wf["status"]["phase"] == "Failed"
    assert wf["status"]["message"] == "Stopped with strategy 'Terminate'"
    assert wf["metadata"]["labels"]["workflows.argoproj.io/completed"] == "true"
    assert receiver.calls == []
    async with api.put(f"/api/v1/workflows/{NAMESPACE}/{name}/terminate", json={}) as response:
        assert response.status == 500


async def test_run_executes_a_held_workflow(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    await create(api, noop_workflow(receiver, "noop-held"))
    await asyncio.sleep(0.05)
    assert (await get_workflow(api, "noop-held"))["status"]["phase"] == "Running"
    assert receiver.calls == []
    await emulator.run("noop-held")
    wf = await get_workflow(api, "noop-held", fields="status.phase,status.progress")
    assert wf == {"status": {"phase": "Succeeded", "progress": "2/2"}}
    assert len(receiver.calls) == 1


async def test_complete_writes_artifacts_and_fires_the_hook(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    _, body = await create(api, bot_workflow(receiver))
    name = body["metadata"]["name"]
    await emulator.complete(
        name,
        "Failed",
        message="boom",
        failed_step="summarize",
        artifacts={"generate": {"data.csv": b"a,b\n1,2\n"}},
    )
    wf = await get_workflow(api, name)
    nodes = nodes_by_display_name(wf)
    assert wf["status"]["phase"] == "Failed"
    assert nodes["summarize"]["message"] == "boom"
    assert wf["status"]["message"] == f"child '{nodes['summarize']['id']}' failed"
    assert nodes["generate"]["outputs"]["artifacts"][0]["s3"] == {
        "key": f"sessions/{name}/generate/data.csv"
    }
    assert await emulator.read_object(f"sessions/{name}/generate/data.csv") == b"a,b\n1,2\n"
    assert [call["body"]["status"] for call in receiver.calls] == ["Failed"]


async def test_terminate_kills_a_running_script_and_skips_the_hook(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    manifest = noop_workflow(receiver, "sleeper")
    manifest["spec"]["templates"] = [
        {
            "name": "main",
            "script": {
                "image": "python:3.12-alpine",
                "command": ["python"],
                "source": "import time\nprint('started', flush=True)\ntime.sleep(30)\n",
            },
        }
    ]
    await create(api, manifest)
    await eventually(lambda: "sleeper" in emulator.workflows["sleeper"]["status"].get("nodes", {}))
    await asyncio.sleep(0.2)  # let the interpreter start
    async with asyncio.timeout(3):
        async with api.put(f"/api/v1/workflows/{NAMESPACE}/sleeper/terminate", json={}) as response:
            assert response.status == 200
            wf = await response.json()
        await emulator.wait_idle()
    assert wf["status"]["phase"] == "Failed"
    assert wf["spec"]["shutdown"] == "Terminate"
    assert nodes_by_display_name(wf)["sleeper"]["message"] == "Stopped with strategy 'Terminate'"
    assert receiver.calls == []


async def test_stop_still_runs_the_exit_hook(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    await create(api, noop_workflow(receiver, "stopped"))
    async with api.put(f"/api/v1/workflows/{NAMESPACE}/stopped/stop", json={}) as response:
        wf = await response.json()
    assert wf["status"]["phase"] == "Failed"
    assert wf["status"]["message"] == "Stopped with strategy 'Stop'"
    assert [call["body"]["status"] for call in receiver.calls] == ["Failed"]


async def test_input_artifacts_come_from_s3_keys_in_the_arguments(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver, s3_config: S3Config
) -> None:
    async with _s3_client(s3_config) as client:
        await client.put_object(
            Bucket=s3_config.bucket, Key="uploads/in/raw.csv", Body=b"a\n1\n2\n"
        )
    manifest = noop_workflow(receiver, "reads-input")
    manifest["spec"]["arguments"]["artifacts"] = [
        {"name": "data", "s3": {"key": "uploads/in/raw.csv"}}
    ]
    manifest["spec"]["templates"] = [
        {
            "name": "main",
            "inputs": {"artifacts": [{"name": "data", "path": "/data/input.csv"}]},
            "outputs": {
                "parameters": [{"name": "lines", "valueFrom": {"path": "/tmp/lines.txt"}}],
                "artifacts": [{"name": "copy", "path": "/tmp/copy.csv"}],
            },
            "script": {
                "image": "python:3.12",
                "command": ["python"],
                "source": (
                    "import shutil\n"
                    "text = open('/data/input.csv').read()\n"
                    "open('{{outputs.parameters.lines.path}}', 'w').write(str(len(text.split())))\n"
                    "shutil.copy('{{inputs.artifacts.data.path}}', '/tmp/copy.csv')\n"
                    "print('{{workflow.name}}')\n"
                ),
            },
        }
    ]
    status, body = await create(api, manifest)
    assert status == 200, body
    wf = await wait_completed(api, "reads-input")
    assert wf["status"]["phase"] == "Succeeded", wf["status"].get("message")
    main = nodes_by_display_name(wf)["reads-input"]
    assert main["outputs"]["parameters"] == [{"name": "lines", "value": "3"}]
    assert main["outputs"]["result"] == "reads-input"
    [copy_artifact] = main["outputs"]["artifacts"]
    # No `s3.key` and no `archive: none`: the default key and a tar.gz, as Argo does.
    assert copy_artifact["s3"]["key"].startswith("reads-input/reads-input/")
    assert copy_artifact["s3"]["key"].endswith("/copy.tgz")
    packed = await emulator.read_object(copy_artifact["s3"]["key"])
    assert packed[:2] == b"\x1f\x8b"


async def test_latency_delays_every_answer(
    emulator: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    emulator.latency = 0.2
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with api.get("/api/v1/version") as response:
        assert response.status == 200
    assert loop.time() - started >= 0.2


# --------------------------------------------------------------------------------------------
# Reading


async def test_list_filters_by_labels_trims_fields_and_pages(
    emulator: ArgoEmulator, api: aiohttp.ClientSession, receiver: Receiver
) -> None:
    emulator.auto_run = False
    for index in range(5):
        team = "a" if index % 2 == 0 else "b"
        await create(api, noop_workflow(receiver, f"listed-{index}", labels={"team": team}))
    url = f"/api/v1/workflows/{NAMESPACE}"
    params = {
        "listOptions.labelSelector": "argo-chatops/managed=true,team in (a),!missing",
        "listOptions.limit": "2",
        "fields": "metadata.continue,items.metadata.name,items.status.phase",
    }
    async with api.get(url, params=params) as response:
        first = await response.json()
    assert first == {
        "metadata": {"continue": "2"},
        "items": [
            {"metadata": {"name": "listed-4"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "listed-2"}, "status": {"phase": "Running"}},
        ],
    }
    async with api.get(url, params={**params, "listOptions.continue": "2"}) as response:
        second = await response.json()
    assert second == {
        "metadata": {},
        "items": [{"metadata": {"name": "listed-0"}, "status": {"phase": "Running"}}],
    }

    params = {"listOptions.labelSelector": "workflows.argoproj.io/completed=true"}
    async with api.get(url, params=params) as response:
        assert (await response.json())["items"] is None

    params = {"listOptions.fieldSelector": "metadata.name=listed-3"}
    async with api.get(url, params={**params, "fields": "items.metadata.name"}) as response:
        assert await response.json() == {"items": [{"metadata": {"name": "listed-3"}}]}

    params = {"listOptions.fieldSelector": "status.phase=Running"}
    async with api.get(url, params=params) as response:
        assert response.status == 400
        assert await response.json() == {
            "code": 3,
            "message": "unsupported requirement status.phase=Running",
        }

    full = await get_workflow(api, "listed-1", fields="-status.nodes,spec")
    assert "spec" not in full and full["metadata"]["name"] == "listed-1"


async def test_fail_next_injects_an_error_once(
    emulator: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    emulator.fail_next("GET", r"^/api/v1/workflow-templates/", 500, message="etcd is sad")
    url = f"/api/v1/workflow-templates/{NAMESPACE}/csv-summary"
    async with api.get(url) as response:
        assert response.status == 500
        assert await response.json() == {"code": 13, "message": "etcd is sad"}
    async with api.get(url) as response:
        assert response.status == 200


async def test_userinfo_and_version(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/v1/userinfo") as response:
        assert (await response.json())["subject"] == "system:serviceaccount:argo:argo-chatops"
    async with api.get("/api/v1/version") as response:
        assert (await response.json())["version"] == "v4.1.2"


async def test_other_namespaces_are_forbidden(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/v1/workflows/prod/some-workflow") as response:
        assert response.status == 403
        assert (await response.json())["code"] == 7


# --------------------------------------------------------------------------------------------
# Pure helpers


def test_label_selectors_follow_kubernetes_syntax() -> None:
    labels = {"app": "web", "tier": "front", "env": "prod"}

    def matches(selector: str) -> bool:
        return all(match(labels) for match in parse_label_selector(selector))

    assert matches("app=web,tier==front")
    assert matches("app!=db,missing!=x")
    assert matches("env in (prod, staging),tier notin (back)")
    assert matches("app,!missing")
    assert not matches("app=db")
    assert not matches("!app")
    assert not matches("env notin (prod)")


def test_success_conditions_are_evaluated() -> None:
    def ok(expression: str, status: int) -> bool:
        return evaluate_condition(expression, {"response": {"statusCode": status, "body": "ok"}})

    assert ok("response.statusCode > 0", 500)
    assert ok("response.statusCode >= 200 && response.statusCode < 300", 204)
    assert not ok("response.statusCode >= 200 && response.statusCode < 300", 404)
    assert ok("response.statusCode == 404 || (response.body == 'ok' and true)", 500)
    assert not ok("!(response.statusCode > 0)", 200)
    with pytest.raises(ValueError):
        ok("request.nope > 1", 200)


def test_fields_keep_or_drop_dotted_paths() -> None:
    document = {"metadata": {"continue": "2", "resourceVersion": "9"}, "items": [{"a": 1, "b": 2}]}
    assert apply_fields(document, "metadata.continue,items.a") == {
        "metadata": {"continue": "2"},
        "items": [{"a": 1}],
    }
    assert apply_fields(document, "-items.b,metadata") == {"items": [{"a": 1}]}
