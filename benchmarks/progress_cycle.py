"""Cost of one live-progress cycle as the number of running runs grows (100 vs 1,000).

Every run is a live workflow in the Argo emulator (one step done, one running) with a thread
root in the fake Slack. Measured per cycle: Argo requests, database statements, chat.update
calls and wall time, for the first cycle (every root has something new to show), the next one
(the next roots in line: each cycle edits at most 3 at the default 5 s interval) and an idle
one (nothing running). The refresher and the stand-ins share this process, so the times are
upper bounds.

    python -m benchmarks.progress_cycle
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.harness import free_port
from benchmarks.poll_cycle import populate
from bot.app import SERVICES, create_app
from bot.demo import schema_path, templates_path
from bot.messages import SlackMessage
from bot.models import RunState
from stand_ins.argo_emulator import ArgoEmulator, node_id
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import S3Server
from tests.conftest import ARGO_TOKEN, BOT_TOKEN, make_settings


def _nodes(name: str, stamp: str) -> dict[str, Any]:
    steps = {"generate": "Succeeded", "summarize": "Running"}
    nodes = {}
    for index, (step, phase) in enumerate(steps.items()):
        node_name = f"{name}[{index}].{step}"
        identifier = node_id(name, node_name)
        nodes[identifier] = {
            "id": identifier,
            "name": node_name,
            "displayName": step,
            "type": "Pod",
            "templateName": step,
            "phase": phase,
            "startedAt": stamp,
        }
    return nodes


async def measure(running: int, s3_server: S3Server) -> dict[str, Any]:
    slack = FakeSlack(bot_token=BOT_TOKEN)
    argo = ArgoEmulator(
        token=ARGO_TOKEN, schema_path=schema_path(), s3=s3_server.config, auto_run=False
    )
    argo.load_templates(templates_path())
    await slack.start()
    await argo.start()
    with tempfile.TemporaryDirectory() as state:
        settings = make_settings(
            slack=slack,
            argo=argo,
            s3=s3_server.config,
            database_url=f"sqlite:///{Path(state) / 'progress.db'}",
            port=free_port(),
            poll_interval_seconds=86400,
            progress_interval_seconds=5,
            log_level="WARNING",
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        services = runner.app[SERVICES]
        names = [f"csv-summary-{index:06d}" for index in range(running)]
        await populate(services.store, argo, names)
        roots = await asyncio.gather(
            *(services.slack.post("C1", SlackMessage(text=n, blocks=[])) for n in names)
        )
        async with services.store.database.transaction() as connection:
            await connection.executemany(
                "UPDATE runs SET thread_ts = $2 WHERE name = $1",
                list(zip(names, roots, strict=True)),
            )
        for name in names:
            status = argo.workflows[name]["status"]
            status.update(progress="1/2", nodes=_nodes(name, status["startedAt"]))

        statements = 0

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        services.store.database.statement_listeners.append(count)

        async def cycle() -> dict[str, Any]:
            nonlocal statements
            argo.requests.clear()
            statements = 0
            updates = len(slack.calls_to("chat.update"))
            started = time.perf_counter()
            report = await services.progress.refresh_once()
            return {
                "seconds": time.perf_counter() - started,
                # The poller's own first cycle may list Argo meanwhile: count ours only.
                "argo_requests": sum(
                    "completed!=true" in r.query.get("listOptions.labelSelector", "")
                    or r.path != "/api/v1/workflows/argo"
                    for r in argo.requests
                ),
                "db_statements": statements,
                "edits": len(slack.calls_to("chat.update")) - updates,
                "reported": report.edited,
            }

        first = await cycle()
        await asyncio.sleep(4.1)  # past the per-run minimum gap (0.8 x the interval)
        following = await cycle()  # the next 3 roots that have not shown their progress yet
        async with services.store.database.transaction() as connection:
            await connection.execute("UPDATE runs SET state = $1", RunState.ANNOUNCED.value)
        idle = await cycle()
        services.store.database.statement_listeners.remove(count)
        await runner.cleanup()
    await argo.close()
    await slack.close()
    return {"running": running, "first": first, "next": following, "idle": idle}


async def main(sizes: list[int]) -> None:
    s3_server = S3Server(bucket="argo-artifacts")
    await asyncio.to_thread(s3_server.start)
    try:
        print(f"{'running':>8} {'cycle':>7} {'s':>7} {'argo':>5} {'db':>4} {'edits':>6}")
        for size in sizes:
            row = await measure(size, s3_server)
            for kind in ("first", "next", "idle"):
                cell = row[kind]
                print(
                    f"{row['running']:>8} {kind:>7} {cell['seconds']:>7.3f} "
                    f"{cell['argo_requests']:>5} {cell['db_statements']:>4} {cell['edits']:>6}"
                )
    finally:
        await asyncio.to_thread(s3_server.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    asyncio.run(main(parser.parse_args().sizes))
