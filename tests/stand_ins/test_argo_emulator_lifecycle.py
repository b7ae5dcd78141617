"""The emulator's lifecycle endpoints behave like Argo's: logs, retry, resubmit, shutdown, holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stand_ins.argo_emulator import ArgoEmulator
from tests.conftest import ARGO_TOKEN
from tests.lifecycle_support import FLAKY_TEMPLATE

NS = "argo"


@pytest.fixture
async def api(argo: ArgoEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=argo.url, headers={"Authorization": f"Bearer {ARGO_TOKEN}"}
    ) as session:
        yield session


def workflow(name: str, template: str, **parameters: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"argo-chatops/managed": "true"},
            "annotations": {"argo-chatops/thread-ts": "1.0001"},
        },
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]},
            "hooks": {
                "exit": {
                    "templateRef": {"name": "argo-chatops-notify", "template": "notify"},
                    "arguments": {
                        "parameters": [
                            {"name": "url", "value": "http://127.0.0.1:9/hooks/argo"},
                            {"name": "token", "value": "t0k3n"},
                            {"name": "status", "value": "{{workflow.status}}"},
                        ]
                    },
                }
            },
        },
    }


async def create(api: aiohttp.ClientSession, manifest: dict[str, Any]) -> None:
    async with api.post(f"/api/v1/workflows/{NS}", json={"workflow": manifest}) as response:
        assert response.status == 200, await response.text()


async def log_chunks(api: aiohttp.ClientSession, name: str, **query: str) -> list[dict]:
    async with api.get(f"/api/v1/workflows/{NS}/{name}/log", params=query) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        raw = await response.read()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


async def test_logs_stream_newline_delimited_json_per_pod(
    argo: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    await create(api, workflow("logs-demo", "csv-summary", rows="2"))
    await argo.wait_idle()
    chunks = await log_chunks(api, "logs-demo", **{"logOptions.container": "main"})
    pods = {chunk["result"]["podName"] for chunk in chunks}
    assert len(pods) == 2 and all(pod.startswith("logs-demo-") for pod in pods)
    assert chunks[0]["result"]["content"].startswith("wrote 2 rows")
    [generate] = [p for p in pods if "-generate-" in p]

    only = await log_chunks(api, "logs-demo", podName=generate, **{"logOptions.container": "main"})
    assert [c["result"]["podName"] for c in only] == [generate]

    tail = await log_chunks(
        api, "logs-demo", **{"logOptions.container": "main", "logOptions.tailLines": "1"}
    )
    assert len(tail) == 2  # the last line of each pod
    stamped = await log_chunks(
        api, "logs-demo", **{"logOptions.container": "main", "logOptions.timestamps": "true"}
    )
    assert stamped[0]["result"]["content"][:4].isdigit()


async def test_logs_without_a_container_end_in_an_error_chunk(
    argo: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    await create(api, workflow("no-container", "csv-summary", rows="2"))
    await argo.wait_idle()
    [chunk] = await log_chunks(api, "no-container")
    assert chunk["error"]["http_code"] == 400
    assert "a container name must be specified" in chunk["error"]["message"]
    async with api.get(f"/api/v1/workflows/{NS}/missing/log") as response:
        assert response.status == 404


async def test_retry_reruns_failed_pods_only_and_runs_the_exit_hook_again(
    argo: ArgoEmulator, api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    argo.add_template(FLAKY_TEMPLATE)
    await create(api, workflow("flaky-run", "flaky", flag=str(tmp_path / "flag")))
    await argo.wait_idle()
    wf = argo.workflows["flaky-run"]
    assert wf["status"]["phase"] == "Failed"
    prepare_id = next(
        n["id"] for n in wf["status"]["nodes"].values() if n["displayName"] == "prepare"
    )
    prepare_started = wf["status"]["nodes"][prepare_id]["startedAt"]

    async with api.put(f"/api/v1/workflows/{NS}/flaky-run/retry", json={}) as response:
        assert response.status == 200
        retried = await response.json()
    assert retried["status"]["phase"] == "Running"
    assert retried["metadata"]["labels"]["workflows.argoproj.io/completed"] == "false"
    await argo.wait_idle()

    assert wf["status"]["phase"] == "Succeeded"
    assert wf["status"]["nodes"][prepare_id]["startedAt"] == prepare_started  # kept, not rerun
    assert [r.content for r in argo.logs["flaky-run"]].count("prepare ran") == 1
    assert "second try: fine" in [r.content for r in argo.logs["flaky-run"]]
    assert len([c for c in argo.hook_calls if c.workflow == "flaky-run"]) == 2


async def test_retry_of_a_workflow_that_did_not_fail_is_refused(
    argo: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    argo.auto_run = False
    await create(api, workflow("still-running", "csv-summary"))
    async with api.put(f"/api/v1/workflows/{NS}/still-running/retry", json={}) as response:
        assert response.status == 400
        body = await response.json()
    assert body == {"code": 3, "message": "Cannot retry a workflow in phase Running"}


async def test_resubmit_copies_spec_labels_and_annotations_into_a_new_workflow(
    argo: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    await create(api, workflow("original", "csv-summary", rows="2"))
    await argo.wait_idle()
    async with api.put(f"/api/v1/workflows/{NS}/original/resubmit", json={}) as response:
        assert response.status == 200
        copy = await response.json()
    name = copy["metadata"]["name"]
    assert name.startswith("original-") and len(name) == len("original-") + 5
    labels = copy["metadata"]["labels"]
    assert labels["argo-chatops/managed"] == "true"
    assert labels["workflows.argoproj.io/resubmitted-from-workflow"] == "original"
    assert (
        "workflows.argoproj.io/completed" not in labels
        or labels["workflows.argoproj.io/completed"] == "false"
    )
    assert copy["metadata"]["annotations"]["argo-chatops/thread-ts"] == "1.0001"
    assert copy["spec"]["hooks"] == argo.workflows["original"]["spec"]["hooks"]
    await argo.wait_idle()
    assert argo.workflows[name]["status"]["phase"] == "Succeeded"


async def test_hold_pending_and_hold_step(argo: ArgoEmulator, api: aiohttp.ClientSession) -> None:
    argo.hold_pending = True
    argo.hold_step("summarize")
    await create(api, workflow("held", "csv-summary", rows="2"))
    wf = argo.workflows["held"]
    await asyncio.sleep(0.1)
    assert wf["status"]["phase"] == "Pending" and wf["status"]["startedAt"] is None
    argo.release("held")
    for _ in range(200):
        if wf["status"].get("progress") == "1/2":
            break
        await asyncio.sleep(0.02)
    running = [n["displayName"] for n in wf["status"]["nodes"].values() if n["phase"] == "Running"]
    assert "summarize" in running and wf["status"]["phase"] == "Running"
    argo.release_step("summarize")
    await argo.wait_idle()
    assert wf["status"]["phase"] == "Succeeded"


async def test_shutdown_delay_answers_at_once_and_stops_later(
    argo: ArgoEmulator, api: aiohttp.ClientSession
) -> None:
    argo.auto_run = False
    argo.shutdown_delay = 0.3
    await create(api, workflow("slow-stop", "csv-summary"))
    async with api.put(f"/api/v1/workflows/{NS}/slow-stop/stop", json={}) as response:
        answered = await response.json()
    assert answered["spec"]["shutdown"] == "Stop"
    assert answered["status"]["phase"] == "Running"
    await argo.wait_idle()
    assert argo.workflows["slow-stop"]["status"]["phase"] == "Failed"
    async with api.put(f"/api/v1/workflows/{NS}/slow-stop/stop", json={}) as response:
        assert response.status == 500
        assert "cannot shutdown a completed workflow" in (await response.json())["message"]
