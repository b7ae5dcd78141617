"""`argo-chatops check`: try every connection of this configuration, one table row each.

Meant for the first minutes of a deployment and for "the bot went quiet": run it where the
service runs (`kubectl exec deploy/argo-chatops -- argo-chatops check`), read the failing
row's hint, fix, run again. It changes nothing except a probe object it writes to the bucket
and deletes again; the exit code is non-zero when any row failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.database import DatabaseUrl, redact_url
from bot.logging_setup import Redactor, secret_values
from bot.settings import Settings
from bot.slack_app import BOT_SCOPES
from bot.storage import S3Storage
from bot.store import Store
from workflows.client import ArgoClient, ArgoNotFound, ArgoRejected, ArgoUnavailable

CHECK_TIMEOUT_SECONDS = 30.0
PROBE_PREFIX = "argo-chatops-check/"
PROBE_WORKFLOW = "argo-chatops-check-probe"
MANIFEST = "deploy/slack-app-manifest.yaml"
_SLACK_AUTH_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "account_inactive"}


@dataclass(frozen=True)
class Row:
    """One connection's verdict: what was verified, or what failed and how to fix it."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


class CheckFailed(Exception):
    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


async def run_checks(
    settings: Settings, *, row_seconds: float = CHECK_TIMEOUT_SECONDS
) -> list[Row]:
    """All rows, checked concurrently; the text is redacted of every configured secret."""
    redact = Redactor(secret_values(settings))
    client_timeout = aiohttp.ClientTimeout(total=min(row_seconds, settings.argo_timeout_seconds))
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("slack", lambda: _slack(settings, session)),
            ("argo", lambda: _argo(settings, session)),
            ("s3", lambda: _s3(settings, session)),
            ("database", lambda: _database(settings)),
            ("public_url", lambda: _public_url(settings, session)),
        ]
        rows = await asyncio.gather(*(_row(name, check, row_seconds) for name, check in checks))
    return [Row(r.name, r.ok, redact(r.detail), redact(r.hint)) for r in rows]


async def _row(name: str, check: Callable[[], Awaitable[str]], seconds: float) -> Row:
    try:
        async with asyncio.timeout(seconds):
            return Row(name, True, await check())
    except CheckFailed as failure:
        return Row(name, False, failure.detail, failure.hint)
    except TimeoutError:
        return Row(
            name,
            False,
            f"no answer within {seconds:.0f} s",
            "Something on the way drops the traffic: check the URL, DNS, and network policies.",
        )
    except Exception as error:  # a check must report, never crash the table
        return Row(
            name,
            False,
            f"unexpected {error.__class__.__name__}: {str(error)[:200]}",
            "This looks like a bug in the check; the logs of `argo-chatops serve` may say more.",
        )


# -- Slack ---------------------------------------------------------------------------------


async def _slack(settings: Settings, session: aiohttp.ClientSession) -> str:
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=str(settings.slack_api_url),
        session=session,
    )
    try:
        response = await client.auth_test()
    except SlackApiError as error:
        code = str(error.response.get("error", "error"))
        hint = (
            "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token (xoxb-…) from "
            "the app's OAuth & Permissions page after installing it to the workspace."
            if code in _SLACK_AUTH_ERRORS
            else "Slack refused auth.test; see https://api.slack.com/methods/auth.test#errors."
        )
        raise CheckFailed(f"auth.test answered {code}", hint) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise CheckFailed(
            f"cannot reach {settings.slack_api_url} ({error.__class__.__name__})",
            "Check SLACK_API_URL (normally https://slack.com/api/) and that the pod may reach "
            "slack.com on port 443 (egress network policy, proxy).",
        ) from error
    headers = {key.lower(): value for key, value in response.headers.items()}
    granted = {s.strip() for s in headers.get("x-oauth-scopes", "").split(",") if s.strip()}
    missing = sorted(set(BOT_SCOPES) - granted)
    if missing:
        raise CheckFailed(
            f"token lacks scopes {', '.join(missing)} "
            f"({'; '.join(BOT_SCOPES[s] for s in missing)})",
            f"Add them to the app (the manifest in {MANIFEST} lists every scope) and reinstall "
            "it to the workspace: new scopes apply only after a reinstall.",
        )
    detail = (
        f"auth.test ok: @{response.get('user')} in {response.get('team')}; "
        f"all {len(BOT_SCOPES)} scopes granted"
    )
    if settings.slack_app_token is not None:
        detail += "; " + await _socket_mode(settings, session)
    return detail


async def _socket_mode(settings: Settings, session: aiohttp.ClientSession) -> str:
    assert settings.slack_app_token is not None
    client = AsyncWebClient(base_url=str(settings.slack_api_url), session=session)
    try:
        await client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
    except SlackApiError as error:
        raise CheckFailed(
            f"Socket Mode: apps.connections.open answered {error.response.get('error', 'error')}",
            "SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write "
            "(Basic Information → App-Level Tokens), and Socket Mode must be enabled.",
        ) from error
    return "Socket Mode token accepted"


# -- Argo ----------------------------------------------------------------------------------


async def _argo(settings: Settings, session: aiohttp.ClientSession) -> str:
    namespace = settings.argo_namespace
    argo = ArgoClient(
        base_url=settings.argo_base_url,
        namespace=namespace,
        token=settings.argo_token.get_secret_value(),
        session=session,
        verify_tls=settings.argo_verify_tls,
        attempts=1,
    )
    try:
        info = await argo.userinfo()
    except ArgoUnavailable as error:
        hint = "Check ARGO_SERVER_URL (in the cluster: https://argo-server.argo.svc:2746)."
        if "Certificate" in error.message or "SSL" in error.message:
            hint += " The certificate was refused: set ARGO_VERIFY_TLS=false for a self-signed one."
        raise CheckFailed(f"cannot reach the Argo Server: {error.message}", hint) from error
    except ArgoRejected as error:
        raise CheckFailed(
            f"the Argo Server refused the token: {error.message}",
            "ARGO_TOKEN must be the bot's ServiceAccount token (the Secret "
            "argo-chatops.service-account-token in deploy/kubernetes), and the Argo Server must "
            "run with --auth-mode=client.",
        ) from error
    who = info.get("subject") or info.get("serviceAccountName") or "an unnamed identity"
    rbac_hint = (
        f"Apply the Role and RoleBinding of deploy/kubernetes/rbac.yaml in namespace "
        f"{namespace} for the token's ServiceAccount, or set ARGO_NAMESPACE to where the "
        "templates live."
    )
    try:
        templates = await argo.list_templates()
        # Not found is the good answer: the token may read workflows, this one does not exist.
        with contextlib.suppress(ArgoNotFound):
            await argo.get_workflow(PROBE_WORKFLOW)
    except (ArgoRejected, ArgoUnavailable) as error:
        raise CheckFailed(f"namespace {namespace}: {error.message}", rbac_hint) from error
    names = {template.name for template in templates}
    notify = settings.argo_notify_template
    if notify not in names:
        raise CheckFailed(
            f"token of {who} ok; WorkflowTemplate {notify} missing in namespace {namespace}",
            f"Install it: kubectl -n {namespace} apply -f workflows/templates/{notify}.yaml "
            "(also part of kubectl apply -k deploy/kubernetes). Without it Argo refuses every "
            "run the bot starts.",
        )
    return f"token of {who}; namespace {namespace}: {len(names)} templates, {notify} present"


# -- S3 ------------------------------------------------------------------------------------


async def _s3(settings: Settings, session: aiohttp.ClientSession) -> str:
    endpoint = str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
    storage = S3Storage(
        bucket=settings.s3_bucket,
        endpoint_url=endpoint,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
    )
    where = endpoint or "AWS S3"
    await storage.open()
    try:
        return await _s3_probe(storage, session, where)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", "error"))
        operation = error.operation_name
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise CheckFailed(
                f"bucket {settings.s3_bucket} does not exist at {where}",
                "Set S3_BUCKET to Argo's artifact bucket (artifactRepository.s3.bucket in the "
                "workflow-controller-configmap) or create it: mc mb minio/<bucket>.",
            ) from error
        raise CheckFailed(
            f"{operation} answered {code}",
            "S3_ACCESS_KEY/S3_SECRET_KEY must allow GetObject, PutObject and DeleteObject on "
            "the bucket (and S3_REGION must match it on AWS).",
        ) from error
    except BotoCoreError as error:
        raise CheckFailed(
            f"cannot reach {where} ({error.__class__.__name__})",
            "Check S3_ENDPOINT_URL (MinIO in the cluster: http://minio.argo.svc:9000; leave it "
            "empty for AWS).",
        ) from error
    finally:
        await storage.close()


async def _s3_probe(storage: S3Storage, session: aiohttp.ClientSession, where: str) -> str:
    client = storage.client
    await client.head_bucket(Bucket=storage.bucket)
    key = f"{PROBE_PREFIX}{socket.gethostname()[:40]}-{secrets.token_hex(4)}.txt"
    content = f"argo-chatops check {secrets.token_hex(8)}\n".encode()
    await client.put_object(Bucket=storage.bucket, Key=key, Body=content)
    try:
        response = await client.get_object(Bucket=storage.bucket, Key=key)
        async with response["Body"] as stream:
            read_back = await stream.read()
        if read_back != content:
            raise CheckFailed(
                "the probe object read back differently",
                "Something between the bot and S3 rewrites objects.",
            )
        url = storage.presigned_get_url(key, 300)
        await _fetch_presigned(session, url, content)
    finally:
        await client.delete_object(Bucket=storage.bucket, Key=key)
    return f"bucket {storage.bucket} at {where}: write, read, presigned GET and delete ok"


async def _fetch_presigned(session: aiohttp.ClientSession, url: str, content: bytes) -> None:
    hint = (
        "Presigned links are signed for S3_ENDPOINT_URL's host: it must be an address that "
        "both this pod and the people clicking links in Slack can reach."
    )
    try:
        async with session.get(url) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        raise CheckFailed(f"presigned GET failed ({error.__class__.__name__})", hint) from error
    if response.status != 200 or body != content:
        raise CheckFailed(f"presigned GET answered HTTP {response.status}", hint)


# -- database ------------------------------------------------------------------------------


async def _database(settings: Settings) -> str:
    url = DatabaseUrl.parse(settings.database_url)
    shown = redact_url(settings.database_url)
    is_file = url.backend == "sqlite" and not url.in_memory
    if is_file and not await asyncio.to_thread(Path(str(url.path)).exists):
        raise CheckFailed(
            f"{shown}: the database file does not exist",
            "Run `argo-chatops migrate` (serve also creates it at start-up), or fix "
            "DATABASE_URL; in Kubernetes SQLite needs a volume and a single replica.",
        )
    store = Store.from_url(settings.database_url)
    latest = store.latest_schema_version
    try:
        try:
            await store.ping()
            version = await store.schema_version()
        except Exception as error:  # the drivers raise many kinds; the row only reports it
            cause = error.__cause__ or error
            raise CheckFailed(
                f"cannot use {shown}: {cause.__class__.__name__}: {str(cause)[:160]}",
                "Check DATABASE_URL: host, port, database name, user and password, and that "
                "PostgreSQL accepts connections from the pod (pg_hba.conf, network policy).",
            ) from error
    finally:
        await store.close()
    if version is None or version < latest:
        found = "no schema" if version is None else f"schema version {version}"
        raise CheckFailed(
            f"{shown}: {found}, this release needs version {latest}",
            "Run `argo-chatops migrate` (serve also migrates at start-up).",
        )
    if version > latest:
        raise CheckFailed(
            f"{shown}: schema version {version} is newer than this release ({latest})",
            "A newer argo-chatops migrated this database: run that release, not this one.",
        )
    return f"{shown}: reachable, schema version {version} is current"


# -- PUBLIC_URL ----------------------------------------------------------------------------


async def _public_url(settings: Settings, session: aiohttp.ClientSession) -> str:
    base = str(settings.public_url).rstrip("/")
    hint = (
        "PUBLIC_URL must reach a running `argo-chatops serve` from inside the cluster (it is "
        "where Argo's agent pod posts the exit hook), e.g. http://argo-chatops.argo.svc. "
        "Until it does, runs are announced by the poller only."
    )
    try:
        status, health = await _get_json(session, "GET", f"{base}/healthz")
        if status != 200 or health.get("status") != "ok":
            raise CheckFailed(f"{base}/healthz answered HTTP {status}, not argo-chatops", hint)
        status, hook = await _get_json(session, "POST", settings.hook_url)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise CheckFailed(f"{base} unreachable ({error.__class__.__name__})", hint) from error
    # An empty body is refused with 400 and a JSON message by argo-chatops' hook endpoint only.
    if status != 400 or "message" not in hook:
        raise CheckFailed(
            f"{settings.hook_url} answered HTTP {status}, not argo-chatops' exit hook", hint
        )
    return f"{base}/healthz ok and {settings.hook_url} answers"


async def _get_json(
    session: aiohttp.ClientSession, method: str, url: str
) -> tuple[int, dict[str, Any]]:
    """Status and JSON object of a response ({} when the body is not a JSON object)."""
    async with session.request(method, url, json={} if method == "POST" else None) as response:
        text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return response.status, body if isinstance(body, dict) else {}


# -- output --------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    width = max(len(row.name) for row in rows)
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    for row in rows:
        lines.append(f"{row.name.ljust(width)}  {'ok  ' if row.ok else 'FAIL'}    {row.detail}")
        if not row.ok and row.hint:
            lines.append(f"{''.ljust(width)}          hint: {row.hint}")
    failed = [row.name for row in rows if not row.ok]
    lines.append("")
    summary = f"{len(failed)} of {len(rows)} failed: {', '.join(failed)}" if failed else "all ok"
    lines.append(summary)
    return "\n".join(lines)


async def check_command(settings: Settings, out: IO[str], **options: Any) -> int:
    """Print the table; 0 when every row is ok, 1 otherwise."""
    rows = await run_checks(settings, **options)
    print(render(rows), file=out, flush=True)
    return 0 if all(row.ok for row in rows) else 1
