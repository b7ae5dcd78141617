"""Processes for benchmarks and soaks: the stand-ins, service replicas, and floors.

Each runs in its own process, so the load generator never shares an event loop with the
service it measures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.demo import free_port
from stand_ins.slack_requests import signed, slash_command

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-" + secrets.token_hex(4)
WEBHOOK_SECRET = "bench-webhook-secret-" + secrets.token_hex(8)


def load_test_policy() -> Path:
    """A policy for load tests: the load comes from one user, so no rate limits."""
    path = Path("/tmp") / "argo-chatops-bench-policy.yaml"
    path.write_text(
        "rate_limits:\n  runs_per_user_per_hour: null\n  runs_per_channel_per_hour: null\n"
    )
    return path


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class StandIns:
    argo_latency: float = 0.0
    slack_latency: float = 0.0
    auto_run: bool = False
    config: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None

    def start(self) -> dict[str, str]:
        command = [
            sys.executable,
            "-m",
            "stand_ins",
            "--argo-latency",
            str(self.argo_latency),
            "--slack-latency",
            str(self.slack_latency),
        ]
        if not self.auto_run:
            command.append("--no-auto-run")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        self.config = json.loads(self.process.stdout.readline())
        return self.config

    async def control(self, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as http:
            url = self.config["control_url"] + path
            if body is None:
                async with http.get(url) as response:
                    return await response.json()
            async with http.post(url, json=body) as response:
                return await response.json()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class ServiceProcess:
    """`argo-chatops serve` with settings pointing at the stand-ins."""

    stand_ins: dict[str, str]
    database_url: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # The entry point; benchmarks/variants.py runs the same service with a proposed change.
    module: str = "bot.cli"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "ARGO_"))}
        env.update({k: v for k, v in self.stand_ins.items() if k.isupper()})
        env.update(
            {
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "PUBLIC_URL": self.url,
                "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "DATABASE_URL": self.database_url,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "LOG_LEVEL": "WARNING",
                "POLL_INTERVAL_SECONDS": "5",
                "POLICY_FILE": str(load_test_policy()),
            }
        )
        env.update(self.extra_env)
        return env

    async def start(self, timeout: float = 30.0) -> float:
        """Start and wait until /readyz is 200; returns the seconds that took."""
        started = time.perf_counter()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "serve"],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=log,
        )
        async with aiohttp.ClientSession() as http:
            while time.perf_counter() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"service exited with {self.process.returncode}")
                try:
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.01)
        raise TimeoutError("service did not become ready")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def command_request(text: str, response_url: str, channel: str = "CBENCH") -> tuple[bytes, dict]:
    body = slash_command(text, user_id="UBENCH", channel_id=channel, response_url=response_url)
    headers = signed(SIGNING_SECRET, body, content_type="application/x-www-form-urlencoded")
    return body, headers


async def timed_posts(
    url: str, requests: list[tuple[bytes, dict]], concurrency: int
) -> tuple[list[float], list[int]]:
    """Send every request with at most `concurrency` in flight; per-request latency in ms.

    The driver's own garbage collection is kept out of the timed window: a full collection
    of this process landing in a burst delayed its first requests by ~30 ms, and whether
    one lands depends on this process's heap (which modules it happens to import), not on
    the service measured (BENCHMARKS.md, round 6).
    """
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: bytes, headers: dict) -> None:
            started = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append((time.perf_counter() - started) * 1000)

        gc.collect()
        gc.disable()
        try:
            await asyncio.gather(*(one(body, headers) for body, headers in requests))
        finally:
            gc.enable()
    return latencies, statuses


def summarize(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
    }
