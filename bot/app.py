"""The app factory: builds every client from Settings and wires the routes."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp

from bot import logging_setup
from bot.access import Access
from bot.audit import Audit
from bot.file_runs import FileRunService
from bot.journal import RequestJournal
from bot.lifecycle import LifecycleService
from bot.metrics import METRICS, Metrics, metrics_endpoint
from bot.policy import load_policy
from bot.poller import Poller
from bot.progress import ProgressRefresher
from bot.routes import load_routes
from bot.runs import RunService
from bot.settings import Settings
from bot.slack import SlackMessenger, build_web_client
from bot.slack_gate import SlackGate
from bot.storage import S3Storage
from bot.store import Store
from bot.tasks import BackgroundTasks, QuietGate
from bot.uploads import InputRelay
from handlers import events
from handlers.actions import RunButtons
from handlers.commands import CommandHandler
from handlers.files import FileEventHandler
from handlers.hooks import HookHandler
from handlers.lifecycle import LifecycleCommands
from handlers.modals import RunFormHandler
from workflows.client import ArgoClient

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024


@dataclass
class Services:
    """Every collaborator of one running service, built once by the factory."""

    settings: Settings
    store: Store
    storage: S3Storage
    argo: ArgoClient
    slack: SlackMessenger
    runs: RunService
    journal: RequestJournal
    tasks: BackgroundTasks
    # Slack requests in flight: work they start waits for a quiet moment (acks go first).
    slack_traffic: QuietGate
    poller: Poller
    bolt: AsyncApp
    hooks: HookHandler
    lifecycle: LifecycleService
    progress: ProgressRefresher
    # Shared counters and timings; e.g. `services.metrics.upload_bytes.inc(n)` for file uploads.
    metrics: Metrics
    access: Access  # the access policy (POLICY_FILE) and rate limits
    audit: Audit
    draining: bool = False


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
SLACK_GATE = web.AppKey("slack_gate", SlackGate)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SLACK_GATE] = SlackGate(settings.slack_signing_secret.get_secret_value())
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_start_draining)
    app.cleanup_ctx.append(_socket_mode)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_post("/hooks/argo", argo_hook)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    instance_id = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.argo_timeout_seconds),
        raise_for_status=False,
        middlewares=[
            metrics.http_middleware(
                slack_api_url=str(settings.slack_api_url), argo_url=settings.argo_base_url
            )
        ],
    )
    store = Store.from_url(settings.database_url)
    storage = S3Storage(
        bucket=settings.s3_bucket,
        endpoint_url=str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None,
        access_key=settings.s3_access_key.get_secret_value(),
        secret_key=settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
    )
    tasks = BackgroundTasks()
    slack_traffic = QuietGate()
    poller: Poller | None = None
    progress: ProgressRefresher | None = None
    try:
        await store.migrate()
        await storage.open()
        metrics.instrument_s3(storage.client.meta.events)
        web_client = build_web_client(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=str(settings.slack_api_url),
            session=session,
        )
        slack = SlackMessenger(web_client, session)
        argo = ArgoClient(
            base_url=settings.argo_base_url,
            namespace=settings.argo_namespace,
            token=settings.argo_token.get_secret_value(),
            session=session,
            verify_tls=settings.argo_verify_tls,
        )
        journal = RequestJournal(store=store, slack=slack, tasks=tasks, instance_id=instance_id)
        access = Access(policy=load_policy(settings.policy_file), store=store)
        audit = Audit(store=store, tasks=tasks, access=access)
        runs = RunService(
            settings=settings,
            argo=argo,
            slack=slack,
            storage=storage,
            store=store,
            tasks=tasks,
            instance_id=instance_id,
            access=access,
            metrics=metrics,
            journal=journal,
            relay=InputRelay(
                session=session,
                storage=storage,
                bot_token=settings.slack_bot_token.get_secret_value(),
                file_hosts=settings.slack_file_hosts,
                max_bytes=settings.max_upload_bytes,
                count_bytes=metrics.upload_bytes.inc,
            ),
        )
        bolt = logging_setup.TaggingApp(
            client=web_client,
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            # Listeners only parse, ack and hand work to background tasks, so running them
            # before the response goes out sends the ack as soon as `ack()` returns.
            process_before_response=True,
            # `SlackGate` verifies the signature and its 5-minute window on the raw bytes
            # before Bolt sees a request; Socket Mode traffic carries no signature.
            request_verification_enabled=False,
            logger=logging.getLogger(logging_setup.BOLT_LOGGER),
        )
        progress = ProgressRefresher(
            settings=settings,
            argo=argo,
            slack=slack,
            store=store,
            tasks=tasks,
            instance_id=instance_id,
        )
        lifecycle = LifecycleService(
            settings=settings,
            argo=argo,
            slack=slack,
            store=store,
            runs=runs,
            progress=progress,
            instance_id=instance_id,
            access=access,
        )
        form = RunFormHandler(runs=runs, slack=slack, max_upload_bytes=settings.max_upload_bytes)
        commands = CommandHandler(
            command=settings.slack_command,
            runs=runs,
            slack=slack,
            tasks=tasks,
            journal=journal,
            slack_traffic=slack_traffic,
            metrics=metrics,
            form=form,
            lifecycle=LifecycleCommands(lifecycle=lifecycle, slack=slack, tasks=tasks, audit=audit),
            audit=audit,
        )
        commands.register(bolt)
        RunButtons(lifecycle=lifecycle, slack=slack, tasks=tasks, audit=audit).register(bolt)
        form.register(bolt, start=commands.start_with_inputs)
        file_runs = FileRunService(
            runs=runs,
            slack=slack,
            store=store,
            tasks=tasks,
            drop_zones=load_routes(settings.routes_file),
            journal=journal,
            audit=audit,
        )
        FileEventHandler(file_runs).register(bolt)
        events.register(bolt)
        poller = Poller(runs, tasks, settings.poll_interval_seconds, metrics=metrics)
        app[SERVICES] = Services(
            settings=settings,
            store=store,
            storage=storage,
            argo=argo,
            slack=slack,
            runs=runs,
            journal=journal,
            tasks=tasks,
            slack_traffic=slack_traffic,
            poller=poller,
            bolt=bolt,
            hooks=HookHandler(
                runs=runs,
                webhook_secret=settings.webhook_secret.get_secret_value(),
                audit=audit,
            ),
            lifecycle=lifecycle,
            progress=progress,
            metrics=metrics,
            access=access,
            audit=audit,
        )
        poller.start()
        progress.start()
        logger.info("argo-chatops ready", extra={"instance": instance_id})
        yield
    finally:
        if poller is not None:
            poller.shutdown()
        if progress is not None:
            progress.shutdown()
        await tasks.close()
        await storage.close()
        await store.close()
        await session.close()


async def _start_draining(app: web.Application) -> None:
    """SIGTERM: report not-ready and take no new background work; cleanup drains the rest
    (work acknowledged requests left for a quiet moment starts now, to be drained too)."""
    services = app.get(SERVICES)
    if services is not None:
        services.draining = True
        services.slack_traffic.release()
        services.tasks.stop_accepting()


async def _socket_mode(app: web.Application) -> AsyncIterator[None]:
    """With SLACK_APP_TOKEN, Slack traffic also arrives over a Socket Mode connection."""
    services = app[SERVICES]
    token = services.settings.slack_app_token
    if token is None:
        yield
        return
    from bot import socket_mode  # only with SLACK_APP_TOKEN: Bolt's Socket Mode adapter (RSS)

    async with socket_mode.connected(services.bolt, token.get_secret_value()):
        yield


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app.get(SERVICES)
    if services is None:
        return web.json_response({"status": "starting"}, status=503)
    if services.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        await services.store.ping()
    except Exception:
        logger.warning("database unreachable", exc_info=True)
        return web.json_response({"status": "database unreachable"}, status=503)
    return web.json_response({"status": "ready"})


async def slack_events(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.slack_traffic.enter()
    try:
        # The signature is checked on the raw bytes first: forged requests never reach Bolt.
        bolt_request = await request.app[SLACK_GATE].bolt_request(request)
        if isinstance(bolt_request, web.Response):
            return bolt_request
        bolt_response = await services.bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)
    finally:
        services.slack_traffic.leave()


async def argo_hook(request: web.Request) -> web.Response:
    return await request.app[SERVICES].hooks.handle(request)
