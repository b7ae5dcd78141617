"""Every benchmark in one command, one table: figure, ours, floor, ratio, target, pass/fail.

    python -m benchmarks.run_all [--rounds 3] [--variants name,name] [--skip relay ...]

Each figure is measured beside its floor in the same run (same stand-ins, same minute), and
the latency and throughput figures are medians over `--rounds` rounds, because absolute
times on a shared two-core machine drift. `--variants` runs the service with proposed changes
from benchmarks/variants.py applied (the "after" column of BENCHMARKS.md).

- ack: benchmarks/ack_profile.py — 500 concurrent signed `/argo run`, Argo answering after
  500 ms; floor: a bare slack-bolt app that only acks (benchmarks/floor_app.py, lazy mode).
- hook: benchmarks/hook_announce.py — 1,000 runs finishing at once, hooks firing; floor: a
  bare aiohttp handler doing the same presigns and one post (benchmarks/hook_floor.py).
- relay: benchmarks/file_relay.py, once per round (its own processes; its output parsed).
- poll: benchmarks/poll_cycle.py — one poll cycle with 10,000 tracked runs, 1% finishing.
- startup: benchmarks/startup.py — `argo-chatops serve` until /readyz, beside import aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.harness import ROOT

SECTIONS = ("ack", "hook", "relay", "poll", "startup")


@dataclass
class Row:
    figure: str
    ours: float
    floor: float | None
    unit: str
    target: str
    ok: bool | None  # None: not judged (informative row)
    ratio: float | None = None

    def cells(self) -> list[str]:
        ratio = self.ratio
        if ratio is None and self.floor:
            ratio = self.ours / self.floor
        verdict = {True: "pass", False: "FAIL", None: ""}[self.ok]
        return [
            self.figure,
            _number(self.ours, self.unit),
            "—" if self.floor is None else _number(self.floor, self.unit),
            "—" if ratio is None else f"{ratio:.2f}x",
            self.target,
            verdict,
        ]


def _number(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit in ("runs/s", "MiB/s"):
        return f"{value:.0f} {unit}"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:g}{' ' + unit if unit else ''}"


async def ack_rows(rounds: int, variants: str) -> list[Row]:
    from benchmarks import ack_profile

    rows = await ack_profile.main(500, 0.5, [variants], None, rounds)
    (_, ours), (_, floor) = rows
    ratio = ours["p99_ms"] / floor["p99_ms"]
    return [
        Row("ack p50, 500 concurrent /argo run", ours["p50_ms"], floor["p50_ms"], "ms", "", None),
        Row(
            "ack p99, 500 concurrent /argo run",
            ours["p99_ms"],
            floor["p99_ms"],
            "ms",
            "≤ 1.2x floor, < 3 s",
            ratio <= 1.2 and ours["p99_ms"] < 3000,
        ),
        Row(
            "ack burst: service CPU",
            ours["service_cpu_s"],
            floor["service_cpu_s"],
            "s",
            "",
            None,
        ),
    ]


async def hook_rows(rounds: int, variants: str, runs: int) -> list[Row]:
    from benchmarks import hook_announce

    results = []
    for _ in range(rounds):
        result = await hook_announce.main(runs, variants=variants)
        hook_announce.print_result(result)
        results.append(result)
    medians = hook_announce.median_result(results)
    ours, floor = medians["ours"], medians["floor"]
    return [
        Row(
            f"hook → announcement throughput, {runs} runs",
            ours["runs_per_s"],
            floor["runs_per_s"],
            "runs/s",
            "≥ 0.5x floor",
            ours["runs_per_s"] >= 0.5 * floor["runs_per_s"],
        ),
        Row(
            f"hook → announcement p50, {runs} runs",
            ours["p50_ms"],
            floor["p50_ms"],
            "ms",
            "",
            None,
        ),
        Row(
            f"hook → announcement p99, {runs} runs",
            ours["p99_ms"],
            floor["p99_ms"],
            "ms",
            "< 2 s",
            ours["p99_ms"] < 2000,
        ),
    ]


_RELAY_LINE = re.compile(r"^(service|floor):.*?\s([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def relay_rows(size_mib: int, rounds: int) -> list[Row]:
    """Runs benchmarks/file_relay.py in its own process once per round and reads its two
    result lines: throughputs are medians over the rounds, the peak RSS is the highest seen.

    One relay of 1 GiB measured between 0.75x and 0.98x of the floor from run to run on the
    same build; about 10 s of each side's 17 to 23 s is moto assembling the parts, which
    both sides wait for (BENCHMARKS.md, round 7).
    """
    command = [sys.executable, "-m", "benchmarks.file_relay", "--size-mib", str(size_mib)]
    measured: list[dict[str, tuple[float, ...]]] = []
    for _ in range(rounds):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        found: dict[str, tuple[float, ...]] = {}
        for line in done.stdout.splitlines():
            if match := _RELAY_LINE.match(line.strip()):
                found[match.group(1)] = tuple(float(group) for group in match.groups()[1:])
        if done.returncode != 0 or set(found) != {"service", "floor"}:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
            return [Row("file relay (did not run cleanly)", float("nan"), None, "", "", False)]
        (_, ours_rate, _, ours_peak) = found["service"]
        (_, floor_rate, _, _) = found["floor"]
        print(
            f"    relay: {ours_rate:.1f} vs {floor_rate:.1f} MiB/s "
            f"({ours_rate / floor_rate:.2f}x), service peak RSS {ours_peak:.1f} MB",
            flush=True,
        )
        measured.append(found)

    def median(side: str, column: int) -> float:
        return statistics.median(found[side][column] for found in measured)

    ours_rate, floor_rate = median("service", 1), median("floor", 1)
    ours_peak = max(found["service"][3] for found in measured)
    floor_peak = max(found["floor"][3] for found in measured)
    return [
        Row(
            f"file relay {size_mib} MiB Slack → S3 throughput",
            ours_rate,
            floor_rate,
            "MiB/s",
            "≥ 0.8x floor",
            ours_rate >= 0.8 * floor_rate,
        ),
        Row(
            "file relay: RSS before the upload",
            median("service", 2),
            median("floor", 2),
            "MB",
            "",
            None,
        ),
        Row(
            "file relay: peak RSS (VmHWM), highest of the rounds",
            ours_peak,
            floor_peak,
            "MB",
            "service < 100 MB",
            ours_peak < 100,
        ),
    ]


async def poll_rows() -> list[Row]:
    from benchmarks import poll_cycle
    from stand_ins.s3_server import S3Server

    s3_server = S3Server(bucket="argo-artifacts")
    await asyncio.to_thread(s3_server.start)
    try:
        small = await poll_cycle.measure(1000, 3, s3_server)
        large = await poll_cycle.measure(10000, 3, s3_server)
    finally:
        await asyncio.to_thread(s3_server.stop)
    requests = large["list_calls"] + large["reads"]
    return [
        Row(
            "poll cycle, 10,000 tracked (100 finishing): cycle time",
            large["cycle_s_median"],
            None,
            "s",
            "< 1 s",
            large["cycle_s_median"] < 1.0,
        ),
        Row(
            "poll cycle: Argo requests per cycle, 100 finishing (lists + reads)",
            requests,
            None,
            "",
            "≤ 2 per namespace",
            requests <= 2,
        ),
        Row(
            "poll cycle: DB statements, cycle with nothing new, 10,000 vs 1,000 tracked",
            large["idle_db_statements"],
            small["idle_db_statements"],
            "",
            "O(1): same at 10x the runs",
            large["idle_db_statements"] <= small["idle_db_statements"],
        ),
        Row(
            "poll cycle: DB statements, 100 vs 10 finishing (10,000 vs 1,000 tracked)",
            large["db_statements"],
            small["db_statements"],
            "",
            "O(1): < 2x at 10x the runs",
            large["db_statements"] < 2 * small["db_statements"],
        ),
    ]


async def startup_rows() -> list[Row]:
    from benchmarks import startup

    result = await startup.main(5)
    return [
        Row(
            "start-up: serve → /readyz 200 (median of 5)",
            result["serve_to_ready_s"],
            result["import_aiohttp_s"],
            "s",
            "< 1.5 s",
            result["serve_to_ready_s"] < 1.5,
        )
    ]


def print_table(rows: list[Row]) -> None:
    header = ["figure", "ours", "floor", "ratio", "target", "result"]
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")


async def main(arguments: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    wanted = [section for section in SECTIONS if section not in arguments.skip]
    for section in wanted:
        started = time.perf_counter()
        print(f"--- {section}", flush=True)
        if section == "ack":
            rows += await ack_rows(arguments.rounds, arguments.variants)
        elif section == "hook":
            rows += await hook_rows(arguments.rounds, arguments.variants, arguments.runs)
        elif section == "relay":
            if importlib.util.find_spec("benchmarks.file_relay") is None:
                print("benchmarks/file_relay.py does not exist yet: skipped")
                continue
            rows += await asyncio.to_thread(relay_rows, arguments.relay_mib, arguments.rounds)
        elif section == "poll":
            rows += await poll_rows()
        elif section == "startup":
            rows += await startup_rows()
        print(f"    ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="ack, hook and relay rounds")
    parser.add_argument("--variants", default="", help="proposed changes (benchmarks/variants.py)")
    parser.add_argument("--runs", type=int, default=1000, help="runs finishing at once (hook)")
    parser.add_argument("--relay-mib", type=int, default=1024, help="file relay size")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    arguments = parser.parse_args()
    table = asyncio.run(main(arguments))
    machine = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(
        f"\nnproc {machine}, Python {sys.version.split()[0]}, rounds {arguments.rounds}"
        + (f", variants {arguments.variants}" if arguments.variants else "")
    )
    print_table(table)
    failed = [row.figure for row in table if row.ok is False]
    raise SystemExit(1 if failed else 0)
