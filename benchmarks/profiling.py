"""Sampling profiles of benchmark processes with py-spy, and a plain-text summary of them.

py-spy is not a project dependency: `.venv/bin/pip install py-spy` (it attaches to a running
process by pid, so the service under test runs unchanged). Samples are written in py-spy's
raw format (one collapsed stack per line with its count); `top()` turns them into the
functions with the most samples, inclusive (anywhere on the stack) and self (on top).

    python -m benchmarks.profiling FILE.raw [--focus bot/ handlers/ ...]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """CPU time a process (all its threads) has used so far, to the nanosecond.

    From the scheduler's own account of each thread's time on a CPU (`schedstat`); the
    user + system ticks of `stat` count in 10 ms steps, too coarse for a burst of acks that
    takes 0.2 s of CPU. Falls back to the ticks where the kernel keeps no schedstat.
    """
    threads = Path(f"/proc/{pid}/task")
    try:
        nanoseconds = sum(
            int((task / "schedstat").read_text().split()[0]) for task in threads.iterdir()
        )
        return nanoseconds / 1e9
    except (OSError, ValueError):  # no schedstat, or a thread ended while being read
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """Connections the kernel dropped because a listen queue was full (all sockets)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


@contextlib.contextmanager
def py_spy(
    pids: dict[str, int], directory: Path | None, rate: int = 1000, *, gil: bool = True
) -> Iterator[None]:
    """Record each named process while the block runs; nothing when `directory` is None.

    With `gil`, only samples of the thread holding the GIL count: where the CPU time of the
    Python code goes (idle waits and threads blocked in C are left out).
    """
    if directory is None:
        yield
        return
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    directory.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                str(rate),
                "--threads",
                *(["--gil"] if gil else []),
                "--output",
                str(directory / f"{label}.raw"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for label, pid in pids.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for recorder in recorders:
            recorder.wait(timeout=60)


def _frames(stack: str) -> list[str]:
    # "thread (0x..);f (file.py:12);g (other.py:3)" -> function names with their file, no line
    frames = []
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        file = where.rsplit(":", 1)[0].rstrip(")")
        frames.append(f"{name} ({file})" if file else name)
    return frames


def top(
    path: Path, *, limit: int = 25, focus: tuple[str, ...] = (), thread: str | None = None
) -> str:
    """The functions holding the most samples, inclusive and self, as a text table."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        threads[frames[0]] += count
        if thread is not None and thread not in frames[0]:
            continue
        total += count
        for frame in set(frames[1:]):
            if not focus or any(part in frame for part in focus):
                inclusive[frame] += count
        if len(frames) > 1:
            own[frames[-1]] += count
    lines = [
        f"{path.name}: {total} samples; by thread: "
        + ", ".join(f"{name} {count}" for name, count in threads.most_common(4))
    ]
    lines.append(f"  inclusive{' (' + ', '.join(focus) + ')' if focus else ''}:")
    lines += [
        f"    {100 * count / total:5.1f}%  {frame}" for frame, count in inclusive.most_common(limit)
    ]
    lines.append("  self:")
    lines += [
        f"    {100 * count / total:5.1f}%  {frame}" for frame, count in own.most_common(limit)
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--focus", nargs="*", default=[])
    parser.add_argument("--limit", type=int, default=25)
    parser.add_argument("--thread", default=None, help="only stacks of threads named like this")
    arguments = parser.parse_args()
    print(
        top(
            arguments.path,
            limit=arguments.limit,
            focus=tuple(arguments.focus),
            thread=arguments.thread,
        )
    )
