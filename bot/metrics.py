"""Prometheus metrics of one service instance, on a registry the app factory owns.

Outside calls are measured where they leave the process, not in every caller: a client
middleware on the shared aiohttp session times every Slack and Argo request, and botocore's
call events time every S3 operation. Code added later (new Web API methods, multipart uploads)
is measured without touching this module.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from yarl import URL

PREFIX = "argo_chatops"
HOOK_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0)
# Slack answers API errors with HTTP 200 and {"ok": false}; only small bodies are peeked at.
MAX_PEEK_BYTES = 1024 * 1024
_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_S3_STARTED = "argo_chatops_started"
_S3_OPERATION = "argo_chatops_operation"


class Metrics:
    """Every metric the service exports; one instance per app, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        registry = self.registry
        self.commands = Counter(
            f"{PREFIX}_commands",
            "Slash commands by verb and outcome (ok, invalid, rejected, failed).",
            ["verb", "outcome"],
            registry=registry,
        )
        self.runs_started = Counter(
            f"{PREFIX}_runs_started",
            "Workflows created in Argo, by WorkflowTemplate.",
            ["template"],
            registry=registry,
        )
        self.runs_finished = Counter(
            f"{PREFIX}_runs_finished",
            "Runs announced in Slack, by WorkflowTemplate and final phase.",
            ["template", "phase"],
            registry=registry,
        )
        self.hook_to_announcement = Histogram(
            f"{PREFIX}_hook_to_announcement_seconds",
            "From an exit hook's arrival to the result posted in the run's thread.",
            buckets=HOOK_LATENCY_BUCKETS,
            registry=registry,
        )
        self.poll_cycle = Histogram(
            f"{PREFIX}_poll_cycle_seconds",
            "Duration of one fallback poll cycle.",
            ["outcome"],
            registry=registry,
        )
        self.poll_announced = Counter(
            f"{PREFIX}_poll_announced_runs",
            "Runs announced by the poller rather than by their exit hook (lost or late hooks).",
            registry=registry,
        )
        self.runs_tracked = Gauge(
            f"{PREFIX}_runs_tracked",
            "Runs started and not announced yet, as counted by the last poll cycle.",
            registry=registry,
        )
        self.client_seconds = Histogram(
            f"{PREFIX}_client_request_seconds",
            "Latency of calls to Slack, Argo and S3, retries included for S3.",
            ["service", "operation"],
            registry=registry,
        )
        self.client_errors = Counter(
            f"{PREFIX}_client_errors",
            "Failed calls to Slack, Argo and S3: transport errors, HTTP errors, Slack ok=false.",
            ["service", "operation", "error"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            f"{PREFIX}_upload_bytes",
            "Bytes of input files uploaded to S3 for runs.",
            registry=registry,
        )

    # -- domain events ---------------------------------------------------------------------

    def command(self, verb: str, outcome: str) -> None:
        self.commands.labels(verb=verb, outcome=outcome).inc()

    def run_started(self, template: str) -> None:
        self.runs_started.labels(template=template).inc()

    def run_finished(self, template: str, phase: str) -> None:
        self.runs_finished.labels(template=template, phase=phase).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- adapters --------------------------------------------------------------------------

    def http_middleware(self, *, slack_api_url: str, argo_url: str) -> aiohttp.ClientMiddlewareType:
        """Times every request of the shared session and counts its failures.

        A client middleware, not a `TraceConfig`: it costs one call per request where a trace
        sends a signal for every stage of it (~5 µs against ~19 µs a request, measured). An
        attempt aiohttp repeats on a fresh connection after a kept-alive one dropped counts
        as a call of its own.
        """
        classify = _Classifier(slack_api_url=slack_api_url, argo_url=argo_url)

        async def measure(
            request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            started = time.perf_counter()
            service, operation, is_slack_api = classify(request.method, request.url)
            try:
                response = await handler(request)
            except Exception as error:
                self._observe(service, operation, started)
                self._error(service, operation, _exception_kind(error))
                raise
            self._observe(service, operation, started)
            if response.status >= 400:
                self._error(service, operation, f"http_{response.status}")
            elif is_slack_api:
                error_code = await _slack_error(response)
                if error_code is not None:
                    self._error(service, operation, error_code)
            return response

        return measure

    def instrument_s3(self, events: Any) -> None:
        """Hook botocore's call events of an S3 client (`client.meta.events`)."""

        def before(model: Any, context: dict[str, Any], **_: Any) -> None:
            context[_S3_STARTED] = time.perf_counter()
            context[_S3_OPERATION] = model.name

        def after(
            http_response: Any, model: Any, context: dict[str, Any], parsed: Any = None, **_: Any
        ) -> None:
            started = context.get(_S3_STARTED)
            if started is not None:
                self._observe("s3", model.name, started)
            if http_response.status_code >= 300:
                code = (parsed or {}).get("Error", {}).get("Code") or http_response.status_code
                self._error("s3", model.name, _label(str(code)))

        def failed(exception: Exception, context: dict[str, Any], **_: Any) -> None:
            started = context.get(_S3_STARTED)
            operation = str(context.get(_S3_OPERATION) or "unknown")
            if started is not None:
                self._observe("s3", operation, started)
            self._error("s3", operation, _exception_kind(exception))

        events.register("before-call.s3", before, unique_id="argo-chatops-metrics-before")
        events.register("after-call.s3", after, unique_id="argo-chatops-metrics-after")
        events.register("after-call-error.s3", failed, unique_id="argo-chatops-metrics-error")

    def _observe(self, service: str, operation: str, started: float) -> None:
        self.client_seconds.labels(service=service, operation=operation).observe(
            time.perf_counter() - started
        )

    def _error(self, service: str, operation: str, error: str) -> None:
        self.client_errors.labels(service=service, operation=operation, error=error).inc()


class _Classifier:
    """Maps a request to (service, operation, is a Slack Web API call) with bounded labels."""

    def __init__(self, *, slack_api_url: str, argo_url: str) -> None:
        self._slack_api = str(slack_api_url).rstrip("/") + "/"
        self._slack_origin = URL(self._slack_api).origin()
        self._argo = str(argo_url).rstrip("/")

    def __call__(self, method: str, url: URL) -> tuple[str, str, bool]:
        text = str(url)
        if text.startswith(self._slack_api):
            slack_method = url.path.rstrip("/").rsplit("/", 1)[-1]
            return "slack", _label(slack_method), True
        if text.startswith(self._argo + "/"):
            return "argo", f"{method} {_argo_operation(url.path)}", False
        host = url.host or ""
        if url.origin() == self._slack_origin or host == "slack.com" or host.endswith(".slack.com"):
            if "upload" in url.path:
                return "slack", "files.upload", False
            return "slack", "files.download" if method == "GET" else "response_url", False
        return "other", method, False


def _argo_operation(path: str) -> str:
    """`/api/v1/workflows/argo/csv-summary-x7k2p/stop` -> `workflows/{name}/stop`."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        parts = parts[2:]
    if not parts:
        return "root"
    resource, rest = _label(parts[0]), parts[2:]
    if len(parts) == 1:
        return resource
    if not rest:
        return resource
    tail = [_label(p) if re.fullmatch(r"[a-z]+", p) else "{x}" for p in rest[1:]]
    return "/".join([resource, "{name}", *tail])


def _label(value: str) -> str:
    return value if _TOKEN.match(value) else "other"


def _exception_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectionError):
        return "connection"
    name = error.__class__.__name__
    return "connection" if "Connect" in name or "Endpoint" in name else _label(name.lower())


async def _slack_error(response: aiohttp.ClientResponse) -> str | None:
    """The `error` of a Slack `ok: false` answer; reading here caches the body for the caller."""
    if response.content_type != "application/json":
        return None
    if (response.content_length or 0) > MAX_PEEK_BYTES:
        return None
    try:
        raw = await response.read()
    except aiohttp.ClientError:
        return None
    if b"false" not in raw:  # an `ok: false` answer must say so; most answers are not one
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("ok") is False:
        return _label(str(body.get("error") or "error"))
    return None


METRICS = web.AppKey("metrics", Metrics)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """`GET /metrics` in the Prometheus text format."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
