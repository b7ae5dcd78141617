"""Exit hook → thread announcement: latency and throughput for 1,000 runs finishing at once.

    python -m benchmarks.hook_announce [--runs 1000]

Processes: the stand-ins (`python -m stand_ins`, auto_run off), `argo-chatops serve` (SQLite),
the floor (`benchmarks/hook_floor.py`), and this driver, which plays Argo's agent pods.

1. Setup, not timed: the runs are started the honest way, through signed `/argo run`
   commands (50 in flight), spread over 10 channels; the driver waits until the service's
   database holds every run as `running`. Argo (the emulator) then marks every workflow
   Succeeded with two output files each, written to S3, without firing the hooks.
2. Timed: the driver fires every run's exit hook at once — `POST /hooks/argo` with the
   run's own HMAC token and the notify template's body — and notes when each left. The
   service re-reads the workflow from Argo, claims the announcement, HEADs and presigns both
   files, posts into the run's thread and edits the thread root. Latency per run: hook sent
   → the fake Slack answered that run's `chat.postMessage` (`SlackCall.at`, read through the
   stand-ins' control API; both clocks are this machine's `time.time()`). Throughput: runs /
   (last announcement - first hook sent).
3. Floor, same run, same hooks (same names and tokens): a bare aiohttp handler that checks
   the token, answers 202 and, in a task, presigns the same two keys and makes one
   `chat.postMessage`.

Why the driver fires the hooks rather than the emulator: real Argo runs the exit handler
*before* it marks the workflow completed, so the service re-checks after 0.5 s, 1 s, …
(README, "How a run works"); that wait is Argo's, not the service's, and the floor does not
read Argo at all. Here every workflow has completed when its hook arrives, so the figure is
the service's own cost. The poller is set to an hour so that every announcement is the
hook's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import (
    ROOT,
    WEBHOOK_SECRET,
    ServiceProcess,
    StandIns,
    command_request,
    free_port,
    percentile,
    timed_posts,
)
from benchmarks.profiling import cpu_seconds, listen_overflows, py_spy
from workflows.manifest import hook_token

NAMESPACE = "argo"
CHANNELS = [f"CHOOK{index:02d}" for index in range(10)]
FLOOR_CHANNEL = "CHOOKFLOOR"
ARTIFACTS = {
    "generate": {"data.csv": "n,value\n" + "".join(f"{i},{i * i}\n" for i in range(20))},
    "summarize": {"summary.md": "# Summary\n\n20 rows, mean 123.5\n"},
}
# Connections the hooks share, like the emulator's agent (aiohttp's default pool). More at
# once overflow the service's listen queue (aiohttp's backlog is 128): the kernel drops SYNs
# and each dropped one retries after 1 s, which measures the kernel, not the service.
HOOK_CONNECTIONS = 100
ARTIFACT_KEYS = [
    f"sessions/{{name}}/{step}/{file}" for step, files in ARTIFACTS.items() for file in files
]


@dataclass
class Figures:
    """One side of the comparison: per-run latencies (s) and the batch's throughput."""

    latencies: list[float]
    throughput: float
    announced: int
    hook_statuses: dict[int, int]
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process, while timed
    listen_overflows: int = 0  # SYNs the kernel dropped meanwhile (each costs a 1 s retry)
    other_calls: dict[str, int] = field(default_factory=dict)  # other Slack calls, while timed

    def row(self) -> dict[str, float]:
        per_run = {
            f"{label}_cpu_ms_per_run": 1000 * seconds / max(self.announced, 1)
            for label, seconds in self.cpu_seconds.items()
        }
        return {
            "p50_ms": percentile(self.latencies, 0.5) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "max_ms": max(self.latencies, default=float("nan")) * 1000,
            "runs_per_s": self.throughput,
            "announced": self.announced,
            **per_run,
        }


async def start_runs(
    service: ServiceProcess, stand_ins: StandIns, database: Path, count: int
) -> list[str]:
    """`count` runs through signed /argo run commands; their names once all are running.

    A command whose start fails is replaced by another: the service picks names at random
    (`csv-summary-` + 5 characters) and does not retry one that clashes with a stored run,
    so about one batch of a thousand in a hundred loses a run to a UNIQUE constraint.
    """
    base = stand_ins.config["response_url"].rsplit("/", 1)[0]
    sent = 0
    for _ in range(5):
        missing = count - len(running_runs(database))
        requests = [
            command_request(
                "run csv-summary rows=3",
                f"{base}/hook-bench-{index}",  # Slack gives every command its own response_url
                channel=CHANNELS[index % len(CHANNELS)],
            )
            for index in range(sent, sent + missing)
        ]
        sent += missing
        _, statuses = await timed_posts(service.url + "/slack/events", requests, 50)
        assert set(statuses) == {200}, statuses
        last, settled = -1, time.monotonic()
        while len(running := running_runs(database)) < count:
            if len(running) != last:
                last, settled = len(running), time.monotonic()
            elif time.monotonic() - settled > 5:
                break  # no progress for 5 s: some starts failed, send more commands
            await asyncio.sleep(0.25)
        else:
            return running
    raise RuntimeError(f"only {len(running)} of {count} runs started; see the service log")


def running_runs(database: Path) -> list[str]:
    """Names of the runs the service's SQLite database holds as `running` (read-only)."""
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT name FROM runs WHERE state = 'running'").fetchall()
    finally:
        connection.close()
    return [row[0] for row in rows]


async def slack_call_count(stand_ins: StandIns) -> int:
    return int((await stand_ins.control("/summary"))["slack_calls"])


async def fire_hooks(
    url: str, names: list[str], concurrency: int = HOOK_CONNECTIONS
) -> tuple[dict[str, float], dict[int, int]]:
    """Every run's exit hook at once; when each one was fired (before waiting for a socket)."""
    sent: dict[str, float] = {}
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(name: str) -> None:
            token = hook_token(WEBHOOK_SECRET, NAMESPACE, name)
            body = {"namespace": NAMESPACE, "name": name, "uid": name, "status": "Succeeded"}
            sent[name] = time.time()
            async with http.post(
                url + "/hooks/argo", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

        await asyncio.gather(*(one(name) for name in names))
    return sent, statuses


async def announcements(
    stand_ins: StandIns, since: int, names: list[str], *, threaded: bool, timeout: float
) -> dict[str, float]:
    """When the fake Slack answered each run's announcement (the first one naming it)."""
    wanted = set(names)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    cursor = since
    while len(seen) < len(wanted) and time.monotonic() < deadline:
        calls = await stand_ins.control(f"/slack/calls?method=chat.postMessage&since={cursor}")
        for call in calls:
            cursor = max(cursor, call["index"] + 1)
            if not call["ok"] or bool(call["thread_ts"]) != threaded:
                continue
            name = call["text"].split(" ", 1)[0]
            if name in wanted and name not in seen:
                seen[name] = call["at"]
        await asyncio.sleep(0.2)
    return seen


def figures(sent: dict[str, float], seen: dict[str, float], statuses: dict[int, int]) -> Figures:
    latencies = [seen[name] - sent[name] for name in seen]
    span = max(seen.values(), default=0.0) - min(sent.values(), default=0.0)
    return Figures(
        latencies=latencies,
        throughput=len(seen) / span if span > 0 else float("nan"),
        announced=len(seen),
        hook_statuses=statuses,
    )


async def measure(
    stand_ins: StandIns,
    url: str,
    names: list[str],
    *,
    threaded: bool,
    pids: dict[str, int],
    profile_dir: Path | None = None,
    concurrency: int = HOOK_CONNECTIONS,
) -> Figures:
    """One warm-up hook (first S3 presign, first Slack call), then every other hook at once."""
    warm_up, timed = names[:1], names[1:]
    since = await slack_call_count(stand_ins)
    await fire_hooks(url, warm_up)
    if not await announcements(stand_ins, since, warm_up, threaded=threaded, timeout=30):
        raise RuntimeError(f"{url} did not announce the warm-up run")
    await asyncio.sleep(0.5)
    await stand_ins.control("/collect", {})
    since = await slack_call_count(stand_ins)
    cpu_before = {label: cpu_seconds(pid) for label, pid in pids.items()}
    overflows = listen_overflows()
    with py_spy(pids, profile_dir):
        sent, statuses = await fire_hooks(url, timed, concurrency)
        seen = await announcements(stand_ins, since, timed, threaded=threaded, timeout=180)
        cpu = {label: cpu_seconds(pid) - cpu_before[label] for label, pid in pids.items()}
    result = figures(sent, seen, statuses)
    result.cpu_seconds = cpu
    result.listen_overflows = listen_overflows() - overflows
    last = max(seen.values(), default=0.0)
    for call in await stand_ins.control(f"/slack/calls?since={since}"):
        if call["method"] != "chat.postMessage" and call["at"] <= last:
            result.other_calls[call["method"]] = result.other_calls.get(call["method"], 0) + 1
    return result


async def measure_floor(
    stand_ins: StandIns,
    names: list[str],
    profile_dir: Path | None = None,
    concurrency: int = HOOK_CONNECTIONS,
) -> Figures:
    port = free_port()
    config = {
        **{k: v for k, v in stand_ins.config.items() if k.isupper()},
        "webhook_secret": WEBHOOK_SECRET,
        "artifact_keys": ARTIFACT_KEYS,
        "channel": FLOOR_CHANNEL,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.hook_floor", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(config) + "\n")
    process.stdin.close()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, process)
        assert stand_ins.process is not None
        pids = {"floor": process.pid, "stand_ins": stand_ins.process.pid}
        return await measure(
            stand_ins,
            url,
            names,
            threaded=False,
            pids=pids,
            profile_dir=profile_dir,
            concurrency=concurrency,
        )
    finally:
        process.terminate()
        process.wait(timeout=15)


async def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}")
            try:
                async with http.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready")


async def main(
    count: int,
    *,
    extra_env: dict[str, str] | None = None,
    profile_dir: Path | None = None,
    concurrency: int = HOOK_CONNECTIONS,
    variants: str = "",
) -> dict[str, Any]:
    """One round: `count` runs, their hooks to the service, the same hooks to the floor."""
    stand_ins = StandIns(auto_run=False)
    stand_ins.start()
    try:
        with tempfile.TemporaryDirectory(prefix="hook-bench-") as state:
            database = Path(state) / "bench.db"
            service = ServiceProcess(
                stand_ins.config,
                database_url=f"sqlite:///{database}",
                extra_env={
                    "POLL_INTERVAL_SECONDS": "3600",
                    "BENCH_VARIANTS": variants,
                    **(extra_env or {}),
                },
                log_path=Path(state) / "service.log",
                module="benchmarks.variants",
            )
            await service.start()
            try:
                setup_started = time.perf_counter()
                names = await start_runs(service, stand_ins, database, count + 1)
                completed = await stand_ins.control(
                    "/argo/complete", {"names": names, "run_hook": False, "artifacts": ARTIFACTS}
                )
                assert completed["completed"] == len(names), completed
                setup_seconds = time.perf_counter() - setup_started
                await asyncio.sleep(1.0)  # let both processes settle after the setup
                assert stand_ins.process is not None
                ours = await measure(
                    stand_ins,
                    service.url,
                    names,
                    threaded=True,
                    pids={"service": service.pid, "stand_ins": stand_ins.process.pid},
                    profile_dir=profile_dir,
                    concurrency=concurrency,
                )
                if ours.announced < count:
                    log = (Path(state) / "service.log").read_text()[-3000:]
                    print(f"only {ours.announced}/{count} announced; log tail:\n{log}")
            finally:
                service.stop()
        floor = await measure_floor(
            stand_ins, names, profile_dir / "floor" if profile_dir else None, concurrency
        )
    finally:
        stand_ins.stop()
    return {
        "runs": count,
        "connections": concurrency,
        "setup_s": setup_seconds,
        "ours": ours,
        "floor": floor,
    }


def print_result(result: dict[str, Any]) -> None:
    print(
        f"hook → announcement, {result['runs']} runs finishing at once "
        f"over {result['connections']} connections (setup {result['setup_s']:.0f} s, not timed)"
    )
    print(f"{'':40}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'runs/s':>9}{'announced':>10}")
    for label, side in (
        ("argo-chatops serve", result["ours"]),
        ("floor: bare aiohttp presign + post", result["floor"]),
    ):
        row = side.row()
        print(
            f"{label:40}{row['p50_ms']:9.0f}{row['p99_ms']:9.0f}{row['max_ms']:9.0f}"
            f"{row['runs_per_s']:9.0f}{row['announced']:10.0f}"
        )
    ours, floor = result["ours"].row(), result["floor"].row()
    print(
        f"throughput ratio {ours['runs_per_s'] / floor['runs_per_s']:.2f}x (target ≥ 0.5x), "
        f"p99 {ours['p99_ms'] / 1000:.2f} s (target < 2 s); "
        f"hook answers: ours {result['ours'].hook_statuses}, "
        f"floor {result['floor'].hook_statuses}; listen-queue drops: "
        f"ours {result['ours'].listen_overflows}, floor {result['floor'].listen_overflows}; "
        f"other Slack calls before the last announcement: ours {result['ours'].other_calls}"
    )
    print(
        "CPU ms per run while timed: "
        + "; ".join(
            f"{side}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in result[side].row().items() if "cpu" in k)
            for side in ("ours", "floor")
        )
    )


def median_result(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median of each figure over several rounds."""
    return {
        side: {
            key: statistics.median(result[side].row()[key] for result in results)
            for key in results[0][side].row()
        }
        for side in ("ours", "floor")
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hook_announce", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument(
        "--profile", type=Path, help="py-spy the service and the stand-ins into this folder"
    )
    parser.add_argument("--connections", type=int, default=HOOK_CONNECTIONS)
    parser.add_argument("--variants", default="", help="see benchmarks/variants.py")
    arguments = parser.parse_args()
    print_result(
        asyncio.run(
            main(
                arguments.runs,
                profile_dir=arguments.profile,
                concurrency=arguments.connections,
                variants=arguments.variants,
            )
        )
    )
