"""Slash-command ack latency under load, beside bare Bolt floors, in the same run.

500 concurrent signed `/argo run csv-summary` requests against `argo-chatops serve` (its own
process) while the Argo emulator answers every request after 500 ms; the same load against
a bare slack-bolt app that only acks, in Bolt's fast mode and in its default mode.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.harness import (
    ROOT,
    SIGNING_SECRET,
    ServiceProcess,
    StandIns,
    command_request,
    free_port,
    summarize,
    timed_posts,
)


async def measure_floor(mode: str, requests: list, concurrency: int) -> dict[str, float]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.floor_app", str(port), mode, SIGNING_SECRET],
        cwd=ROOT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(500):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}/slack/events"
        await timed_posts(url, requests[:20], concurrency)  # warm up
        latencies, statuses = await timed_posts(url, requests, concurrency)
        assert set(statuses) == {200}, statuses
        return summarize(latencies)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def main(count: int, argo_latency: float) -> list[tuple[str, dict[str, float]]]:
    stand_ins = StandIns(argo_latency=argo_latency)
    config = stand_ins.start()
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        # Slack gives every command its own response_url, usable five times: one shared URL
        # would answer 404 from the sixth run on and add a fallback chat.postEphemeral each.
        base = config["response_url"].rsplit("/", 1)[0]
        requests = [
            command_request("run csv-summary rows=3", f"{base}/ack-{index}")
            for index in range(count)
        ]
        with tempfile.TemporaryDirectory() as state:
            service = ServiceProcess(config, database_url=f"sqlite:///{Path(state) / 'bench.db'}")
            await service.start()
            try:
                url = service.url + "/slack/events"
                await timed_posts(url, requests[:5], 5)  # warm up (Bolt's lazy auth.test)
                await asyncio.sleep(argo_latency * 4)
                started = time.perf_counter()
                latencies, statuses = await timed_posts(url, requests, count)
                elapsed = time.perf_counter() - started
                assert set(statuses) == {200}, statuses
                figures = summarize(latencies)
                figures["requests_per_s"] = count / elapsed
                rows.append(("argo-chatops serve (Argo +%.0f ms)" % (argo_latency * 1000), figures))
            finally:
                service.stop()
        for mode in ("lazy", "default"):
            rows.append(
                (f"floor: bare Bolt, {mode} mode", await measure_floor(mode, requests, count))
            )
    finally:
        stand_ins.stop()
    return rows


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"{'what':44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, figures in rows:
        print(
            f"{name:44} {figures['p50_ms']:8.1f} {figures['p99_ms']:8.1f} {figures['max_ms']:8.1f}"
        )
    service, floor = rows[0][1], rows[1][1]
    print(f"p99 ratio to the fast floor: {service['p99_ms'] / floor['p99_ms']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--argo-latency", type=float, default=0.5)
    arguments = parser.parse_args()
    print_table(asyncio.run(main(arguments.count, arguments.argo_latency)))
