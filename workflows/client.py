"""Argo Server REST API over aiohttp, translated into our own types at this edge."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bot.models import Artifact, FailedStep, ParameterSpec, Phase, TemplateInfo, WorkflowStatus

logger = logging.getLogger(__name__)

COMPLETED_LABEL = "workflows.argoproj.io/completed"
FAILED_NODE_PHASES = {"Failed", "Error"}
EXECUTABLE_NODE_TYPES = {"Pod", "Container", "HTTP", "Plugin", "Suspend"}
ARCHIVED_LOG_ARTIFACT = "main-logs"


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
            params={"fields": "metadata.name,metadata.namespace,metadata.labels,status"},
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
        while True:
            payload = await self._request(
                "GET", f"/api/v1/workflows/{self.namespace}", params=params
            )
            for item in payload.get("items") or []:
                name = (item.get("metadata") or {}).get("name")
                if name:
                    found.append((name, Phase.parse((item.get("status") or {}).get("phase"))))
            next_page = (payload.get("metadata") or {}).get("continue")
            if not next_page:
                return found
            params["listOptions.continue"] = next_page

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
    ) -> dict[str, Any]:
        """Send one request, retrying (with backoff and jitter) only what may succeed later.

        Creates are safe to retry too: the workflow name is chosen by the caller, so a
        repeated create answers 409 instead of making a second workflow.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ArgoUnavailable),
            stop=stop_after_attempt(self._attempts),
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
        try:
            async with self._session.request(
                method, url, params=params, json=json, headers=self._headers, ssl=self._ssl
            ) as response:
                text = await response.text()
                if response.status < 400:
                    return _decode(text)
                raise _error_for(response.status, text)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise ArgoUnavailable(
                f"cannot reach the Argo Server ({error.__class__.__name__})"
            ) from error
        except TimeoutError as error:
            raise ArgoUnavailable("the Argo Server did not answer in time") from error


def _decode(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ArgoUnavailable("the Argo Server answered with something that is not JSON") from error
    return value if isinstance(value, dict) else {}


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
    return TemplateInfo(
        name=str(metadata.get("name", "")),
        description=annotations.get("workflows.argoproj.io/description"),
        parameters=tuple(parameters),
        input_artifacts=artifacts,
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
                    name=str(raw.get("name")), step=step, key=key, bucket=s3.get("bucket") or ""
                ),
            )
    return sorted(found.values(), key=lambda a: a.key)
