"""Cost of one poll cycle as the number of tracked runs grows (1,000 vs 10,000).

The service's RunService polls an Argo emulator that holds every run as a live workflow;
each cycle 1% of them finish with their hook lost, so the poller must find and announce
them. Measured per cycle: Argo requests (list calls and reads), database statements, and
wall time — the poller and the emulator share this process, so the time is an upper bound.

    python -m benchmarks.poll_cycle
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from benchmarks.harness import WEBHOOK_SECRET, free_port
from bot.app import SERVICES, create_app
from bot.demo import schema_path, templates_path
from bot.models import RunState
from bot.settings import Settings
from bot.store import Store
from stand_ins.argo_emulator import ArgoEmulator
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import S3Server
from workflows.manifest import MANAGED_LABEL, RUN_LABEL, TEMPLATE_LABEL


async def measure(tracked: int, cycles: int, s3_server: S3Server) -> dict[str, float]:
    slack = FakeSlack(bot_token="xoxb-poll")
    argo = ArgoEmulator(token="t", schema_path=schema_path(), s3=s3_server.config, auto_run=False)
    argo.load_templates(templates_path())
    await slack.start()
    await argo.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(
            _env_file=None,
            slack_bot_token="xoxb-poll",
            slack_signing_secret="s",
            slack_api_url=slack.api_url,
            argo_server_url=argo.url,
            argo_token="t",
            s3_endpoint_url=s3_server.config.endpoint_url,
            s3_access_key="testing",
            s3_secret_key="testing",
            s3_bucket=s3_server.config.bucket,
            public_url=f"http://127.0.0.1:{port}",
            webhook_secret=WEBHOOK_SECRET,
            database_url=f"sqlite:///{Path(state) / 'poll.db'}",
            poll_interval_seconds=86400,
            log_level="WARNING",
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        services = runner.app[SERVICES]
        names = [f"csv-summary-{index:06d}" for index in range(tracked)]
        await populate(services.store, argo, names)

        statements = 0

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        services.store.database.statement_listeners.append(count)
        per_cycle: list[dict[str, float]] = []
        finishing = max(1, tracked // 100)
        for cycle in range(cycles):
            batch = names[cycle * finishing : (cycle + 1) * finishing]
            for name in batch:
                await argo.complete(name, "Succeeded", run_hook=False)
            argo.requests.clear()
            statements = 0
            started = time.perf_counter()
            report = await services.runs.poll_once()
            elapsed = time.perf_counter() - started
            lists = sum(1 for r in argo.requests if r.path == "/api/v1/workflows/argo")
            per_cycle.append(
                {
                    "seconds": elapsed,
                    "list_calls": lists,
                    "reads": len(argo.requests) - lists,
                    "db_statements": statements,
                    "announced": report.announced,
                }
            )
        # And a cycle in which nothing new finished: the fixed cost of polling.
        argo.requests.clear()
        statements = 0
        started = time.perf_counter()
        await services.runs.poll_once()
        idle_seconds = time.perf_counter() - started
        idle_requests, idle_statements = len(argo.requests), statements
        services.store.database.statement_listeners.remove(count)
        await runner.cleanup()
    await argo.close()
    await slack.close()
    return {
        "tracked": tracked,
        "finishing_per_cycle": finishing,
        "cycle_s_median": statistics.median(c["seconds"] for c in per_cycle),
        "list_calls": max(c["list_calls"] for c in per_cycle),
        "reads": statistics.median(c["reads"] for c in per_cycle),
        "db_statements": statistics.median(c["db_statements"] for c in per_cycle),
        "announced": statistics.median(c["announced"] for c in per_cycle),
        "idle_cycle_s": idle_seconds,
        "idle_argo_requests": idle_requests,
        "idle_db_statements": idle_statements,
    }


async def populate(store: Store, argo: ArgoEmulator, names: list[str]) -> None:
    """Tracked runs in the store and live workflows in the emulator, created in bulk."""
    now = datetime.now(UTC)
    running, created = RunState.RUNNING.value, now.timestamp()
    rows = [
        (name, "argo", "csv-summary", "{}", "U1", "C1", running, "Running", created)
        for name in names
    ]
    async with store.database.transaction() as connection:
        await connection.executemany(
            "INSERT INTO runs (name, namespace, template, parameters, user_id, channel_id,"
            " state, phase, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            rows,
        )
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in names:
        argo.workflows[name] = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {
                "name": name,
                "namespace": "argo",
                "uid": name,
                "creationTimestamp": stamp,
                "resourceVersion": "1",
                "labels": {  # as the service's manifests label them (workflows/manifest.py)
                    MANAGED_LABEL: "true",
                    TEMPLATE_LABEL: "csv-summary",
                    RUN_LABEL: name,
                    "workflows.argoproj.io/completed": "false",
                    "workflows.argoproj.io/phase": "Running",
                },
            },
            "spec": {"workflowTemplateRef": {"name": "csv-summary"}},
            "status": {"phase": "Running", "startedAt": stamp, "finishedAt": None},
        }


async def main(sizes: list[int], cycles: int) -> None:
    s3_server = S3Server(bucket="argo-artifacts")
    await asyncio.to_thread(s3_server.start)
    try:
        print(
            f"{'tracked':>8} {'finishing':>9} {'cycle s':>8} {'lists':>6} {'reads':>6} "
            f"{'db stmts':>8} {'announced':>9} | idle: {'s':>6} {'argo':>5} {'db':>4}"
        )
        for size in sizes:
            row = await measure(size, cycles, s3_server)
            print(
                f"{row['tracked']:>8} {row['finishing_per_cycle']:>9} "
                f"{row['cycle_s_median']:>8.3f} "
                f"{row['list_calls']:>6} {row['reads']:>6.0f} {row['db_statements']:>8.0f} "
                f"{row['announced']:>9.0f} |       {row['idle_cycle_s']:>6.3f} "
                f"{row['idle_argo_requests']:>5} {row['idle_db_statements']:>4}"
            )
    finally:
        await asyncio.to_thread(s3_server.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cycles", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.sizes, arguments.cycles))
