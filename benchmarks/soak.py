"""Soak: many runs, two replicas on one PostgreSQL, duplicate hooks, random faults, one kill -9.

Prints runs, announcements, duplicates and losses. A run counts once Argo has its workflow;
it is lost if it was never announced, duplicated if its thread got more than one result.

    python -m benchmarks.soak --runs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import re
import secrets
import signal
import time
from pathlib import Path

import asyncpg

from benchmarks.harness import ServiceProcess, StandIns, command_request, timed_posts

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NAME_IN_TEXT = re.compile(r"\b(csv-summary-[a-z0-9]{5})\b")


async def admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def states(database_url: str, table: str) -> dict[str, int]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(f"SELECT state, count(*) FROM {table} GROUP BY state")
    finally:
        await connection.close()
    return {row[0]: row[1] for row in rows}


async def inject_faults(stand_ins: StandIns, stop: asyncio.Event, rng: random.Random) -> int:
    """Every ~0.5 s one random fault: Slack 429 or 500, Argo 500 on reads or on creates."""
    injected = 0
    faults = [
        ("/slack/fail_next", {"method": "chat.postMessage", "status": 429, "retry_after": 1}),
        ("/slack/fail_next", {"method": "chat.postMessage", "status": 500, "times": 3}),
        ("/slack/fail_next", {"method": "chat.update", "status": 503}),
        (
            "/argo/fail_next",
            {"method": "GET", "path_regex": r"/api/v1/workflows/.*", "status": 500, "times": 2},
        ),
        (
            "/argo/fail_next",
            {"method": "POST", "path_regex": r"/api/v1/workflows/argo$", "status": 503},
        ),
    ]
    while not stop.is_set():
        path, body = rng.choice(faults)
        await stand_ins.control(path, body)
        injected += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    return injected


async def soak(run_count: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    database = f"argo_chatops_soak_{secrets.token_hex(4)}"
    await admin(f'CREATE DATABASE "{database}"')
    database_url = POSTGRES.rsplit("/", 1)[0] + "/" + database
    stand_ins = StandIns(auto_run=False)
    config = stand_ins.start()
    response_base = config["response_url"].rsplit("/", 1)[0]
    logs = Path("/tmp") / f"{database}.log"
    replicas = [
        ServiceProcess(
            config,
            database_url=database_url,
            extra_env={"POLL_INTERVAL_SECONDS": "2"},
            log_path=logs,
        )
        for _ in range(2)
    ]
    started = time.perf_counter()
    killed_at = float("nan")
    try:
        await stand_ins.control("/argo/settings", {"hook_copies": 2, "completion_delay": 0.05})
        for replica in replicas:
            await replica.start()
        stop_faults = asyncio.Event()
        faults = asyncio.create_task(inject_faults(stand_ins, stop_faults, rng))

        acked = 0
        half = run_count // 2
        for batch_start in range(0, run_count, 50):
            batch = [
                command_request("run csv-summary rows=3", f"{response_base}/{secrets.token_hex(8)}")
                for _ in range(min(50, run_count - batch_start))
            ]
            target = replicas[(batch_start // 50) % 2]
            if target.process is None or target.process.poll() is not None:
                target = replicas[1 - replicas.index(target)]
            _, statuses = await timed_posts(target.url + "/slack/events", batch, 50)
            acked += statuses.count(200)
            if batch_start // 50 % 4 == 3:  # Argo finishes what it has, hooks fire (twice)
                await stand_ins.control("/argo/complete", {})
            if batch_start <= half < batch_start + 50:
                await asyncio.sleep(0.2)
                replicas[0].kill(signal.SIGKILL)  # mid-flight, no goodbye
                killed_at = time.perf_counter() - started
                await asyncio.sleep(2)
                await replicas[0].start()

        await asyncio.sleep(3)  # let the last starts reach Argo
        await stand_ins.control("/argo/complete", {})
        stop_faults.set()
        injected = await faults

        deadline = time.perf_counter() + 300
        while True:
            summary = await stand_ins.control("/summary")
            results: collections.Counter[str] = collections.Counter()
            not_started: set[str] = set()
            for reply in summary["thread_replies"]:
                match = NAME_IN_TEXT.search(reply["text"])
                if not match:
                    continue
                if "was not started" in reply["text"]:
                    not_started.add(match.group(1))
                else:
                    results[match.group(1)] += 1
            # Done when every run is announced and every acknowledged command became a run
            # (those the killed replica held are taken over once their lease runs out).
            answered = len(not_started) + len(summary["private_warnings"])
            settled = summary["created"] + answered >= acked
            if (settled and len(results) >= summary["created"]) or time.perf_counter() > deadline:
                break
            await stand_ins.control("/argo/complete", {})
            await asyncio.sleep(2)
        run_states = await states(database_url, "runs")
        request_states = await states(database_url, "run_requests")
        return {
            "commands sent": run_count,
            "commands acked": acked,
            "runs (workflows in Argo)": summary["created"],
            "result announcements": sum(results.values()),
            "duplicates": sum(count - 1 for count in results.values() if count > 1),
            "losses (runs never announced)": summary["created"] - len(results),
            "interrupted before create, told in thread": len(not_started),
            "refused with a private answer": collections.Counter(
                warning[:90] for warning in summary["private_warnings"]
            ),
            "acked but never started or answered": acked
            - summary["created"]
            - len(not_started)
            - len(summary["private_warnings"]),
            "run states in the store": run_states,
            "run requests in the store": request_states,
            "hook calls": summary["hook_calls"],
            "faults injected": injected,
            "kill -9 at (s)": round(killed_at, 1),
            "wall time (s)": round(time.perf_counter() - started, 1),
        }
    finally:
        for replica in replicas:
            replica.stop()
        stand_ins.stop()
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    result = asyncio.run(soak(arguments.runs, arguments.seed))
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:{width}}  {value}")


if __name__ == "__main__":
    main()
