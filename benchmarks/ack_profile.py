"""Where the slash-command ack time goes: what else the service does while the acks leave.

    python -m benchmarks.ack_profile [--variants "" name ...] [--profile DIR]

The ack benchmark's load (500 concurrent signed `/argo run`, Argo answering after 500 ms),
against the service once per variant (benchmarks/variants.py; "" is the service as it is),
then against the bare-Bolt floor, all beside the same stand-ins. Besides the ack latencies it
reports, for the burst window (first request sent → last ack received): the service's CPU
time, and how many Slack Web API calls the service's background work made inside it (from
the fake Slack's per-call timestamps) — work that competes with the acks on one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from benchmarks.hook_announce import wait_ready
from benchmarks.profiling import cpu_seconds, listen_overflows, py_spy


def commands(stand_ins: StandIns, count: int, tag: str) -> list[tuple[bytes, dict]]:
    """Signed `/argo run` requests, each with its own response_url as Slack sends them."""
    base = stand_ins.config["response_url"].rsplit("/", 1)[0]
    return [
        command_request("run csv-summary rows=3", f"{base}/ack-{tag}-{index}")
        for index in range(count)
    ]


async def measure_service(
    stand_ins: StandIns,
    count: int,
    argo_latency: float,
    variants: str,
    profile_dir: Path | None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ack-profile-") as state:
        service = ServiceProcess(
            stand_ins.config,
            database_url=f"sqlite:///{Path(state) / 'bench.db'}",
            module="benchmarks.variants",
            extra_env={"BENCH_VARIANTS": variants},
        )
        await service.start()
        try:
            url = service.url + "/slack/events"
            await timed_posts(url, commands(stand_ins, 5, f"warm{variants}"), 5)
            await asyncio.sleep(argo_latency * 4)
            requests = commands(stand_ins, count, f"burst{variants}")
            since = int((await stand_ins.control("/summary"))["slack_calls"])
            spied = {"service": service.pid}
            assert stand_ins.process is not None
            with py_spy(spied, profile_dir / (variants or "baseline") if profile_dir else None):
                if profile_dir:
                    await asyncio.sleep(1.0)  # let py-spy attach before the burst
                cpu = cpu_seconds(service.pid)
                others = cpu_seconds(stand_ins.process.pid)
                overflows = listen_overflows()
                started = time.time()
                latencies, statuses = await timed_posts(url, requests, count)
                ended = time.time()
                cpu = cpu_seconds(service.pid) - cpu
                others = cpu_seconds(stand_ins.process.pid) - others
                overflows = listen_overflows() - overflows
            assert set(statuses) == {200}, statuses
            await asyncio.sleep(argo_latency * 4 + 2)  # let the starts finish
            calls = await stand_ins.control(f"/slack/calls?since={since}")
        finally:
            service.stop()
    during = collections.Counter(call["method"] for call in calls if call["at"] <= ended)
    figures = summarize(latencies)
    figures.update(
        {
            "burst_s": ended - started,
            "service_cpu_s": cpu,
            "stand_ins_cpu_s": others,
            "listen_drops": overflows,
            "slack_calls_in_burst": dict(during),
            "slack_calls_total": len(calls),
        }
    )
    return figures


async def measure_floor(
    stand_ins: StandIns, count: int, profile_dir: Path | None = None
) -> dict[str, Any]:
    """The bare-Bolt floor of ack_latency.py (lazy mode), with its CPU in the burst."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.floor_app", str(port), "lazy", SIGNING_SECRET],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, process)
        await timed_posts(url + "/slack/events", commands(stand_ins, 20, "floor-warm"), count)
        requests = commands(stand_ins, count, "floor")
        assert stand_ins.process is not None
        with py_spy({"floor": process.pid}, profile_dir):
            if profile_dir:
                await asyncio.sleep(1.0)  # let py-spy attach before the burst
            cpu, overflows = cpu_seconds(process.pid), listen_overflows()
            others = cpu_seconds(stand_ins.process.pid)
            started = time.time()
            latencies, statuses = await timed_posts(url + "/slack/events", requests, count)
            ended = time.time()
            cpu = cpu_seconds(process.pid) - cpu
            others = cpu_seconds(stand_ins.process.pid) - others
        assert set(statuses) == {200}, statuses
        figures = summarize(latencies)
        figures.update(
            {
                "burst_s": ended - started,
                "service_cpu_s": cpu,
                "stand_ins_cpu_s": others,
                "listen_drops": listen_overflows() - overflows,
            }
        )
        return figures
    finally:
        process.terminate()
        process.wait(timeout=10)


async def main(
    count: int,
    argo_latency: float,
    variants: list[str],
    profile_dir: Path | None,
    rounds: int = 1,
) -> list[tuple[str, dict[str, Any]]]:
    """Each round measures every variant then the floor; the rows hold per-round medians."""
    stand_ins = StandIns(argo_latency=argo_latency)
    stand_ins.start()
    measured: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    floor_label = "floor: bare Bolt, lazy mode"
    try:
        for round_number in range(rounds):
            where = profile_dir / f"round{round_number}" if profile_dir else None
            for names in variants:
                label = f"serve{' + ' + names if names else ''}"
                figures = await measure_service(stand_ins, count, argo_latency, names, where)
                measured[label].append(figures)
            measured[floor_label].append(await measure_floor(stand_ins, count, where))
            if rounds > 1:
                print(f"round {round_number + 1} of {rounds}:")
                print_rows([(label, runs[-1]) for label, runs in measured.items()])
    finally:
        stand_ins.stop()
    return [(label, median_figures(runs)) for label, runs in measured.items()]


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number; the ratio to the floor is taken per round first."""
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float):
            merged[key] = statistics.median(run[key] for run in runs)
        else:
            merged[key] = value if len(runs) == 1 else f"(round 1) {value}"
    return merged


def print_rows(rows: list[tuple[str, dict[str, Any]]]) -> None:
    print(
        f"{'what':36}{'p50 ms':>8}{'p99 ms':>8}{'x floor':>8}{'burst s':>8}{'CPU ms':>7}"
        f"{'others':>7}{'drops':>6}  Slack calls in burst"
    )
    floor = rows[-1][1]
    for label, figures in rows:
        print(
            f"{label:36}{figures['p50_ms']:8.0f}{figures['p99_ms']:8.0f}"
            f"{figures['p99_ms'] / floor['p99_ms']:8.2f}"
            f"{figures.get('burst_s', float('nan')):8.2f}"
            f"{figures.get('service_cpu_s', float('nan')) * 1000:7.0f}"
            f"{figures.get('stand_ins_cpu_s', float('nan')) * 1000:7.0f}"
            f"{figures.get('listen_drops', 0):6}  {figures.get('slack_calls_in_burst', '')}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ack_profile", description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--argo-latency", type=float, default=0.5)
    parser.add_argument("--variants", nargs="*", default=[""])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=None)
    arguments = parser.parse_args()
    rows = asyncio.run(
        main(
            arguments.count,
            arguments.argo_latency,
            arguments.variants,
            arguments.profile,
            arguments.rounds,
        )
    )
    if arguments.rounds > 1:
        print(f"medians of {arguments.rounds} rounds:")
    print_rows(rows)
