"""Start-up to ready: `argo-chatops serve` until `/readyz` answers 200, beside `import aiohttp`.

python -m benchmarks.startup
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ServiceProcess, StandIns


def import_aiohttp_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import aiohttp"], check=True)
    return time.perf_counter() - started


async def main(repeats: int = 5) -> dict[str, float]:
    stand_ins = StandIns()
    config = stand_ins.start()
    service_times: list[float] = []
    try:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as state:
                service = ServiceProcess(config, database_url=f"sqlite:///{Path(state) / 's.db'}")
                service_times.append(await service.start())
                service.stop()
    finally:
        stand_ins.stop()
    floor = [import_aiohttp_seconds() for _ in range(repeats)]
    return {
        "serve_to_ready_s": statistics.median(service_times),
        "import_aiohttp_s": statistics.median(floor),
    }


if __name__ == "__main__":
    result = asyncio.run(main())
    print(f"argo-chatops serve → /readyz 200: {result['serve_to_ready_s']:.2f} s (median of 5)")
    print(f"python -c 'import aiohttp':       {result['import_aiohttp_s']:.2f} s")
