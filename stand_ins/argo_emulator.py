"""A local Argo Server: the REST endpoints argo-chatops uses, backed by a small real executor.

Tests and the demo need an Argo that behaves like the real one where the bot can tell the
difference: the same validation answers (stricter, never looser), the same status shapes,
artifacts really written to S3, and the exit hook called *before* the workflow is marked
completed. Python `script` steps really run (locally, with `sys.executable`), so the shipped
`csv-summary` template works end to end. Knobs make the unhappy paths reproducible: dropped,
duplicated or slow hooks, a slow server, injected errors.

Everything lives on an `ArgoEmulator` instance; it listens on 127.0.0.1 with a free port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import io
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

# The one S3Config shared by the stand-ins; the emulator's "default artifact repository".
from stand_ins.s3_server import S3Config, isolated_session_vars

logger = logging.getLogger(__name__)

Json = dict[str, Any]

WORKFLOW_DEFINITION = "io.argoproj.workflow.v1alpha1.Workflow"
TEMPLATE_DEFINITION = "io.argoproj.workflow.v1alpha1.WorkflowTemplate"
ARGO_VERSION = "v4.1.2"
SERVICE_ACCOUNT = "argo-chatops"

PHASE_LABEL = "workflows.argoproj.io/phase"
COMPLETED_LABEL = "workflows.argoproj.io/completed"
TEMPLATE_LABEL = "workflows.argoproj.io/workflow-template"
CLUSTER_TEMPLATE_LABEL = "workflows.argoproj.io/cluster-workflow-template"
WORKFLOW_ARCHIVING_LABEL = "workflows.argoproj.io/workflow-archiving-status"
RESUBMITTED_FROM_LABEL = "workflows.argoproj.io/resubmitted-from-workflow"

COMPLETED_PHASES = frozenset({"Succeeded", "Failed", "Error"})
UNSUCCESSFUL_PHASES = frozenset({"Failed", "Error"})
EXECUTABLE_NODE_TYPES = frozenset({"Pod", "Container", "HTTP", "Plugin", "Suspend"})
ARTIFACT_LOCATIONS = ("s3", "gcs", "http", "git", "raw", "oss", "hdfs", "artifactory", "azure")

SCRIPT_TIMEOUT_SECONDS = 60.0
MAX_NAME_LENGTH = 63
# Kubernetes' generateName alphabet: no vowels, no look-alike characters.
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
TOKEN_ERROR = "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/"

# HTTP status -> gRPC code, as in server/utils/errors.go (ToStatusError).
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 429: 8, 500: 13, 501: 12, 503: 14}

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TAG = re.compile(r"\{\{\s*([^{}=\s][^{}]*?)\s*\}\}")


# --------------------------------------------------------------------------------------------
# Public records and configuration


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the emulator received it, for assertions."""

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HookCall:
    """One HTTP request made by an `http` template (exit hooks included)."""

    workflow: str
    node: str
    method: str
    url: str
    headers: dict[str, str]
    body: str
    status: int | None
    response_body: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class LogRecord:
    """One line a step's main container wrote (stdout, then stderr), for the log endpoint."""

    pod: str
    content: str
    time: str


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    message: str


class ApiError(Exception):
    """An error answer of the Argo Server: HTTP status plus a google.rpc.Status body."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = GRPC_CODES.get(status, 2) if code is None else code
        self.message = message


class _NodeError(Exception):
    """A problem that makes one node end in phase Error (Argo's "controller error")."""


# --------------------------------------------------------------------------------------------
# Small pure helpers


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    """RFC 3339 as Argo accepts it; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fnv32a(text: str) -> int:
    """Argo's node-id hash (FNV-1a, 32 bit) of a node name."""
    value = 0x811C9DC5
    for byte in text.encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def node_id(workflow: str, node_name: str) -> str:
    """`<wf>-<fnv32a(node name)>`; the root node's id is the workflow name itself."""
    return workflow if node_name == workflow else f"{workflow}-{fnv32a(node_name)}"


def _pod_name(workflow: str, template: str, node_name: str) -> str:
    """Pod names, version 2: the node id with the template name inserted."""
    if node_name == workflow:
        return workflow
    return (
        f"{workflow}-{template}-{fnv32a(node_name)}" if template else node_id(workflow, node_name)
    )


def _substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace simple `{{tag}}`s that the scope knows; leave the others for a later pass."""

    def replace(match: re.Match[str]) -> str:
        value = scope.get(match.group(1))
        return match.group(0) if value is None else value

    return _TAG.sub(replace, text)


def _substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    """`_substitute` over every string in a JSON-like structure (returns a new structure)."""
    if isinstance(value, str):
        return _substitute(value, scope)
    if isinstance(value, list):
        return [_substitute_all(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: _substitute_all(item, scope) for key, item in value.items()}
    return value


def _format_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _merge_maps(base: Json, override: Json) -> Json:
    """A strategic-merge-like patch for plain maps: nested maps merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_maps(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_named(
    base: list[Json], override: list[Json], merge: Callable[[Json, Json], Json]
) -> list[Json]:
    """Merge two lists of named items by `name`; the override's items win field by field."""
    merged = [copy.deepcopy(item) for item in base]
    index = {item.get("name"): position for position, item in enumerate(merged)}
    for item in override:
        position = index.get(item.get("name"))
        if position is None:
            index[item.get("name")] = len(merged)
            merged.append(copy.deepcopy(item))
        else:
            merged[position] = merge(merged[position], item)
    return merged


def _merge_parameter(base: Json, override: Json) -> Json:
    return {**copy.deepcopy(base), **copy.deepcopy(override)}


def _merge_artifact(base: Json, override: Json) -> Json:
    """Same backend: merge the location fields (a key alone keeps the bucket). Else replace."""
    merged = copy.deepcopy(base)
    for location in ARTIFACT_LOCATIONS:
        if location in override and location in merged:
            merged[location] = _merge_maps(merged[location], override[location])
        elif location in override or any(other in override for other in ARTIFACT_LOCATIONS):
            merged.pop(location, None)
    for key, value in override.items():
        if key not in merged or key not in ARTIFACT_LOCATIONS:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_workflow_specs(template_spec: Json, workflow_spec: Json) -> Json:
    """The controller's JoinWorkflowSpec for a templateRef workflow: the Workflow wins.

    Arguments merge by name, hooks per hook name, maps recursively; lists and scalars replace.
    """
    merged = copy.deepcopy(template_spec)
    for key, value in workflow_spec.items():
        if key == "arguments":
            base = merged.get("arguments", {})
            merged["arguments"] = {
                **copy.deepcopy(base),
                **{
                    k: copy.deepcopy(v)
                    for k, v in value.items()
                    if k not in ("parameters", "artifacts")
                },
                "parameters": _merge_named(
                    base.get("parameters", []), value.get("parameters", []), _merge_parameter
                ),
                "artifacts": _merge_named(
                    base.get("artifacts", []), value.get("artifacts", []), _merge_artifact
                ),
            }
            for list_key in ("parameters", "artifacts"):
                if not merged["arguments"][list_key]:
                    del merged["arguments"][list_key]
        elif key == "hooks":
            merged["hooks"] = {**copy.deepcopy(merged.get("hooks", {})), **copy.deepcopy(value)}
        elif key == "templates" and not value:
            continue
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_maps(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------------
# Schema validation


def _strict_schema(document: Json) -> Json:
    """A copy of schema.json that rejects unknown fields in Argo's own object definitions.

    The API server drops unknown fields silently; a typo in a manifest the bot builds should
    fail a test instead of being ignored.
    """
    strict = copy.deepcopy(document)
    for name, definition in strict["definitions"].items():
        if (
            name.startswith("io.argoproj.")
            and "properties" in definition
            and "additionalProperties" not in definition
        ):
            definition["additionalProperties"] = False
    return strict


class _SchemaValidators:
    """Validators for Workflow and WorkflowTemplate, built once per emulator."""

    def __init__(self, schema_path: Path) -> None:
        document = _strict_schema(json.loads(Path(schema_path).read_text()))
        base = document.get("$id", "urn:argo:schema")
        registry: Registry[Any] = Registry().with_resource(
            base, DRAFT202012.create_resource(document)
        )
        self._validators = {
            kind: Draft202012Validator(
                {"$ref": f"{base}#/definitions/{definition}"}, registry=registry
            )
            for kind, definition in (
                ("Workflow", WORKFLOW_DEFINITION),
                ("WorkflowTemplate", TEMPLATE_DEFINITION),
            )
        }

    def check(self, kind: str, manifest: Any) -> None:
        """Raise a 400 naming the offending path, e.g. `spec.templates[0]: ... ('foo' ...)`."""
        error = best_match(self._validators[kind].iter_errors(manifest))
        if error is None:
            return
        message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
        where = _format_path(error.absolute_path) or "<root>"
        raise ApiError(400, f"{kind} is invalid: {where}: {message}")


# --------------------------------------------------------------------------------------------
# Kubernetes selectors and Argo's `fields`


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_REQUIREMENT = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQ_REQUIREMENT = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)$")
_EXISTS_REQUIREMENT = re.compile(rf"^(!?)\s*({_KEY})$")

LabelMatcher = Callable[[Mapping[str, str]], bool]


def parse_label_selector(selector: str) -> list[LabelMatcher]:
    """Kubernetes selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`."""
    matchers: list[LabelMatcher] = []
    for requirement in _split_requirements(selector):
        if match := _SET_REQUIREMENT.match(requirement):
            key, operator = match.group(1), match.group(2)
            values = {value.strip() for value in match.group(3).split(",") if value.strip()}
            if operator == "in":
                matchers.append(lambda labels, k=key, v=values: labels.get(k) in v)
            else:
                matchers.append(lambda labels, k=key, v=values: labels.get(k) not in v)
        elif match := _EQ_REQUIREMENT.match(requirement):
            key, operator, value = match.groups()
            if operator == "!=":
                matchers.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                matchers.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _EXISTS_REQUIREMENT.match(requirement):
            negate, key = match.group(1) == "!", match.group(2)
            matchers.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise ApiError(400, f"unable to parse requirement: {requirement!r}")
    return matchers


def apply_fields(document: Json, fields: str | None) -> Json:
    """Argo's `fields=`: a comma list of dotted paths to keep (or, after a leading `-`, to drop).

    Lists are traversed element by element (`items.metadata.name`). What is kept is shared
    with `document`, not copied (every caller serializes the result at once).
    """
    if not fields:
        return document
    exclude = fields.startswith("-")
    paths = [path.strip() for path in fields.lstrip("-").split(",") if path.strip()]
    if exclude:
        trimmed = copy.deepcopy(document)
        for path in paths:
            _drop_path(trimmed, path.split("."))
        return trimmed
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[parts[-1]] = True
    return _pick(document, tree)


def _pick(value: Any, tree: Any) -> Any:
    if tree is True:
        return value
    if isinstance(value, list):
        return [_pick(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    return {key: _pick(value[key], sub) for key, sub in tree.items() if key in value}


def _drop_path(value: Any, parts: list[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _drop_path(item, parts)
    elif isinstance(value, dict) and parts and parts[0] in value:
        if len(parts) == 1:
            del value[parts[0]]
        else:
            _drop_path(value[parts[0]], parts[1:])


# --------------------------------------------------------------------------------------------
# successCondition: a tiny evaluator for the expr subset http templates use


_CONDITION_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\))
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "contains": lambda a, b: b in a,
    "startsWith": lambda a, b: str(a).startswith(str(b)),
    "endsWith": lambda a, b: str(a).endswith(str(b)),
    "in": lambda a, b: a in b,
}
_WORD_OPERATORS = {"and": "&&", "or": "||", "not": "!"}


def evaluate_condition(expression: str, context: Mapping[str, Any]) -> bool:
    """Evaluate `response.statusCode >= 200 && response.statusCode < 300` style conditions.

    Supports `&&`/`and`, `||`/`or`, `!`/`not`, parentheses, comparisons, `contains`,
    `startsWith`, `endsWith`, numbers, quoted strings, true/false/nil and dotted names.
    """
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _CONDITION_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot parse {expression!r} at {text[position:]!r}")
        position = match.end()
        if match.group("number") is not None:
            number = match.group("number")
            tokens.append(("value", float(number) if "." in number else int(number)))
        elif match.group("string") is not None:
            tokens.append(("value", json.loads('"' + match.group("string")[1:-1] + '"')))
        elif match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        else:
            name = match.group("name")
            if name in _WORD_OPERATORS:
                tokens.append(("op", _WORD_OPERATORS[name]))
            elif name in ("true", "false", "nil"):
                tokens.append(("value", {"true": True, "false": False, "nil": None}[name]))
            elif name in _COMPARISONS:
                tokens.append(("op", name))
            else:
                tokens.append(("value", _lookup(context, name)))
    result, rest = _parse_or(tokens)
    if rest:
        raise ValueError(f"unexpected {rest[0][1]!r} in {expression!r}")
    return bool(result)


def _lookup(context: Mapping[str, Any], name: str) -> Any:
    value: Any = context
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"unknown name {name!r}")
        value = value[part]
    return value


def _parse_or(tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
    left, tokens = _parse_and(tokens)
    while tokens and tokens[0] == ("op", "||"):
        right, tokens = _parse_and(tokens[1:])
        left = bool(left) or bool(right)
    return left, tokens


def _parse_and(tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
    left, tokens = _parse_not(tokens)
    while tokens and tokens[0] == ("op", "&&"):
        right, tokens = _parse_not(tokens[1:])
        left = bool(left) and bool(right)
    return left, tokens


def _parse_not(tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
    if tokens and tokens[0] == ("op", "!"):
        value, rest = _parse_not(tokens[1:])
        return not value, rest
    left, tokens = _parse_primary(tokens)
    if tokens and tokens[0][0] == "op" and tokens[0][1] in _COMPARISONS:
        operator = tokens[0][1]
        right, tokens = _parse_primary(tokens[1:])
        return _COMPARISONS[operator](left, right), tokens
    return left, tokens


def _parse_primary(tokens: list[tuple[str, Any]]) -> tuple[Any, list[tuple[str, Any]]]:
    if not tokens:
        raise ValueError("unexpected end of expression")
    kind, value = tokens[0]
    if kind == "value":
        return value, tokens[1:]
    if value == "(":
        inner, rest = _parse_or(tokens[1:])
        if not rest or rest[0] != ("op", ")"):
            raise ValueError("missing ')'")
        return inner, rest[1:]
    raise ValueError(f"unexpected {value!r}")


# --------------------------------------------------------------------------------------------
# Execution state


@dataclass(frozen=True)
class _TemplateContext:
    """Where template names resolve: the workflow's own templates or a WorkflowTemplate's."""

    templates: Mapping[str, Json]
    scope: str


@dataclass
class _Call:
    """One template invocation: what a step, a task, the entrypoint or a hook asks to run."""

    template: Json
    context: _TemplateContext
    node_name: str
    display_name: str
    boundary_id: str | None
    parameters: dict[str, str]
    artifacts: dict[str, Json]
    template_ref: Json | None = None
    hooked: bool = False
    copies: int = 1


@dataclass
class _Execution:
    wf: Json
    spec: Json
    context: _TemplateContext
    globals: dict[str, str]
    workdir: Path
    started: datetime
    # How many identical requests each `http` node sends: >1 (or 0) only inside the exit hook.
    http_copies: int = 1
    # A retry: the Pod nodes that succeeded before, by node name; they are not run again.
    retained: dict[str, Json] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.wf["metadata"]["name"])


# --------------------------------------------------------------------------------------------
# The emulator


def workflow_completed(wf: Json) -> bool:
    """Argo's own test: the controller has labelled the workflow completed."""
    return wf["metadata"].get("labels", {}).get(COMPLETED_LABEL) == "true"


class ArgoEmulator:
    """An Argo Server (REST) plus a tiny workflow controller, in one aiohttp app."""

    def __init__(
        self,
        *,
        token: str,
        schema_path: Path,
        s3: S3Config | None,
        namespace: str = "argo",
        auto_run: bool = True,
        completion_delay: float = 0.2,
    ) -> None:
        self.token = token
        self.namespace = namespace
        self.s3 = s3
        self.auto_run = auto_run
        self.completion_delay = completion_delay
        self.hook_copies = 1
        self.latency = 0.0
        self.script_timeout = SCRIPT_TIMEOUT_SECONDS
        # What http templates read through `valueFrom.secretKeyRef`: name -> key -> value.
        self.secrets: dict[str, dict[str, str]] = {}
        # Keep new workflows in phase Pending until `release(name)` or `run(name)`.
        self.hold_pending = False
        # The main-container log of every executed script step: workflow -> lines in order.
        self.logs: dict[str, list[LogRecord]] = {}
        # When set, every log stream ends with an error chunk carrying this message.
        self.log_stream_error: str | None = None
        # > 0: stop/terminate answer at once (spec.shutdown set, still Running) and the
        # workflow stops this many seconds later, as with a real controller. 0: they answer
        # once the workflow has stopped.
        self.shutdown_delay = 0.0

        self.requests: list[RecordedRequest] = []
        self.created: list[Json] = []
        self.workflows: dict[str, Json] = {}
        self.templates: dict[str, Json] = {}
        self.hook_calls: list[HookCall] = []
        self.url = ""

        self._schema = _SchemaValidators(schema_path)
        self._faults: list[_Fault] = []
        self._resource_version = 1000
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[str, asyncio.Task[Any]] = {}
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._s3_client: Any = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._tmp_root: Path | None = None
        self._step_gates: dict[str, asyncio.Event] = {}
        self._retained: dict[str, dict[str, Json]] = {}

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on 127.0.0.1 with a free port; return the base URL."""
        self._tmp_root = Path(tempfile.mkdtemp(prefix="argo-emulator-"))
        self._http = aiohttp.ClientSession()
        if self.s3 is not None:
            # Never AWS_PROFILE or ~/.aws: a developer's settings must not change the emulator.
            session = get_session(isolated_session_vars())
            self._s3_client = await self._exit_stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=self.s3.endpoint_url,
                    aws_access_key_id=self.s3.access_key,
                    aws_secret_access_key=self.s3.secret_key,
                    region_name=self.s3.region,
                    config=AioConfig(s3={"addressing_style": "path"}),
                )
            )
        self._runner = web.AppRunner(self._build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop background executions, the server and the clients."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self._exit_stack.aclose()
        self._s3_client = None
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None

    async def __aenter__(self) -> ArgoEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- templates ------------------------------------------------------------------------

    def add_template(self, manifest: Json) -> None:
        """Install (or replace) a WorkflowTemplate; raises ValueError when it is invalid."""
        try:
            stored = self._admit_template(manifest)
        except ApiError as exc:
            raise ValueError(exc.message) from exc
        self.templates[stored["metadata"]["name"]] = stored

    def load_templates(self, directory: Path) -> None:
        """Install every WorkflowTemplate in `directory/*.yaml`."""
        for path in sorted(Path(directory).glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text()):
                if document is not None:
                    self.add_template(document)

    # ---- knobs ----------------------------------------------------------------------------

    def fail_next(
        self, method: str, path_regex: str, status: int, times: int = 1, message: str = "injected"
    ) -> None:
        """Answer the next `times` matching API requests with `status` (matched by re.search)."""
        self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, times, message))

    # ---- control --------------------------------------------------------------------------

    async def run(self, name: str) -> None:
        """Execute a workflow now (for auto_run=False); return once it has completed."""
        wf = self._workflow(name)
        task = self._runs.get(name)
        if task is None or task.done():
            if self._completed(wf):
                return
            task = self._start_run(name, self._execute_workflow(name))
        await self._outcome(task)

    async def complete(
        self,
        name: str,
        phase: str = "Succeeded",
        *,
        message: str | None = None,
        failed_step: str | None = None,
        artifacts: dict[str, dict[str, bytes]] | None = None,
        run_hook: bool = True,
    ) -> None:
        """Finish a workflow without executing it.

        `artifacts` maps step name -> file name -> bytes; each file is written to S3 at
        `sessions/<wf>/<step>/<file>` and listed in that step's node outputs.
        """
        if phase not in COMPLETED_PHASES:
            raise ValueError(f"phase must be one of {sorted(COMPLETED_PHASES)}")
        wf = self._workflow(name)
        if self._completed(wf):
            raise RuntimeError(f"workflow {name} has already completed")
        await self._cancel_run(name)
        task = self._start_run(
            name,
            self._fake_completion(
                name, phase, message, failed_step, artifacts or {}, run_hook=run_hook
            ),
        )
        await self._outcome(task)

    async def terminate(self, name: str) -> None:
        """`argo terminate`: Failed at once, running nodes stopped, the exit hook NOT run."""
        wf = self._workflow(name)
        if self._completed(wf):
            raise RuntimeError("cannot shutdown a completed workflow")
        await self._cancel_run(name)
        wf["spec"]["shutdown"] = "Terminate"
        message = "Stopped with strategy 'Terminate'"
        self._stop_nodes(wf, message)
        self._mark_completed(wf, "Failed", message)

    async def stop(self, name: str) -> None:
        """`argo stop`: running nodes stopped, the exit hook still runs, then Failed."""
        wf = self._workflow(name)
        if self._completed(wf):
            raise RuntimeError("cannot shutdown a completed workflow")
        await self._cancel_run(name)
        wf["spec"]["shutdown"] = "Stop"
        message = "Stopped with strategy 'Stop'"
        self._stop_nodes(wf, message)
        task = self._start_run(name, self._stop_and_finish(name, message))
        await self._outcome(task)

    def release(self, name: str) -> None:
        """Start a workflow held in Pending (`hold_pending`), in the background."""
        wf = self._workflow(name)
        task = self._runs.get(name)
        if not self._completed(wf) and (task is None or task.done()):
            self._start_run(name, self._execute_workflow(name))

    def hold_step(self, display_name: str) -> None:
        """Steps with this display name start (phase Running) and then wait for release_step."""
        self._step_gates.setdefault(display_name, asyncio.Event())

    def release_step(self, display_name: str) -> None:
        gate = self._step_gates.pop(display_name, None)
        if gate is not None:
            gate.set()

    async def retry(self, name: str) -> None:
        """`argo retry`: a Failed or Error workflow runs again; its succeeded pods are kept.

        Like the controller: failed nodes and the exit handler's nodes are dropped (the exit
        hook runs again at the end), the completed label goes back to false, the phase to
        Running, and `spec.shutdown` is cleared.
        """
        wf = self._workflow(name)
        phase = wf["status"].get("phase")
        if phase not in UNSUCCESSFUL_PHASES:
            raise ValueError(f"Cannot retry a workflow in phase {phase}")
        await self._cancel_run(name)
        retained = {
            node["name"]: node
            for node in (wf["status"].get("nodes") or {}).values()
            if node.get("type") == "Pod"
            and node.get("phase") == "Succeeded"
            and not (node.get("nodeFlag") or {}).get("hooked")
            and not node["name"].startswith(f"{name}.onExit")
        }
        kept_pods = {
            _pod_name(name, node.get("templateName", ""), node["name"])
            for node in retained.values()
        }
        self.logs[name] = [record for record in self.logs.get(name, []) if record.pod in kept_pods]
        wf["spec"].pop("shutdown", None)
        status = wf["status"]
        status["nodes"] = {}
        status["finishedAt"] = None
        for key in ("message", "conditions"):
            status.pop(key, None)
        wf["metadata"].setdefault("labels", {})[COMPLETED_LABEL] = "false"
        self._set_phase(wf, "Running")
        self._retained[name] = retained
        if self.auto_run:
            self._start_run(name, self._execute_workflow(name))

    def resubmit(self, name: str) -> Json:
        """`argo resubmit`: a new Workflow with the old spec, user labels and annotations.

        As in FormulateResubmitWorkflow: generateName `<name>-`, the spec carried over as it
        is (exit-hook arguments included), `shutdown` cleared, every label but the
        controller's copied, plus `workflows.argoproj.io/resubmitted-from-workflow`.
        """
        old = self._workflow(name)
        dropped = {PHASE_LABEL, COMPLETED_LABEL, WORKFLOW_ARCHIVING_LABEL}
        labels = {
            key: value
            for key, value in (old["metadata"].get("labels") or {}).items()
            if key not in dropped and not key.startswith("workflows.argoproj.io/creator")
        }
        labels[RESUBMITTED_FROM_LABEL] = name
        spec = copy.deepcopy(old["spec"])
        spec.pop("shutdown", None)
        manifest = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {
                "generateName": f"{name}-",
                "labels": labels,
                "annotations": copy.deepcopy(old["metadata"].get("annotations") or {}),
            },
            "spec": spec,
        }
        stored = self._new_object(manifest, self.namespace, kind="Workflow")
        stored["status"] = {"startedAt": None, "finishedAt": None}
        new_name = stored["metadata"]["name"]
        self.workflows[new_name] = stored
        self._set_phase(stored, "Pending")
        if self.auto_run and not self.hold_pending:
            self._start_run(new_name, self._execute_workflow(new_name))
        return stored

    async def wait_idle(self, timeout: float = 10) -> None:  # noqa: ASYNC109 (the public API)
        """Wait until every background execution (and its hooks) has finished."""
        async with asyncio.timeout(timeout):
            while pending := [
                task
                for task in self._tasks
                if not task.done() and task is not asyncio.current_task()
            ]:
                await asyncio.wait(pending)

    async def read_object(self, key: str, bucket: str | None = None) -> bytes:
        """Read an object from the artifact repository (a convenience for tests and the demo)."""
        if self._s3_client is None:
            raise RuntimeError("the emulator has no S3 (pass an S3Config and start() it)")
        response = await self._s3_client.get_object(Bucket=bucket or self._bucket(), Key=key)
        async with response["Body"] as stream:
            return bytes(await stream.read())

    # ---- HTTP app -------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                self._record_middleware,
                self._error_middleware,
                self._latency_middleware,
                self._fault_middleware,
                self._auth_middleware,
            ]
        )
        ns = "/api/v1/workflows/{namespace}"
        templates = "/api/v1/workflow-templates/{namespace}"
        app.router.add_post(ns, self._handle_create_workflow)
        app.router.add_get(ns, self._handle_list_workflows)
        app.router.add_get(ns + "/{name}", self._handle_get_workflow)
        app.router.add_delete(ns + "/{name}", self._handle_delete_workflow)
        app.router.add_put(ns + "/{name}/terminate", self._handle_terminate)
        app.router.add_put(ns + "/{name}/stop", self._handle_stop)
        app.router.add_put(ns + "/{name}/retry", self._handle_retry)
        app.router.add_put(ns + "/{name}/resubmit", self._handle_resubmit)
        app.router.add_get(ns + "/{name}/log", self._handle_log)
        app.router.add_get(templates, self._handle_list_templates)
        app.router.add_post(templates, self._handle_create_template)
        app.router.add_get(templates + "/{name}", self._handle_get_template)
        app.router.add_get("/api/v1/userinfo", self._handle_userinfo)
        app.router.add_get("/api/v1/version", self._handle_version)
        return app

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query={key: request.query[key] for key in request.query},
                json=body,
                headers=dict(request.headers),
            )
        )
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _error_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as exc:
            return web.json_response({"code": exc.code, "message": exc.message}, status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = GRPC_CODES.get(exc.status, 2)
            return web.json_response({"code": code, "message": exc.reason}, status=exc.status)

    @web.middleware
    async def _latency_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        for fault in self._faults:
            if (
                fault.remaining > 0
                and fault.method in (request.method, "*")
                and fault.path.search(request.path)
            ):
                fault.remaining -= 1
                raise ApiError(fault.status, fault.message)
        self._faults = [fault for fault in self._faults if fault.remaining > 0]
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(credentials.strip(), self.token):
            raise ApiError(401, TOKEN_ERROR)
        response: web.StreamResponse = await handler(request)
        return response

    def _check_namespace(self, request: web.Request, verb: str, resource: str) -> str:
        """The bot's ServiceAccount only has RBAC in the emulator's namespace."""
        namespace = request.match_info["namespace"]
        if namespace != self.namespace:
            user = f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}"
            raise ApiError(
                403,
                f'{resource}.argoproj.io is forbidden: User "{user}" cannot {verb} resource '
                f'"{resource}" in API group "argoproj.io" in the namespace "{namespace}"',
            )
        return namespace

    @staticmethod
    async def _json_body(request: web.Request) -> Json:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    # ---- workflow endpoints ---------------------------------------------------------------

    async def _handle_create_workflow(self, request: web.Request) -> web.Response:
        namespace = self._check_namespace(request, "create", "workflows")
        body = await self._json_body(request)
        manifest = body.get("workflow")
        if not isinstance(manifest, dict):
            raise ApiError(400, "workflow is required")
        received = copy.deepcopy(manifest)
        self._schema.check("Workflow", manifest)
        template = self._validate_workflow_semantics(manifest)
        stored = self._new_object(manifest, namespace, kind="Workflow")
        options = body.get("createOptions") or {}
        if options.get("dryRun"):
            return web.json_response(received)
        if body.get("serverDryRun"):
            return web.json_response(stored)
        name = stored["metadata"]["name"]
        if name in self.workflows:
            raise ApiError(409, f'workflows.argoproj.io "{name}" already exists')
        if template is not None:
            label = CLUSTER_TEMPLATE_LABEL if template.get("clusterScope") else TEMPLATE_LABEL
            stored["metadata"].setdefault("labels", {})[label] = template["name"]
        stored["status"] = {"startedAt": None, "finishedAt": None}
        response = copy.deepcopy(stored)
        self.workflows[name] = stored
        self.created.append(received)
        self._set_phase(stored, "Pending")
        if self.hold_pending:
            pass  # stays Pending until release() or run()
        elif self.auto_run:
            self._start_run(name, self._execute_workflow(name))
        else:
            self._begin(stored)
        return web.json_response(response)

    async def _handle_get_workflow(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "get", "workflows")
        name = request.match_info["name"]
        wf = self.workflows.get(name)
        if name == "@latest" and self.workflows:
            wf = list(self.workflows.values())[-1]
        uid = request.query.get("uid")
        if wf is None or (uid and wf["metadata"]["uid"] != uid):
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        return web.json_response(apply_fields(wf, request.query.get("fields")))

    async def _handle_list_workflows(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        if namespace != self.namespace:
            raise ApiError(
                403,
                "Permission denied, you are not allowed to list workflows in namespace "
                f'"{namespace}". Maybe you want to specify a namespace with query parameter '
                f"`.namespace={self.namespace}`?",
            )
        query = request.query
        items = list(reversed(self.workflows.values()))
        items = self._filter_by_labels(items, query.get("listOptions.labelSelector", ""))
        items, show_remaining = self._filter_by_fields(
            items, query.get("listOptions.fieldSelector", ""), query.get("nameFilter", "Exact")
        )
        if created_after := query.get("createdAfter"):
            since = self._query_time("createdAfter", created_after)
            items = [wf for wf in items if _parse_time(wf["metadata"]["creationTimestamp"]) > since]
        if finished_before := query.get("finishedBefore"):
            until = self._query_time("finishedBefore", finished_before)
            items = [
                wf
                for wf in items
                if wf["status"].get("finishedAt")
                and _parse_time(wf["status"]["finishedAt"]) < until
            ]
        document = self._page(items, query, show_remaining)
        return web.json_response(apply_fields(document, query.get("fields")))

    async def _handle_delete_workflow(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "delete", "workflows")
        name = request.match_info["name"]
        if name not in self.workflows:
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        await self._cancel_run(name)
        del self.workflows[name]
        return web.json_response({})

    async def _handle_terminate(self, request: web.Request) -> web.Response:
        return await self._shutdown(request, self.terminate, "Terminate")

    async def _handle_stop(self, request: web.Request) -> web.Response:
        return await self._shutdown(request, self.stop, "Stop")

    async def _handle_retry(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "update", "workflows")
        name = request.match_info["name"]
        if name not in self.workflows:
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        try:
            await self.retry(name)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        return web.json_response(self.workflows[name])

    async def _handle_resubmit(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "create", "workflows")
        name = request.match_info["name"]
        if name not in self.workflows:
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        return web.json_response(self.resubmit(name))

    async def _handle_log(self, request: web.Request) -> web.StreamResponse:
        """Newline-delimited JSON chunks `{"result": {"content", "podName"}}`, like Argo.

        Supports `podName`, `logOptions.container` (only `main` has lines; none given is an
        error, as Kubernetes refuses it for a pod with two containers), `logOptions.tailLines`
        (per pod), `logOptions.timestamps` and `grep`. `follow` is not emulated: the lines
        so far are sent and the stream ends.
        """
        self._check_namespace(request, "get", "pods/log")
        name = request.match_info["name"]
        if name not in self.workflows:
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        query = request.query
        pod = query.get("podName")
        records = [r for r in self.logs.get(name, []) if not pod or r.pod == pod]
        if pattern := query.get("grep"):
            try:
                matcher = re.compile(pattern)
            except re.error as exc:
                raise ApiError(400, f"invalid grep pattern: {exc}") from exc
            records = [r for r in records if matcher.search(r.content)]
        if tail := query.get("logOptions.tailLines"):
            if not tail.isdigit():
                raise ApiError(400, f"logOptions.tailLines must be a number, got {tail!r}")
            # The last `tail` lines of each pod, in the original order.
            remaining = Counter(record.pod for record in records)
            kept = []
            for record in records:
                if remaining[record.pod] <= int(tail):
                    kept.append(record)
                remaining[record.pod] -= 1
            records = kept
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        container = query.get("logOptions.container")
        chunks: list[Json] = []
        if not container:
            chunks.append(
                _stream_error(
                    400,
                    f"a container name must be specified for pod {pod or name}, "
                    "choose one of: [wait main]",
                )
            )
        elif container == "main":
            stamped = query.get("logOptions.timestamps") == "true"
            chunks.extend(
                {
                    "result": {
                        "content": f"{r.time} {r.content}" if stamped else r.content,
                        "podName": r.pod,
                    }
                }
                for r in records
            )
        if self.log_stream_error:
            chunks.append(_stream_error(500, self.log_stream_error))
        for chunk in chunks:
            await response.write(json.dumps(chunk).encode() + b"\n")
        await response.write_eof()
        return response

    async def _shutdown(
        self,
        request: web.Request,
        action: Callable[[str], Coroutine[Any, Any, None]],
        strategy: str,
    ) -> web.Response:
        self._check_namespace(request, "update", "workflows")
        name = request.match_info["name"]
        if name not in self.workflows:
            raise ApiError(404, f'workflows.argoproj.io "{name}" not found')
        if self.shutdown_delay > 0:
            # Like Argo: the server sets spec.shutdown and answers; the controller acts later.
            wf = self.workflows[name]
            if self._completed(wf):
                raise ApiError(500, "cannot shutdown a completed workflow", code=2)
            wf["spec"]["shutdown"] = strategy
            self._touch(wf)
            self._later(self.shutdown_delay, lambda: action(name), name=f"{strategy}:{name}")
            return web.json_response(wf)
        try:
            await action(name)
        except RuntimeError as exc:
            raise ApiError(500, f"{exc}", code=2) from exc
        return web.json_response(self.workflows[name])

    # ---- template endpoints ---------------------------------------------------------------

    async def _handle_list_templates(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "list", "workflowtemplates")
        query = request.query
        items = self._filter_by_labels(
            list(self.templates.values()), query.get("listOptions.labelSelector", "")
        )
        if pattern := query.get("namePattern"):
            items = [item for item in items if pattern in item["metadata"]["name"]]
        items.sort(key=lambda item: item["metadata"]["name"])
        document = self._page(items, query, show_remaining=False)
        return web.json_response(apply_fields(document, query.get("fields")))

    async def _handle_get_template(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "get", "workflowtemplates")
        name = request.match_info["name"]
        template = self.templates.get(name)
        if template is None:
            raise ApiError(404, f'workflowtemplates.argoproj.io "{name}" not found')
        return web.json_response(apply_fields(template, request.query.get("fields")))

    async def _handle_create_template(self, request: web.Request) -> web.Response:
        self._check_namespace(request, "create", "workflowtemplates")
        body = await self._json_body(request)
        manifest = body.get("template")
        if not isinstance(manifest, dict):
            raise ApiError(400, "template is required")
        stored = self._admit_template(manifest)
        name = stored["metadata"]["name"]
        if name in self.templates:
            raise ApiError(409, f'workflowtemplates.argoproj.io "{name}" already exists')
        self.templates[name] = stored
        return web.json_response(stored)

    async def _handle_userinfo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "subject": f"system:serviceaccount:{self.namespace}:{SERVICE_ACCOUNT}",
                "serviceAccountName": SERVICE_ACCOUNT,
                "serviceAccountNamespace": self.namespace,
            }
        )

    async def _handle_version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": ARGO_VERSION,
                "gitCommit": "f016ad89eb269d282aec06dc491c29f396a38df4",
                "platform": "linux/amd64",
            }
        )

    # ---- admission ------------------------------------------------------------------------

    def _admit_template(self, manifest: Json) -> Json:
        self._schema.check("WorkflowTemplate", manifest)
        spec = manifest["spec"]
        templates = {t.get("name"): t for t in spec.get("templates", [])}
        if (entrypoint := spec.get("entrypoint")) and entrypoint not in templates:
            raise ApiError(400, f"spec.entrypoint template name '{entrypoint}' undefined")
        self._check_template_references(templates)
        self._check_arguments(spec.get("arguments", {}), allow_empty=True)
        return self._new_object(manifest, self.namespace, kind="WorkflowTemplate")

    def _validate_workflow_semantics(self, manifest: Json) -> Json | None:
        """Argo's validate.Workflow, for the parts a bot can get wrong; returns the templateRef."""
        spec = manifest["spec"]
        reference = spec.get("workflowTemplateRef")
        if reference is None:
            templates = {t.get("name"): t for t in spec.get("templates", [])}
            effective = spec
        else:
            if spec.get("templates"):
                raise ApiError(
                    400,
                    "Templates is invalid field in spec "
                    "if workflow referred WorkflowTemplate reference",
                )
            if reference.get("clusterScope"):
                raise ApiError(
                    404, f'clusterworkflowtemplates.argoproj.io "{reference.get("name")}" not found'
                )
            template = self.templates.get(reference.get("name", ""))
            if template is None:
                raise ApiError(
                    404, f'workflowtemplates.argoproj.io "{reference.get("name")}" not found'
                )
            effective = merge_workflow_specs(template["spec"], spec)
            templates = {t.get("name"): t for t in effective.get("templates", [])}
        entrypoint = effective.get("entrypoint")
        if not entrypoint:
            raise ApiError(400, "spec.entrypoint is required")
        if entrypoint not in templates:
            if reference is not None:
                raise ApiError(
                    400, f"template reference {reference['name']}.{entrypoint} not found"
                )
            raise ApiError(400, f"spec.entrypoint template name '{entrypoint}' undefined")
        if (on_exit := effective.get("onExit")) and on_exit not in templates:
            raise ApiError(400, f"spec.onExit template name '{on_exit}' undefined")
        for hook_name, hook in (effective.get("hooks") or {}).items():
            if hook_name != "exit" and not hook.get("expression"):
                raise ApiError(400, f"spec.hooks.{hook_name}.expression is required")
        self._check_template_references(templates)
        self._check_arguments(effective.get("arguments", {}), allow_empty=False)
        return reference

    def _check_template_references(self, templates: Mapping[str, Json]) -> None:
        for template in templates.values():
            holders: list[tuple[str, Json]] = []
            for index, group in enumerate(template.get("steps") or []):
                holders += [(f"steps[{index}].{step.get('name')}", step) for step in group]
            for task in (template.get("dag") or {}).get("tasks", []):
                holders.append((f"dag.tasks.{task.get('name')}", task))
            for where, holder in holders:
                prefix = f"templates.{template.get('name')}.{where}"
                if (name := holder.get("template")) and name not in templates:
                    raise ApiError(400, f"{prefix} template name '{name}' undefined")
                if (ref := holder.get("templateRef")) and not ref.get("clusterScope"):
                    target = self.templates.get(ref.get("name", ""))
                    names = {
                        t.get("name") for t in (target or {}).get("spec", {}).get("templates", [])
                    }
                    if ref.get("template") not in names:
                        raise ApiError(
                            400,
                            f"{prefix} template reference "
                            f"{ref.get('name')}.{ref.get('template')} not found",
                        )

    @staticmethod
    def _check_arguments(arguments: Json, *, allow_empty: bool) -> None:
        prefix = "spec.arguments."
        for parameter in arguments.get("parameters", []):
            name = parameter.get("name")
            value = parameter.get("value", parameter.get("default"))
            if value is None and parameter.get("valueFrom") is None and not allow_empty:
                raise ApiError(400, f"{prefix}{name}.value is required")
            enum = parameter.get("enum")
            if enum is not None:
                if not enum:
                    raise ApiError(400, f"{prefix}{name}.enum should contain at least one value")
                if value is not None and value not in enum:
                    raise ApiError(
                        400, f"{prefix}{name}.value should be present in {prefix}{name}.enum list"
                    )
        for artifact in arguments.get("artifacts", []):
            has_location = any(location in artifact for location in ARTIFACT_LOCATIONS)
            if not allow_empty and not artifact.get("from") and not has_location:
                raise ApiError(
                    400,
                    f"{prefix}{artifact.get('name')}.from, artifact location, or key is required",
                )

    def _new_object(self, manifest: Json, namespace: str, *, kind: str) -> Json:
        """Fill in what the API server adds: name from generateName, uid, timestamps, rv."""
        stored = copy.deepcopy(manifest)
        stored.setdefault("apiVersion", "argoproj.io/v1alpha1")
        stored.setdefault("kind", kind)
        metadata = stored.setdefault("metadata", {})
        name = metadata.get("name")
        if not name:
            prefix = metadata.get("generateName")
            if not prefix:
                raise ApiError(
                    400,
                    f"{kind}.argoproj.io is invalid: metadata.name: Required value: "
                    "name or generateName is required",
                )
            existing = self.workflows if kind == "Workflow" else self.templates
            while not name or name in existing:
                name = prefix + "".join(secrets.choice(NAME_SUFFIX_ALPHABET) for _ in range(5))
        self._check_metadata(kind, name, metadata)
        metadata.update(
            name=name,
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_rfc3339(_now()),
            generation=1,
        )
        self._touch(stored)
        return stored

    @staticmethod
    def _check_metadata(kind: str, name: str, metadata: Json) -> None:
        invalid = f'{kind}.argoproj.io "{name}" is invalid: '
        if kind == "Workflow" and len(name) > MAX_NAME_LENGTH:
            raise ApiError(
                400,
                f'workflow name "{name}" must not be more than {MAX_NAME_LENGTH} characters long '
                f"(currently {len(name)})",
            )
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ApiError(
                400,
                f'{invalid}metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                "must consist of lower case alphanumeric characters, '-' or '.', and must start "
                "and end with an alphanumeric character",
            )
        for field_name in ("labels", "annotations"):
            for key, value in (metadata.get(field_name) or {}).items():
                prefix, _, short = key.rpartition("/")
                if (
                    not short
                    or len(short) > 63
                    or not _LABEL_NAME.match(short)
                    or (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
                ):
                    raise ApiError(
                        400,
                        f'{invalid}metadata.{field_name}: Invalid value: "{key}": name part must '
                        "consist of alphanumeric characters, '-', '_' or '.', and must start and "
                        "end with an alphanumeric character",
                    )
                if field_name == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                    raise ApiError(
                        400,
                        f'{invalid}metadata.labels: Invalid value: "{value}": a valid label must '
                        "be an empty string or consist of alphanumeric characters, '-', '_' or "
                        "'.', and must start and end with an alphanumeric character",
                    )

    # ---- listing --------------------------------------------------------------------------

    @staticmethod
    def _filter_by_labels(items: list[Json], selector: str) -> list[Json]:
        matchers = parse_label_selector(selector)
        return [
            item
            for item in items
            if all(match(item["metadata"].get("labels") or {}) for match in matchers)
        ]

    def _filter_by_fields(
        self, items: list[Json], selector: str, name_filter: str
    ) -> tuple[list[Json], bool]:
        show_remaining = False
        for requirement in (part.strip() for part in selector.split(",")):
            if not requirement:
                continue
            match = re.match(r"^(metadata\.name|metadata\.namespace)(==|!=|=)(.*)$", requirement)
            started = re.match(r"^spec\.startedAt([<>])(.+)$", requirement)
            if match:
                path, operator, value = match.groups()
                items = [
                    item
                    for item in items
                    if self._field_matches(item, path, value, name_filter) == (operator != "!=")
                ]
            elif started:
                bound = self._query_time("spec.startedAt", started.group(2))
                after = started.group(1) == ">"
                items = [
                    item
                    for item in items
                    if item["status"].get("startedAt")
                    and (_parse_time(item["status"]["startedAt"]) > bound) == after
                ]
            elif requirement.startswith("ext.showRemainingItemCount="):
                show_remaining = requirement.split("=", 1)[1].lower() == "true"
            else:
                raise ApiError(400, f"unsupported requirement {requirement}")
        return items, show_remaining

    @staticmethod
    def _field_matches(item: Json, path: str, value: str, name_filter: str) -> bool:
        actual = str(item["metadata"].get(path.split(".", 1)[1], ""))
        if path == "metadata.name" and name_filter == "Contains":
            return value in actual
        if path == "metadata.name" and name_filter == "Prefix":
            return actual.startswith(value)
        return actual == value

    @staticmethod
    def _query_time(name: str, text: str) -> datetime:
        try:
            return _parse_time(text)
        except ValueError as exc:
            raise ApiError(400, f"{name}: cannot parse {text!r} as RFC 3339") from exc

    def _page(self, items: list[Json], query: Mapping[str, str], show_remaining: bool) -> Json:
        """`listOptions.limit` + `listOptions.continue` (a decimal offset, as Argo uses)."""
        try:
            offset = int(query.get("listOptions.continue") or "0")
        except ValueError as exc:
            raise ApiError(400, "listOptions.continue must be int") from exc
        if offset < 0:
            raise ApiError(400, "listOptions.continue must >= 0")
        try:
            limit = int(query.get("listOptions.limit") or "0")
        except ValueError as exc:
            raise ApiError(400, "listOptions.limit must be int") from exc
        end = offset + limit if limit > 0 else len(items)
        page = items[offset:end]
        metadata: Json = {"resourceVersion": str(self._resource_version)}
        if end < len(items):
            metadata["continue"] = str(end)
            if show_remaining:
                metadata["remainingItemCount"] = len(items) - end
        return {"metadata": metadata, "items": page or None}

    # ---- workflow state -------------------------------------------------------------------

    def _workflow(self, name: str) -> Json:
        try:
            return self.workflows[name]
        except KeyError:
            raise KeyError(f"no workflow named {name!r}") from None

    _completed = staticmethod(workflow_completed)

    def _touch(self, obj: Json) -> None:
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)

    def _set_phase(self, wf: Json, phase: str) -> None:
        wf["status"]["phase"] = phase
        labels = wf["metadata"].setdefault("labels", {})
        labels[PHASE_LABEL] = phase
        labels.setdefault(COMPLETED_LABEL, "false")
        self._touch(wf)

    def _begin(self, wf: Json) -> None:
        """The controller picked the workflow up: Running, startedAt, stored spec."""
        status = wf["status"]
        if status.get("phase") != "Running":
            status["startedAt"] = status.get("startedAt") or _rfc3339(_now())
            status.setdefault("progress", "0/0")
            self._set_phase(wf, "Running")

    def _mark_completed(self, wf: Json, phase: str, message: str | None) -> None:
        status = wf["status"]
        status["finishedAt"] = _rfc3339(_now())
        status["startedAt"] = status.get("startedAt") or status["finishedAt"]
        if message:
            status["message"] = message
        status["conditions"] = [
            {"type": "PodRunning", "status": "False"},
            {"type": "Completed", "status": "True"},
        ]
        self._update_progress(wf)
        wf["metadata"].setdefault("labels", {})[COMPLETED_LABEL] = "true"
        self._set_phase(wf, phase)

    def _stop_nodes(self, wf: Json, message: str) -> None:
        for node in (wf["status"].get("nodes") or {}).values():
            if node.get("phase") in ("Pending", "Running"):
                node.update(phase="Failed", message=message, finishedAt=_rfc3339(_now()))
        self._update_progress(wf)

    def _update_progress(self, wf: Json) -> None:
        done = total = 0
        for node in (wf["status"].get("nodes") or {}).values():
            if node.get("type") in EXECUTABLE_NODE_TYPES:
                finished = node.get("phase") in ("Succeeded", "Skipped", "Omitted")
                node["progress"] = "1/1" if finished else "0/1"
                done += finished
                total += 1
        wf["status"]["progress"] = f"{done}/{total}"

    # ---- background tasks -----------------------------------------------------------------

    def _start_run(self, name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"argo-emulator:{name}")
        self._tasks.add(task)
        self._runs[name] = task
        task.add_done_callback(self._task_done)
        return task

    def _later(
        self, delay: float, work: Callable[[], Coroutine[Any, Any, None]], *, name: str
    ) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(RuntimeError):  # it completed meanwhile
                await work()

        task = asyncio.create_task(run(), name=f"argo-emulator:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("emulator task %s failed", task.get_name(), exc_info=task.exception())

    @staticmethod
    async def _outcome(task: asyncio.Task[None]) -> None:
        """Wait for a run without inheriting its cancellation (terminate cancels runs)."""
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def _cancel_run(self, name: str) -> None:
        task = self._runs.get(name)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})

    # ---- execution ------------------------------------------------------------------------

    def _prepare(self, wf: Json) -> _Execution:
        """Resolve the effective spec and the workflow-level variables; mark Running."""
        spec = wf["spec"]
        reference = spec.get("workflowTemplateRef")
        if reference is not None:
            template = self.templates.get(reference.get("name", ""))
            if template is None:
                raise _NodeError(
                    f'workflowtemplates.argoproj.io "{reference.get("name")}" not found'
                )
            effective = merge_workflow_specs(template["spec"], spec)
        else:
            effective = copy.deepcopy(spec)
        metadata = wf["metadata"]
        for key in ("labels", "annotations"):
            extra = (effective.get("workflowMetadata") or {}).get(key) or {}
            for item_key, value in extra.items():
                metadata.setdefault(key, {}).setdefault(item_key, value)
        wf["status"]["storedWorkflowTemplateSpec"] = effective
        wf["status"].setdefault("nodes", {})
        self._begin(wf)
        assert self._tmp_root is not None, "start() the emulator first"
        workdir = Path(tempfile.mkdtemp(prefix=f"{metadata['name']}-", dir=self._tmp_root))
        context = _TemplateContext(
            {t["name"]: t for t in effective.get("templates", [])}, f"local/{metadata['name']}"
        )
        started = _parse_time(wf["status"]["startedAt"])
        return _Execution(wf, effective, context, self._globals(wf, effective), workdir, started)

    @staticmethod
    def _globals(wf: Json, spec: Json) -> dict[str, str]:
        metadata = wf["metadata"]
        parameters = (spec.get("arguments") or {}).get("parameters", [])
        created = metadata["creationTimestamp"]
        scope = {
            "workflow.name": metadata["name"],
            "workflow.namespace": metadata["namespace"],
            "workflow.uid": metadata["uid"],
            "workflow.serviceAccountName": spec.get("serviceAccountName", "default"),
            "workflow.mainEntrypoint": spec.get("entrypoint", ""),
            "workflow.creationTimestamp": created,
            "workflow.creationTimestamp.RFC3339": created,
            "workflow.creationTimestamp.s": str(int(_parse_time(created).timestamp())),
            "workflow.parameters": json.dumps(parameters),
            "workflow.parameters.json": json.dumps(parameters),
            "workflow.labels.json": json.dumps(metadata.get("labels") or {}),
            "workflow.annotations.json": json.dumps(metadata.get("annotations") or {}),
        }
        if "priority" in spec:
            scope["workflow.priority"] = str(spec["priority"])
        for parameter in parameters:
            value = parameter.get("value", parameter.get("default"))
            if value is not None:
                scope[f"workflow.parameters.{parameter['name']}"] = str(value)
        for key in ("labels", "annotations"):
            for item_key, value in (metadata.get(key) or {}).items():
                scope[f"workflow.{key}.{item_key}"] = value
        return scope

    async def _execute_workflow(self, name: str) -> None:
        """What the controller does for one workflow, from Running to completed."""
        wf = self.workflows[name]
        try:
            execution = self._prepare(wf)
        except _NodeError as exc:
            self._begin(wf)
            self._mark_completed(wf, "Error", str(exc))
            return
        execution.retained = self._retained.pop(name, {})
        try:
            entrypoint = execution.spec["entrypoint"]
            arguments = execution.spec.get("arguments") or {}
            root = await self._run_node(
                execution,
                _Call(
                    template=execution.context.templates.get(entrypoint, {"name": entrypoint}),
                    context=execution.context,
                    node_name=name,
                    display_name=name,
                    boundary_id=None,
                    parameters={
                        p["name"]: str(p.get("value", p.get("default", "")))
                        for p in arguments.get("parameters", [])
                    },
                    artifacts={a["name"]: a for a in arguments.get("artifacts", [])},
                ),
            )
            await self._finish(execution, root["phase"], root.get("message"))
        finally:
            shutil.rmtree(execution.workdir, ignore_errors=True)

    async def _fake_completion(
        self,
        name: str,
        phase: str,
        message: str | None,
        failed_step: str | None,
        artifacts: Mapping[str, Mapping[str, bytes]],
        *,
        run_hook: bool,
    ) -> None:
        wf = self.workflows[name]
        wf["status"]["nodes"] = {}
        try:
            execution = self._prepare(wf)
        except _NodeError as exc:
            self._mark_completed(wf, "Error", str(exc))
            return
        try:
            entrypoint = execution.spec.get("entrypoint", "main")
            root = self._start_node(execution, name, name, "Steps", entrypoint, None)
            previous = [root]
            steps = [(step, files, "Succeeded") for step, files in artifacts.items()]
            if failed_step is not None:
                steps.append((failed_step, {}, phase if phase != "Succeeded" else "Failed"))
            wf_message = message
            for index, (step, files, step_phase) in enumerate(steps):
                group = self._start_node(
                    execution, f"{name}[{index}]", f"[{index}]", "StepGroup", entrypoint, root["id"]
                )
                for parent in previous:
                    parent.setdefault("children", []).append(group["id"])
                pod = self._start_node(
                    execution, f"{name}[{index}].{step}", step, "Pod", step, root["id"]
                )
                group["children"] = [pod["id"]]
                outputs = await self._write_files(execution, step, files)
                if step_phase == "Succeeded":
                    pod["outputs"] = (
                        {"artifacts": outputs, "exitCode": "0"} if outputs else {"exitCode": "0"}
                    )
                    self._end_node(execution, pod, "Succeeded")
                    self._end_node(execution, group, "Succeeded")
                else:
                    pod["outputs"] = {"exitCode": "1"}
                    self._end_node(execution, pod, step_phase, message or "Error (exit code 1)")
                    self._end_node(execution, group, step_phase, f"child '{pod['id']}' failed")
                    wf_message = f"child '{pod['id']}' failed"
                previous = [pod]
            self._end_node(execution, root, phase, wf_message if phase != "Succeeded" else message)
            await self._finish(execution, phase, wf_message, run_hook=run_hook)
        finally:
            shutil.rmtree(execution.workdir, ignore_errors=True)

    async def _write_files(
        self, execution: _Execution, step: str, files: Mapping[str, bytes]
    ) -> list[Json]:
        outputs: list[Json] = []
        names: set[str] = set()
        for filename, data in files.items():
            key = f"sessions/{execution.name}/{step}/{filename}"
            if self._s3_client is not None:
                await self._s3().put_object(Bucket=self._bucket(), Key=key, Body=data)
            artifact_name = Path(filename).stem or filename
            if artifact_name in names:
                artifact_name = filename
            names.add(artifact_name)
            outputs.append(
                {
                    "name": artifact_name,
                    "path": f"/tmp/{filename}",
                    "archive": {"none": {}},
                    "s3": {"key": key},
                }
            )
        return outputs

    async def _stop_and_finish(self, name: str, message: str) -> None:
        wf = self.workflows[name]
        try:
            execution = self._prepare(wf)
        except _NodeError:
            self._mark_completed(wf, "Failed", message)
            return
        try:
            await self._finish(execution, "Failed", message)
        finally:
            shutil.rmtree(execution.workdir, ignore_errors=True)

    async def _finish(
        self, execution: _Execution, phase: str, message: str | None, *, run_hook: bool = True
    ) -> None:
        """Exit handler first (the workflow is still Running), then completed."""
        wf = execution.wf
        elapsed = (datetime.now(UTC) - execution.started).total_seconds()
        failures = [
            {
                "displayName": node.get("displayName"),
                "message": node.get("message", ""),
                "templateName": node.get("templateName", ""),
                "phase": node.get("phase"),
                "podName": _pod_name(execution.name, node.get("templateName", ""), node["name"]),
                "finishedAt": node.get("finishedAt"),
            }
            for node in (wf["status"].get("nodes") or {}).values()
            if node.get("phase") in UNSUCCESSFUL_PHASES
        ]
        execution.globals.update(
            {
                "workflow.status": phase,
                "workflow.failures": json.dumps(json.dumps(failures or None)),
                "workflow.duration": f"{elapsed:.6f}",
            }
        )
        if run_hook and self.hook_copies > 0:
            hook = await self._run_exit_hook(execution)
            if hook is not None and phase == "Succeeded" and hook["phase"] in UNSUCCESSFUL_PHASES:
                phase = hook["phase"]
                message = hook.get("message") or f"child '{hook['id']}' failed"
        if self.completion_delay > 0:
            await asyncio.sleep(self.completion_delay)
        self._mark_completed(wf, phase, message)

    async def _run_exit_hook(self, execution: _Execution) -> Json | None:
        """`spec.onExit` wins over `spec.hooks.exit` (GetExitHook); None when there is no hook."""
        spec = execution.spec
        node_name = f"{execution.name}.onExit"
        arguments: Json
        holder: Json
        if spec.get("onExit"):
            holder = {"template": spec["onExit"]}
            arguments = spec.get("arguments") or {}
        elif (spec.get("hooks") or {}).get("exit"):
            holder = spec["hooks"]["exit"]
            arguments = holder.get("arguments") or {}
        else:
            return None
        try:
            template, context, reference = self._resolve_target(holder, execution.context)
        except _NodeError as exc:
            node = self._start_node(execution, node_name, node_name, "Pod", "", None)
            node["nodeFlag"] = {"hooked": True}
            self._end_node(execution, node, "Error", str(exc))
            return node
        parameters = {
            p["name"]: _substitute(str(p.get("value", "")), execution.globals)
            for p in arguments.get("parameters", [])
        }
        artifacts = {a["name"]: a for a in arguments.get("artifacts", [])}
        call = _Call(
            template=template,
            context=context,
            node_name=node_name,
            display_name=node_name,
            boundary_id=None,
            parameters=parameters,
            artifacts=artifacts,
            template_ref=reference,
            hooked=True,
            copies=self.hook_copies,
        )
        execution.http_copies = self.hook_copies  # also for http steps nested in the hook
        return await self._run_node(execution, call)

    def _resolve_target(
        self, holder: Json, context: _TemplateContext
    ) -> tuple[Json, _TemplateContext, Json | None]:
        """The template a step, task or hook names: inline, local name, or templateRef."""
        if "inline" in holder:
            return holder["inline"], context, None
        if (reference := holder.get("templateRef")) is not None:
            if reference.get("clusterScope"):
                raise _NodeError(
                    f'clusterworkflowtemplates.argoproj.io "{reference.get("name")}" not found'
                )
            owner = self.templates.get(reference.get("name", ""))
            if owner is None:
                raise _NodeError(
                    f'workflowtemplates.argoproj.io "{reference.get("name")}" not found'
                )
            templates = {t["name"]: t for t in owner["spec"].get("templates", [])}
            template = templates.get(reference.get("template", ""))
            if template is None:
                raise _NodeError(
                    f"template {reference.get('template')} not found in workflow template "
                    f"{reference.get('name')}"
                )
            ref = {"name": reference["name"], "template": reference["template"]}
            return template, _TemplateContext(templates, f"namespaced/{reference['name']}"), ref
        name = holder.get("template", "")
        if name not in context.templates:
            raise _NodeError(f"template {name} not found")
        return context.templates[name], context, None

    # ---- nodes ----------------------------------------------------------------------------

    def _start_node(
        self,
        execution: _Execution,
        name: str,
        display_name: str,
        node_type: str,
        template_name: str,
        boundary_id: str | None,
        *,
        scope: str | None = None,
        template_ref: Json | None = None,
    ) -> Json:
        identifier = node_id(execution.name, name)
        node: Json = {
            "id": identifier,
            "name": name,
            "displayName": display_name,
            "type": node_type,
            "templateName": template_name,
            "templateScope": scope or execution.context.scope,
            "phase": "Running",
            "startedAt": _rfc3339(_now()),
            "finishedAt": None,
        }
        if template_ref is not None:
            node["templateRef"] = template_ref
            node.pop("templateName")
        if boundary_id is not None:
            node["boundaryID"] = boundary_id
        wf = execution.wf
        wf["status"].setdefault("nodes", {})[identifier] = node
        self._update_progress(wf)
        self._touch(wf)
        return node

    def _end_node(
        self, execution: _Execution, node: Json, phase: str, message: str | None = None
    ) -> None:
        node["phase"] = phase
        node["finishedAt"] = _rfc3339(_now())
        if message:
            node["message"] = message
        self._update_progress(execution.wf)
        self._touch(execution.wf)

    @staticmethod
    def _node_type(template: Json) -> str:
        for key, node_type in (
            ("steps", "Steps"),
            ("dag", "DAG"),
            ("http", "HTTP"),
            ("suspend", "Suspend"),
            ("plugin", "Plugin"),
        ):
            if key in template:
                return node_type
        return "Pod"

    async def _run_node(self, execution: _Execution, call: _Call) -> Json:
        """Run one template invocation as a node; never raises except on cancellation."""
        template = call.template
        node = self._start_node(
            execution,
            call.node_name,
            call.display_name,
            self._node_type(template),
            template.get("name", ""),
            call.boundary_id,
            scope=call.context.scope,
            template_ref=call.template_ref,
        )
        if call.hooked:
            node["nodeFlag"] = {"hooked": True}
        if (kept := execution.retained.get(call.node_name)) is not None:
            # A retry keeps what succeeded: the old node stands in for the new one.
            execution.wf["status"]["nodes"][kept["id"]] = kept
            self._update_progress(execution.wf)
            return kept
        if node["type"] == "Pod" and (gate := self._step_gates.get(call.display_name)):
            await gate.wait()
        try:
            parameters, artifacts = self._bind_inputs(execution, template, call)
            node["inputs"] = self._inputs_record(parameters, artifacts)
            if not node["inputs"]:
                del node["inputs"]
            pod = _pod_name(execution.name, template.get("name", ""), call.node_name)
            scope = {
                **execution.globals,
                **{f"inputs.parameters.{k}": v for k, v in parameters.items()},
                "inputs.parameters": json.dumps(
                    [{"name": k, "value": v} for k, v in parameters.items()]
                ),
                "pod.name": pod,
                "node.name": call.node_name,
            }
            resolved, local = self._resolve_template(execution, node, template, scope)
            if "steps" in resolved:
                await self._run_steps(execution, node, resolved, scope, artifacts, call.context)
            elif "dag" in resolved:
                await self._run_dag(execution, node, resolved, scope, artifacts, call.context)
            elif "http" in resolved:
                await self._run_http(
                    execution, node, resolved["http"], max(call.copies, execution.http_copies)
                )
            elif _runs_locally(resolved):
                await self._run_script(execution, node, resolved, artifacts, pod, local)
            else:
                # container, resource, suspend, non-Python scripts...: nothing to run here.
                self._end_node(execution, node, "Succeeded")
        except _NodeError as exc:
            self._end_node(execution, node, "Error", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("emulator failed to run node %s", call.node_name)
            self._end_node(execution, node, "Error", f"emulator error: {exc}")
        return node

    @staticmethod
    def _bind_inputs(
        execution: _Execution, template: Json, call: _Call
    ) -> tuple[dict[str, str], dict[str, Json]]:
        """Declared inputs filled from the call's arguments, then from their own defaults."""
        inputs = template.get("inputs") or {}
        parameters: dict[str, str] = {}
        for declared in inputs.get("parameters", []):
            name = declared["name"]
            if name in call.parameters:
                value = call.parameters[name]
            elif "value" in declared or "default" in declared:
                value = _substitute(
                    str(declared.get("value", declared.get("default"))), execution.globals
                )
            else:
                raise _NodeError(f"inputs.parameters.{name} was not supplied")
            if declared.get("enum") and value not in declared["enum"]:
                raise _NodeError(f"inputs.parameters.{name} value {value!r} is not in enum")
            parameters[name] = value
        artifacts: dict[str, Json] = {}
        for declared in inputs.get("artifacts", []):
            name = declared["name"]
            source = call.artifacts.get(name)
            if source is not None:
                bound = {k: copy.deepcopy(v) for k, v in source.items() if k in ARTIFACT_LOCATIONS}
                bound["archive"] = declared.get("archive", source.get("archive"))
                if bound["archive"] is None:
                    del bound["archive"]
                for key in ("path", "mode", "optional"):
                    if key in declared:
                        bound[key] = declared[key]
                bound["name"] = name
            elif any(location in declared for location in ARTIFACT_LOCATIONS):
                bound = copy.deepcopy(declared)
            elif declared.get("optional"):
                continue
            else:
                raise _NodeError(f"inputs.artifacts.{name} was not supplied")
            artifacts[name] = _substitute_all(bound, execution.globals)
        return parameters, artifacts

    @staticmethod
    def _inputs_record(parameters: Mapping[str, str], artifacts: Mapping[str, Json]) -> Json:
        record: Json = {}
        if parameters:
            record["parameters"] = [{"name": k, "value": v} for k, v in parameters.items()]
        if artifacts:
            record["artifacts"] = [
                {
                    key: value
                    for key, value in artifact.items()
                    if key in ("name", "path", "archive", "s3") or key in ARTIFACT_LOCATIONS
                }
                for artifact in artifacts.values()
            ]
        return record

    # ---- steps and DAGs -------------------------------------------------------------------

    async def _run_steps(
        self,
        execution: _Execution,
        node: Json,
        template: Json,
        scope: dict[str, str],
        input_artifacts: Mapping[str, Json],
        context: _TemplateContext,
    ) -> None:
        step_scope = dict(scope)
        artifact_scope = {f"inputs.artifacts.{k}": v for k, v in input_artifacts.items()}
        previous = [node]
        for index, group in enumerate(template.get("steps") or []):
            group_node = self._start_node(
                execution,
                f"{node['name']}[{index}]",
                f"[{index}]",
                "StepGroup",
                node.get("templateName", ""),
                node["id"],
                scope=context.scope,
            )
            for parent in previous:
                parent.setdefault("children", []).append(group_node["id"])
            children = await asyncio.gather(
                *(
                    self._run_child(
                        execution,
                        step,
                        f"{group_node['name']}.{step['name']}",
                        node["id"],
                        step_scope,
                        artifact_scope,
                        context,
                    )
                    for step in group
                )
            )
            group_node["children"] = [child["id"] for child in children]
            for step, child in zip(group, children, strict=True):
                self._publish(f"steps.{step['name']}", child, step_scope, artifact_scope)
            failed = [
                child
                for step, child in zip(group, children, strict=True)
                if child["phase"] in UNSUCCESSFUL_PHASES and not _continues(step, child)
            ]
            if failed:
                message = f"child '{failed[0]['id']}' failed"
                self._end_node(execution, group_node, "Failed", message)
                self._end_node(execution, node, "Failed", message)
                return
            self._end_node(execution, group_node, "Succeeded")
            previous = list(children)
        self._collect_outputs(node, template, step_scope, artifact_scope)
        self._end_node(execution, node, "Succeeded")

    async def _run_dag(
        self,
        execution: _Execution,
        node: Json,
        template: Json,
        scope: dict[str, str],
        input_artifacts: Mapping[str, Json],
        context: _TemplateContext,
    ) -> None:
        tasks = {task["name"]: task for task in template["dag"].get("tasks", [])}
        dependencies = {name: _dependencies(task) for name, task in tasks.items()}
        task_scope = dict(scope)
        artifact_scope = {f"inputs.artifacts.{k}": v for k, v in input_artifacts.items()}
        finished: dict[str, Json] = {}
        running: dict[asyncio.Task[Json], str] = {}
        failed: list[Json] = []
        try:
            while True:
                if not failed:
                    for name, task in tasks.items():
                        if (
                            name not in finished
                            and name not in running.values()
                            and all(dep in finished for dep in dependencies[name])
                        ):
                            running[
                                asyncio.create_task(
                                    self._run_child(
                                        execution,
                                        task,
                                        f"{node['name']}.{name}",
                                        node["id"],
                                        task_scope,
                                        artifact_scope,
                                        context,
                                    )
                                )
                            ] = name
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    child = future.result()
                    finished[name] = child
                    self._publish(f"tasks.{name}", child, task_scope, artifact_scope)
                    if child["phase"] in UNSUCCESSFUL_PHASES and not _continues(tasks[name], child):
                        failed.append(child)
        finally:
            for future in running:
                future.cancel()
            if running:
                await asyncio.wait(running)
        for name, child in finished.items():
            if not dependencies[name]:
                node.setdefault("children", []).append(child["id"])
            for dependent, deps in dependencies.items():
                if name in deps and dependent in finished:
                    child.setdefault("children", []).append(finished[dependent]["id"])
        if failed:
            self._end_node(execution, node, "Failed", f"child '{failed[0]['id']}' failed")
            return
        self._collect_outputs(node, template, task_scope, artifact_scope)
        self._end_node(execution, node, "Succeeded")

    async def _run_child(
        self,
        execution: _Execution,
        holder: Json,
        node_name: str,
        boundary_id: str,
        scope: Mapping[str, str],
        artifact_scope: Mapping[str, Json],
        context: _TemplateContext,
    ) -> Json:
        """One step or DAG task: resolve its template and arguments, then run it."""
        display = holder["name"]
        try:
            unsupported = [
                k for k in ("withItems", "withParam", "withSequence", "when") if k in holder
            ]
            if unsupported:
                raise _NodeError(f"{', '.join(unsupported)} is not supported by the emulator")
            template, target_context, reference = self._resolve_target(holder, context)
            arguments = holder.get("arguments") or {}
            parameters = {
                p["name"]: _substitute(str(p.get("value", "")), scope)
                for p in arguments.get("parameters", [])
            }
            artifacts = {
                a["name"]: self._artifact_argument(a, scope, artifact_scope)
                for a in arguments.get("artifacts", [])
            }
        except _NodeError as exc:
            failed = self._start_node(execution, node_name, display, "Pod", "", boundary_id)
            self._end_node(execution, failed, "Error", str(exc))
            return failed
        call = _Call(
            template=template,
            context=target_context,
            node_name=node_name,
            display_name=display,
            boundary_id=boundary_id,
            parameters=parameters,
            artifacts=artifacts,
            template_ref=reference,
        )
        return await self._run_node(execution, call)

    @staticmethod
    def _artifact_argument(
        argument: Json, scope: Mapping[str, str], artifact_scope: Mapping[str, Json]
    ) -> Json:
        source = argument.get("from")
        if source:
            match = _TAG.fullmatch(source.strip())
            found = artifact_scope.get(match.group(1)) if match else None
            if found is None:
                raise _NodeError(f"unable to resolve artifact {source}")
            return {**copy.deepcopy(found), "name": argument["name"]}
        return _substitute_all(argument, scope)

    @staticmethod
    def _publish(
        prefix: str, node: Json, scope: dict[str, str], artifact_scope: dict[str, Json]
    ) -> None:
        """Make a finished step's status and outputs visible to the steps after it."""
        scope[f"{prefix}.id"] = node["id"]
        scope[f"{prefix}.status"] = node["phase"]
        scope[f"{prefix}.startedAt"] = node.get("startedAt") or ""
        scope[f"{prefix}.finishedAt"] = node.get("finishedAt") or ""
        outputs = node.get("outputs") or {}
        if "exitCode" in outputs:
            scope[f"{prefix}.exitCode"] = outputs["exitCode"]
        if "result" in outputs:
            scope[f"{prefix}.outputs.result"] = outputs["result"]
        for parameter in outputs.get("parameters", []):
            scope[f"{prefix}.outputs.parameters.{parameter['name']}"] = parameter.get("value", "")
        for artifact in outputs.get("artifacts", []):
            artifact_scope[f"{prefix}.outputs.artifacts.{artifact['name']}"] = artifact

    @staticmethod
    def _collect_outputs(
        node: Json, template: Json, scope: Mapping[str, str], artifact_scope: Mapping[str, Json]
    ) -> None:
        """Outputs of a steps/DAG template: `valueFrom.parameter` and artifacts `from`."""
        declared = template.get("outputs") or {}
        outputs: Json = {}
        for parameter in declared.get("parameters", []):
            value_from = parameter.get("valueFrom") or {}
            if "parameter" in value_from:
                value = _substitute(value_from["parameter"], scope)
                outputs.setdefault("parameters", []).append(
                    {"name": parameter["name"], "value": value}
                )
        for artifact in declared.get("artifacts", []):
            match = _TAG.fullmatch(str(artifact.get("from", "")).strip())
            if match and match.group(1) in artifact_scope:
                found = {**artifact_scope[match.group(1)], "name": artifact["name"]}
                outputs.setdefault("artifacts", []).append(found)
        if outputs:
            node["outputs"] = outputs

    # ---- leaves ---------------------------------------------------------------------------

    def _resolve_template(
        self, execution: _Execution, node: Json, template: Json, scope: Mapping[str, str]
    ) -> tuple[Json, dict[str, str]]:
        """Substitute variables in Argo's order (common.ProcessArgs / substituteParams).

        Workflow variables first; then inputs and the `{{...artifacts.X.path}}` variables in a
        single pass, with the paths taken from the template *before* inputs are substituted.
        For a script that runs here, declared absolute paths move into the node's temp dir;
        the second value maps each declared path to its local stand-in.
        """
        resolved = _substitute_all(template, execution.globals)
        local: dict[str, str] = {}
        if _runs_locally(resolved):
            filesystem = execution.workdir / node["id"] / "fs"
            local = {
                path: str(filesystem / path.lstrip("/")) for path in self._declared_paths(resolved)
            }
            (filesystem / "tmp").mkdir(parents=True, exist_ok=True)
            for path in local.values():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            resolved = self._remap_literal_paths(resolved, local)
        path_scope = self._path_scope(resolved, local)
        return _substitute_all(resolved, {**scope, **path_scope}), local

    async def _run_script(
        self,
        execution: _Execution,
        node: Json,
        template: Json,
        artifacts: Mapping[str, Json],
        pod: str,
        local: Mapping[str, str],
    ) -> None:
        """Run a Python script template locally, with its declared paths moved into a temp dir."""
        root = execution.workdir / node["id"]
        filesystem = root / "fs"
        declared_inputs = {
            a["name"]: a for a in (template.get("inputs") or {}).get("artifacts", [])
        }
        for name, artifact in artifacts.items():
            path = (declared_inputs.get(name) or artifact).get("path")
            if path:
                await self._load_artifact(artifact, Path(local.get(path, path)), name)
        script = template["script"]
        source_file = root / "script.py"
        source_file.write_text(script.get("source", ""))
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "ARGO_NODE_ID": node["id"],
            "ARGO_POD_NAME": pod,
        }
        for variable in script.get("env", []):
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
        code, stdout, stderr, timed_out = await self._spawn_python(
            [str(source_file), *script.get("args", [])], filesystem, environment
        )
        moment = _rfc3339(_now())
        self.logs.setdefault(execution.name, []).extend(
            LogRecord(pod, line, moment)
            for output in (stdout, stderr)
            for line in output.decode(errors="replace").splitlines()
        )
        outputs: Json = {"exitCode": str(code)}
        result = stdout.decode(errors="replace").rstrip("\n")
        if result:
            outputs["result"] = result
        node["outputs"] = outputs
        if code != 0:
            lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            detail = f": {lines[-1].strip()}" if lines else ""
            if timed_out:
                message = f"Step exceeded its deadline of {self.script_timeout:g}s{detail}"
            else:
                message = f"Error (exit code {code}){detail}"
            self._end_node(execution, node, "Failed", message)
            return
        outputs.update(await self._save_outputs(execution, template, local, pod))
        self._end_node(execution, node, "Succeeded")

    @staticmethod
    def _declared_paths(template: Json) -> list[str]:
        paths: list[str] = []
        inputs, outputs = template.get("inputs") or {}, template.get("outputs") or {}
        for artifact in [*inputs.get("artifacts", []), *outputs.get("artifacts", [])]:
            if artifact.get("path", "").startswith("/"):
                paths.append(artifact["path"])
        for parameter in outputs.get("parameters", []):
            path = (parameter.get("valueFrom") or {}).get("path", "")
            if path.startswith("/"):
                paths.append(path)
        return sorted(set(paths), key=len, reverse=True)

    @staticmethod
    def _remap_literal_paths(template: Json, local: Mapping[str, str]) -> Json:
        """Literal declared paths in the script (source, args, env) point into the temp dir."""
        if not local:
            return template
        alternatives = "|".join(re.escape(path) for path in sorted(local, key=len, reverse=True))
        pattern = re.compile(rf"(?:{alternatives})(?![\w.-])")

        def remap(value: Any) -> Any:
            if isinstance(value, str):
                return pattern.sub(lambda m: local[m.group(0)], value)
            if isinstance(value, list):
                return [remap(item) for item in value]
            if isinstance(value, dict):
                return {key: remap(item) for key, item in value.items()}
            return value

        return {**template, "script": remap(template["script"])}

    @staticmethod
    def _path_scope(template: Json, local: Mapping[str, str]) -> dict[str, str]:
        scope: dict[str, str] = {}
        inputs, outputs = template.get("inputs") or {}, template.get("outputs") or {}
        for kind, artifacts in (("inputs", inputs), ("outputs", outputs)):
            for artifact in artifacts.get("artifacts", []):
                if artifact.get("path"):
                    scope[f"{kind}.artifacts.{artifact['name']}.path"] = local.get(
                        artifact["path"], artifact["path"]
                    )
        for parameter in outputs.get("parameters", []):
            path = (parameter.get("valueFrom") or {}).get("path")
            if path:
                scope[f"outputs.parameters.{parameter['name']}.path"] = local.get(path, path)
        return scope

    async def _spawn_python(
        self, arguments: list[str], cwd: Path, environment: Mapping[str, str]
    ) -> tuple[int, bytes, bytes, bool]:
        """Run the interpreter; kill it on timeout or when the workflow is terminated."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *arguments,
            cwd=cwd,
            env=dict(environment),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.script_timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            stdout, stderr = await process.communicate()
            return process.returncode or -9, stdout, stderr, True
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        return process.returncode or 0, stdout, stderr, False

    async def _save_outputs(
        self, execution: _Execution, template: Json, local: Mapping[str, str], pod: str
    ) -> Json:
        declared = template.get("outputs") or {}
        outputs: Json = {}
        for parameter in declared.get("parameters", []):
            value_from = parameter.get("valueFrom") or {}
            path = value_from.get("path")
            value = _read_parameter_file(local.get(path, path)) if path else None
            if value is None:
                value = value_from.get("default")
            if value is None:
                raise _NodeError(f"failed to save outputs: open {path}: no such file or directory")
            outputs.setdefault("parameters", []).append({"name": parameter["name"], "value": value})
        for artifact in declared.get("artifacts", []):
            declared_path = artifact.get("path", "")
            path = Path(local.get(declared_path, declared_path))
            if not await asyncio.to_thread(path.exists):
                if artifact.get("optional"):
                    continue
                raise _NodeError(
                    f"failed to save outputs: open {declared_path}: no such file or directory"
                )
            outputs.setdefault("artifacts", []).append(
                await self._save_artifact(execution, artifact, path, pod)
            )
        return outputs

    def _s3(self) -> Any:
        if self._s3_client is None:
            raise _NodeError("no artifact repository configured (the emulator has no S3Config)")
        return self._s3_client

    def _bucket(self) -> str:
        assert self.s3 is not None
        return self.s3.bucket

    async def _save_artifact(
        self, execution: _Execution, artifact: Json, path: Path, pod: str
    ) -> Json:
        """Upload an output artifact; raw with `archive: none`, else tar.gz (zip with `zip`)."""
        archive = artifact.get("archive") or {}
        location = artifact.get("s3") or {}
        if "none" in archive:
            filename = path.name
        elif "zip" in archive:
            filename = f"{artifact['name']}.zip"
        else:
            filename = f"{artifact['name']}.tgz"
        key = location.get("key") or f"{execution.name}/{pod}/{filename}"
        bucket = location.get("bucket") or self._bucket()
        client = self._s3()
        if "none" in archive:
            objects = await asyncio.to_thread(_raw_objects, path, key)
        else:
            packer = _zip if "zip" in archive else _tar_gz
            objects = [(key, await asyncio.to_thread(packer, path))]
        for object_key, body in objects:
            await client.put_object(Bucket=bucket, Key=object_key, Body=body)
        record: Json = {"name": artifact["name"], "path": artifact.get("path", "")}
        if archive:
            record["archive"] = archive
        record["s3"] = {
            "key": key,
            **({"bucket": location["bucket"]} if "bucket" in location else {}),
        }
        return record

    async def _load_artifact(self, artifact: Json, destination: Path, name: str) -> None:
        """Download an input artifact; unpack tar.gz/zip unless the input says `archive: none`."""
        location = artifact.get("s3")
        if not location or not location.get("key"):
            raise _NodeError(
                f"inputs.artifacts.{name}: only s3 artifacts are supported by the emulator"
            )
        client = self._s3()
        bucket = location.get("bucket") or self._bucket()
        key = location["key"]
        try:
            response = await client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                data = bytes(await stream.read())
        except client.exceptions.NoSuchKey:
            if await self._load_directory(client, bucket, key, destination):
                return
            if artifact.get("optional"):
                return
            raise _NodeError(
                f"inputs.artifacts.{name}: artifact not found: s3://{bucket}/{key}"
            ) from None
        raw = "none" in (artifact.get("archive") or {})
        await asyncio.to_thread(_unpack, data, destination, raw=raw)

    @staticmethod
    async def _load_directory(client: Any, bucket: str, key: str, destination: Path) -> bool:
        listing = await client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/")
        contents = listing.get("Contents") or []
        for item in contents:
            relative = item["Key"][len(key.rstrip("/")) + 1 :]
            response = await client.get_object(Bucket=bucket, Key=item["Key"])
            async with response["Body"] as stream:
                data = bytes(await stream.read())
            await asyncio.to_thread(_unpack, data, destination / relative, raw=True)
        return bool(contents)

    async def _run_http(self, execution: _Execution, node: Json, http: Json, copies: int) -> None:
        """The agent's http template: one request (or `copies` concurrent ones for a hook)."""
        method = (http.get("method") or "GET").upper()
        url = http["url"]
        headers: dict[str, str] = {}
        for header in http.get("headers", []):
            if "value" in header:
                headers[header["name"]] = header["value"]
            elif secret := (header.get("valueFrom") or {}).get("secretKeyRef"):
                try:
                    headers[header["name"]] = self.secrets[secret["name"]][secret["key"]]
                except KeyError:
                    raise _NodeError(
                        f'secrets "{secret.get("name")}" not found '
                        f'or has no key "{secret.get("key")}"'
                    ) from None
        if "bodyFrom" in http:
            body = base64.b64decode((http["bodyFrom"] or {}).get("bytes", "")).decode(
                errors="replace"
            )
        else:
            body = http.get("body", "")
        timeout = float(http.get("timeoutSeconds") or 30)
        insecure = bool(http.get("insecureSkipVerify"))
        calls = await asyncio.gather(
            *(
                self._send_http(execution, node, method, url, headers, body, timeout, insecure)
                for _ in range(max(copies, 1))
            )
        )
        if calls[0].response_body:
            node["outputs"] = {"result": calls[0].response_body}
        if failure := next((call.error for call in calls if call.error), None):
            self._end_node(execution, node, "Failed", failure)
            return
        condition = http.get("successCondition")
        for call in calls:
            status = call.status or 0
            context = {
                "request": {
                    "method": method,
                    "url": url,
                    "body": body,
                    "headers": {k: [v] for k, v in headers.items()},
                },
                "response": {"statusCode": status, "body": call.response_body or "", "headers": {}},
            }
            try:
                ok = evaluate_condition(condition, context) if condition else 200 <= status < 300
            except ValueError as exc:
                raise _NodeError(f"invalid successCondition {condition!r}: {exc}") from exc
            if not ok:
                message = (
                    f"successCondition {condition!r} evaluated false (response code {status})"
                    if condition
                    else f"received non-2xx response code: {status}"
                )
                self._end_node(execution, node, "Failed", message)
                return
        self._end_node(execution, node, "Succeeded")

    async def _send_http(
        self,
        execution: _Execution,
        node: Json,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: str,
        timeout_seconds: float,
        insecure: bool,
    ) -> HookCall:
        """Send one request and record it (a failed connection is recorded, not raised)."""
        assert self._http is not None, "start() the emulator first"
        status: int | None = None
        text: str | None = None
        error: str | None = None
        try:
            async with self._http.request(
                method,
                url,
                headers=dict(headers),
                data=body.encode() if body else None,
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                ssl=not insecure,
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = f"{method} {url}: {exc.__class__.__name__}: {exc}".rstrip(": ")
        call = HookCall(
            workflow=execution.name,
            node=node["name"],
            method=method,
            url=url,
            headers=dict(headers),
            body=body,
            status=status,
            response_body=text,
            error=error,
        )
        self.hook_calls.append(call)
        return call


# --------------------------------------------------------------------------------------------
# Archives and small predicates


def _stream_error(status: int, message: str) -> Json:
    """The grpc-gateway v1 error chunk of a stream that fails after it started."""
    codes = {400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
    return {
        "error": {
            "grpc_code": GRPC_CODES.get(status, 2),
            "http_code": status,
            "message": message,
            "http_status": codes.get(status, "Internal Server Error"),
        }
    }


def _runs_locally(template: Json) -> bool:
    """Python scripts really run (with this interpreter); other leaves only pretend."""
    return "python" in (template.get("script") or {}).get("image", "")


def _continues(holder: Json, node: Json) -> bool:
    continue_on = holder.get("continueOn") or {}
    return bool(
        (node["phase"] == "Failed" and continue_on.get("failed"))
        or (node["phase"] == "Error" and continue_on.get("error"))
    )


def _dependencies(task: Json) -> list[str]:
    """`dependencies`, or the task names in a simple `depends` expression."""
    if "dependencies" in task:
        return list(task["dependencies"])
    depends = task.get("depends", "")
    names = re.findall(r"[A-Za-z0-9][-A-Za-z0-9_]*(?:\.[A-Za-z]+)?", depends)
    return sorted({name.split(".")[0] for name in names})


def _tar_gz(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(path, arcname=path.name)
    return buffer.getvalue()


def _zip(path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            archive.write(file, arcname=file.relative_to(path.parent).as_posix())
    return buffer.getvalue()


def _read_parameter_file(path: str) -> str | None:
    file = Path(path)
    return file.read_text(errors="replace").rstrip("\n") if file.is_file() else None


def _raw_objects(path: Path, key: str) -> list[tuple[str, bytes]]:
    """`archive: none`: a file is one object; a directory is one object per file under `key/`."""
    if path.is_file():
        return [(key, path.read_bytes())]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [(f"{key}/{file.relative_to(path).as_posix()}", file.read_bytes()) for file in files]


def _unpack(data: bytes, destination: Path, *, raw: bool) -> None:
    """Write an input artifact: raw bytes, or the content of a tar.gz / zip archive."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if raw or (data[:2] != b"\x1f\x8b" and data[:4] != b"PK\x03\x04"):
        destination.write_bytes(data)
        return
    with tempfile.TemporaryDirectory(dir=destination.parent) as staging:
        if data[:2] == b"\x1f\x8b":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                archive.extractall(staging, filter="data")
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                archive.extractall(staging)
        _move_extracted(Path(staging), destination)


def _move_extracted(staging: Path, destination: Path) -> None:
    """Like Argo: a single top-level entry becomes `destination`; several fill a directory."""
    entries = list(staging.iterdir())
    if len(entries) == 1:
        shutil.move(str(entries[0]), destination)
    else:
        destination.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            shutil.move(str(entry), destination / entry.name)


__all__ = [
    "ApiError",
    "ArgoEmulator",
    "HookCall",
    "RecordedRequest",
    "S3Config",
    "apply_fields",
    "evaluate_condition",
    "fnv32a",
    "merge_workflow_specs",
    "node_id",
    "parse_label_selector",
]
