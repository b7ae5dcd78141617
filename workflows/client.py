"""Argo Server REST API over aiohttp, translated into our own types at this edge."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bot.models import (
    Artifact,
    FailedStep,
    LogLine,
    ParameterSpec,
    Phase,
    StepStatus,
    TemplateInfo,
    WorkflowStatus,
)

logger = logging.getLogger(__name__)

COMPLETED_LABEL = "workflows.argoproj.io/completed"
# Templates opt in to Slack with this label; every other template is invisible there.
ENABLED_LABEL = "argo-chatops/enabled"
ENABLED_SELECTOR = f"{ENABLED_LABEL}=true"
FAILED_NODE_PHASES = {"Failed", "Error"}
EXECUTABLE_NODE_TYPES = {"Pod", "Container", "HTTP", "Plugin", "Suspend"}
ARCHIVED_LOG_ARTIFACT = "main-logs"
POD_NAME_FORMAT_ANNOTATION = "workflows.argoproj.io/pod-name-format"
# Argo's ensurePodNamePrefixLength: 253 (a Kubernetes name) - 10 (the hash) - 1 (the dash).
MAX_POD_NAME_PREFIX = 242
MAX_LOG_CHUNK_BYTES = 1024 * 1024
_LIST_FIELDS = (
    "metadata.continue",
    "items.metadata.name",
    "items.metadata.namespace",
    "items.metadata.labels",
    "items.status.phase",
    "items.status.progress",
    "items.status.startedAt",
    "items.status.finishedAt",
    "items.status.message",
)


class ArgoError(Exception):
    """Argo answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ArgoUnavailable(ArgoError):
    """Argo could not be reached, timed out or answered 5xx: worth retrying later."""


class ArgoNotFound(ArgoError):
    pass


class ArgoAlreadyExists(ArgoError):
    pass


class ArgoRejected(ArgoError):
    """Argo refused the request (4xx other than 404/409): retrying will not help."""


class ArgoClient:
    """One Argo Server, one namespace, one bearer token."""

    def __init__(
        self,
        *,
        base_url: str,
        namespace: str,
        token: str,
        session: aiohttp.ClientSession,
        verify_tls: bool = True,
        attempts: int = 3,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self.namespace = namespace
        self._session = session
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl: bool | None = None if verify_tls else False
        self._attempts = attempts

    # -- templates -----------------------------------------------------------------

    async def get_template(self, name: str) -> TemplateInfo:
        payload = await self._request("GET", f"/api/v1/workflow-templates/{self.namespace}/{name}")
        return template_info(payload)

    async def list_templates(self, label_selector: str | None = None) -> list[TemplateInfo]:
        params = {"listOptions.labelSelector": label_selector} if label_selector else None
        payload = await self._request(
            "GET", f"/api/v1/workflow-templates/{self.namespace}", params=params
        )
        items = payload.get("items") or []
        return sorted((template_info(item) for item in items), key=lambda t: t.name)

    # -- workflows -----------------------------------------------------------------

    async def create_workflow(self, manifest: Mapping[str, Any]) -> bool:
        """Create a workflow whose name the caller chose.

        Returns False when it already existed (a retried create after an unknown outcome),
        which is success for the caller: the name is ours.
        """
        body = {"namespace": self.namespace, "workflow": manifest}
        try:
            await self._request("POST", f"/api/v1/workflows/{self.namespace}", json=body)
        except ArgoAlreadyExists:
            return False
        return True

    async def get_workflow(self, name: str) -> WorkflowStatus:
        payload = await self._request(
            "GET",
            f"/api/v1/workflows/{self.namespace}/{name}",
            params={
                "fields": "metadata.name,metadata.namespace,metadata.labels,"
                "metadata.annotations,status"
            },
        )
        return workflow_status(payload)

    async def list_completed(
        self, label_selector: str, *, created_after: datetime | None = None, page_size: int = 1000
    ) -> list[tuple[str, Phase]]:
        """Names and phases of completed workflows matching the selector, with trimmed fields."""
        params: dict[str, str] = {
            "listOptions.labelSelector": f"{label_selector},{COMPLETED_LABEL}=true",
            "listOptions.limit": str(page_size),
            "fields": "metadata.continue,items.metadata.name,items.status.phase",
        }
        if created_after is not None:
            params["createdAfter"] = created_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        found: list[tuple[str, Phase]] = []
        async for item in self._list_pages(params):
            name = (item.get("metadata") or {}).get("name")
            if name:
                found.append((name, Phase.parse((item.get("status") or {}).get("phase"))))
        return found

    async def list_workflows(
        self,
        label_selector: str,
        *,
        created_after: datetime | None = None,
        with_nodes: bool = False,
        page_size: int = 500,
    ) -> list[WorkflowStatus]:
        """Workflows matching the selector in one (paged) list call, with trimmed fields.

        `with_nodes` adds `status.nodes` (the running step, pod names): heavier, so only the
        progress refresher asks for it, and only for workflows that are not completed.
        """
        fields = list(_LIST_FIELDS)
        if with_nodes:
            fields += ["items.metadata.annotations", "items.status.nodes"]
        params: dict[str, str] = {
            "listOptions.labelSelector": label_selector,
            "listOptions.limit": str(page_size),
            "fields": ",".join(fields),
        }
        if created_after is not None:
            params["createdAfter"] = created_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        return [workflow_status(item) async for item in self._list_pages(params)]

    async def _list_pages(self, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The items of every page; `listOptions.continue` is Argo's decimal offset."""
        params = dict(params)
        while True:
            payload = await self._request(
                "GET", f"/api/v1/workflows/{self.namespace}", params=params
            )
            for item in payload.get("items") or []:
                if isinstance(item, dict):
                    yield item
            next_page = (payload.get("metadata") or {}).get("continue")
            if not next_page:
                return
            params["listOptions.continue"] = next_page

    # -- lifecycle actions ---------------------------------------------------------

    async def stop_workflow(self, name: str) -> WorkflowStatus:
        """`spec.shutdown=Stop`: running pods stop, exit handlers still run."""
        return await self._act(name, "stop")

    async def terminate_workflow(self, name: str) -> WorkflowStatus:
        """`spec.shutdown=Terminate`: everything stops, exit handlers are skipped."""
        return await self._act(name, "terminate")

    async def retry_workflow(self, name: str) -> WorkflowStatus:
        """Re-run the failed steps of a Failed or Error workflow (the same object).

        Sent once, never retried: after a lost answer a second retry would be refused with
        "Cannot retry a workflow in phase Running" although the first one worked.
        """
        return await self._act(name, "retry", attempts=1)

    async def _act(self, name: str, verb: str, *, attempts: int | None = None) -> WorkflowStatus:
        payload = await self._request(
            "PUT",
            f"/api/v1/workflows/{self.namespace}/{name}/{verb}",
            json={"namespace": self.namespace, "name": name},
            attempts=attempts,
        )
        return workflow_status(payload)

    # -- logs ----------------------------------------------------------------------

    async def stream_logs(
        self, name: str, *, pod_name: str | None = None, container: str = "main"
    ) -> AsyncIterator[LogLine]:
        """The log lines of one pod (or, without `pod_name`, of every pod of the workflow).

        Argo streams newline-delimited JSON chunks `{"result": {"content", "podName"}}`; an
        error after the stream started arrives as an `{"error": {...}}` chunk. Not retried:
        lines already handed out cannot be taken back.
        """
        params = {"logOptions.container": container}
        if pod_name:
            params["podName"] = pod_name
        url = f"{self._base_url}/api/v1/workflows/{self.namespace}/{name}/log"
        with _transport_errors("cannot read the logs from", "did not send the logs"):
            async with self._session.get(
                url, params=params, headers=self._headers, ssl=self._ssl
            ) as response:
                if response.status >= 400:
                    raise _error_for(response.status, await response.text())
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    if len(pending) > MAX_LOG_CHUNK_BYTES:
                        raise ArgoUnavailable("Argo sent a log chunk larger than 1 MiB")
                    for raw in complete:
                        if line := _log_line(raw):
                            yield line
                if line := _log_line(pending):
                    yield line

    async def userinfo(self) -> dict[str, Any]:
        return await self._request("GET", "/api/v1/userinfo")

    # -- transport -----------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """Send one request, retrying (with backoff and jitter) only what may succeed later.

        Creates are safe to retry too: the workflow name is chosen by the caller, so a
        repeated create answers 409 instead of making a second workflow.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ArgoUnavailable),
            stop=stop_after_attempt(attempts or self._attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(method, path, params=params, json=json)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json: Any,
    ) -> dict[str, Any]:
        url = self._base_url + path
        with _transport_errors("cannot reach", "did not answer"):
            async with self._session.request(
                method, url, params=params, json=json, headers=self._headers, ssl=self._ssl
            ) as response:
                text = await response.text()
                if response.status < 400:
                    return _decode(text)
                raise _error_for(response.status, text)


@contextlib.contextmanager
def _transport_errors(unreachable: str, late: str) -> Iterator[None]:
    """A dropped connection or a timeout is ArgoUnavailable: worth trying again later."""
    try:
        yield
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
        raise ArgoUnavailable(
            f"{unreachable} the Argo Server ({error.__class__.__name__})"
        ) from error
    except TimeoutError as error:
        raise ArgoUnavailable(f"the Argo Server {late} in time") from error


def _decode(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ArgoUnavailable("the Argo Server answered with something that is not JSON") from error
    return value if isinstance(value, dict) else {}


def _log_line(raw: bytes) -> LogLine | None:
    """One chunk of a log stream; an error chunk raises what an HTTP error would."""
    if not raw.strip():
        return None
    try:
        chunk = json.loads(raw)
    except ValueError as error:
        raise ArgoUnavailable("the Argo Server sent a log chunk that is not JSON") from error
    if not isinstance(chunk, dict):
        return None
    if isinstance(problem := chunk.get("error"), dict):
        status = problem.get("http_code")
        message = str(problem.get("message") or "the log stream failed")
        raise _error_for(
            status if isinstance(status, int) else 500, json.dumps({"message": message})
        )
    result = chunk.get("result")
    if not isinstance(result, dict):
        return None
    return LogLine(
        content=str(result.get("content") or ""), pod_name=str(result.get("podName") or "")
    )


def _error_for(status: int, text: str) -> ArgoError:
    message = text.strip()[:300]
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    message = message or f"HTTP {status}"
    if status == 404:
        return ArgoNotFound(message, status=status)
    if status == 409:
        return ArgoAlreadyExists(message, status=status)
    if status in (401, 403):
        return ArgoRejected(f"Argo refused the bot's credentials: {message}", status=status)
    if status >= 500 or status == 429:
        return ArgoUnavailable(message, status=status)
    return ArgoRejected(message, status=status)


# -- payload translation -------------------------------------------------------------


def template_info(payload: Mapping[str, Any]) -> TemplateInfo:
    metadata = payload.get("metadata") or {}
    spec = payload.get("spec") or {}
    arguments = spec.get("arguments") or {}
    parameters = []
    for raw in arguments.get("parameters") or []:
        if not isinstance(raw, dict) or not raw.get("name"):
            continue
        default = raw.get("value", raw.get("default"))
        parameters.append(
            ParameterSpec(
                name=str(raw["name"]),
                default=None if default is None else str(default),
                enum=tuple(str(v) for v in raw.get("enum") or ()),
                description=raw.get("description"),
            )
        )
    artifacts = tuple(
        str(a["name"])
        for a in arguments.get("artifacts") or []
        if isinstance(a, dict) and "name" in a
    )
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return TemplateInfo(
        name=str(metadata.get("name", "")),
        description=annotations.get("workflows.argoproj.io/description"),
        parameters=tuple(parameters),
        input_artifacts=artifacts,
        enabled=isinstance(labels, dict) and labels.get(ENABLED_LABEL) == "true",
    )


def workflow_status(payload: Mapping[str, Any]) -> WorkflowStatus:
    """Translate a Workflow object; it counts as completed only once Argo labels it so.

    Argo runs exit handlers before it sets the final phase and the completed label, so a
    workflow read from inside its own exit hook still looks Running here.
    """
    metadata = payload.get("metadata") or {}
    status = payload.get("status") or {}
    labels = metadata.get("labels") or {}
    phase = Phase.parse(status.get("phase"))
    nodes = status.get("nodes") or {}
    return WorkflowStatus(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        phase=phase,
        completed=phase.is_final and labels.get(COMPLETED_LABEL, "true") == "true",
        started_at=_timestamp(status.get("startedAt")),
        finished_at=_timestamp(status.get("finishedAt")),
        message=status.get("message") or None,
        progress=status.get("progress") or None,
        failed_steps=tuple(_failed_steps(nodes)),
        artifacts=tuple(_artifacts(nodes)),
        steps=tuple(_steps(metadata, nodes)),
    )


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _failed_steps(nodes: Mapping[str, Any]) -> list[FailedStep]:
    failed = [
        node
        for node in nodes.values()
        if isinstance(node, dict)
        and node.get("type") in EXECUTABLE_NODE_TYPES
        and node.get("phase") in FAILED_NODE_PHASES
        and not (node.get("nodeFlag") or {}).get("hooked")
    ]
    failed.sort(key=lambda node: node.get("finishedAt") or "")
    return [
        FailedStep(
            name=str(node.get("displayName") or node.get("name")), message=node.get("message")
        )
        for node in failed
    ]


def _steps(metadata: Mapping[str, Any], nodes: Mapping[str, Any]) -> list[StepStatus]:
    """The workflow's pods in start order, without the exit handler's own nodes."""
    workflow = str(metadata.get("name", ""))
    pod_names_v1 = (metadata.get("annotations") or {}).get(POD_NAME_FORMAT_ANNOTATION) == "v1"
    steps = []
    for node in nodes.values():
        if not isinstance(node, dict) or node.get("type") != "Pod":
            continue
        node_name = str(node.get("name") or "")
        if (node.get("nodeFlag") or {}).get("hooked") or node_name.startswith(f"{workflow}.onExit"):
            continue
        steps.append(
            StepStatus(
                name=str(node.get("displayName") or node_name),
                phase=str(node.get("phase") or "Pending"),
                pod_name=pod_name(workflow, node, v1=pod_names_v1),
                message=node.get("message") or None,
                started_at=_timestamp(node.get("startedAt")),
                finished_at=_timestamp(node.get("finishedAt")),
            )
        )
    steps.sort(key=lambda step: step.started_at.timestamp() if step.started_at else float("inf"))
    return steps


def pod_name(workflow: str, node: Mapping[str, Any], *, v1: bool = False) -> str | None:
    """The pod of a node, as Argo names it (workflow/util/pod_name.go, GeneratePodName).

    v2 (the default): `<workflow>-<template>-<fnv32a(node name)>`; the hash is the suffix of
    the node id, which is `<workflow>-<the same hash>`. v1, or a node without a template:
    the node id itself.
    """
    node_id = str(node.get("id") or "")
    node_name = str(node.get("name") or "")
    template = node.get("templateName") or (node.get("templateRef") or {}).get("template") or ""
    if v1 or not template or not node_id.startswith(f"{workflow}-"):
        return node_id or None
    if node_name == workflow:
        return workflow
    prefix = workflow if ".inline" in node_name else f"{workflow}-{template}"
    return f"{prefix[:MAX_POD_NAME_PREFIX]}-{node_id.removeprefix(workflow + '-')}"


def _artifacts(nodes: Mapping[str, Any]) -> list[Artifact]:
    found: dict[str, Artifact] = {}
    for node in nodes.values():
        if not isinstance(node, dict):
            continue
        step = str(node.get("displayName") or node.get("templateName") or node.get("name") or "")
        for raw in (node.get("outputs") or {}).get("artifacts") or []:
            s3 = raw.get("s3") if isinstance(raw, dict) else None
            if not isinstance(s3, dict) or not s3.get("key"):
                continue
            if raw.get("name") == ARCHIVED_LOG_ARTIFACT:
                continue
            key = str(s3["key"])
            found.setdefault(
                key,
                Artifact(
                    name=str(raw.get("name")),
                    step=step,
                    key=key,
                    bucket=s3.get("bucket") or "",
                    deleted=raw.get("deleted") is True,
                ),
            )
    return sorted(found.values(), key=lambda a: a.key)
