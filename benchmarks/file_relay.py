"""Relay a generated file from Slack into S3 through the service, beside a plain upload.

    python -m benchmarks.file_relay [--size-mib 1024]

Four processes, so nobody's event loop or memory is counted twice:
- this driver: the fake Slack serving the file as a stream (generated chunk by chunk, never
  held whole) and the Argo emulator (it records the Workflow; nothing is executed);
- moto's S3 server (`python -m moto.server`);
- `argo-chatops serve`, with a drop zone: the driver posts one signed `message`/`file_share`
  event, the service streams the file into S3 and creates the Workflow;
- the floor: a plain aiobotocore multipart upload of the same bytes in the same part size,
  from a process that imports nothing else (`benchmarks/plain_upload.py`).

Reported for both: seconds, MiB/s, RSS when idle and peak RSS (VmHWM). For the service the
time is end to end (event posted → Workflow created: download, SHA-256, upload, create).
The stored object's size and SHA-256 are checked against what was generated.

On the 2-CPU development VM (1 GiB, 5 MiB parts), for reference:

                                        seconds    MiB/s  idle RSS MB  peak RSS MB
    service: Slack → S3 → Workflow         23.3     43.9         80.2         95.9
    floor: plain aiobotocore upload        18.9     54.1         44.8         77.2

The relay adds ~15 MB to the service whatever the file size (the same at 64 MiB, 256 MiB and
1 GiB); the service's idle RSS is its libraries (aiohttp, botocore, Bolt, pydantic:
BENCHMARKS.md, rounds 5 and 6). About 10 s of either side's time is moto assembling the
parts (`CompleteMultipartUpload`), and the ratio moves between 0.75x and 1.1x from run to run
on the same build: `run_all` takes the median of several runs (BENCHMARKS.md, round 7).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError

from benchmarks.harness import ROOT, SIGNING_SECRET, ServiceProcess, free_port, peak_rss_mb
from benchmarks.plain_upload import MiB, generated, rss_mb
from bot.demo import schema_path, templates_path
from bot.storage import PART_SIZE
from stand_ins.argo_emulator import ArgoEmulator
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import isolated_session_vars
from stand_ins.slack_requests import JSON, event_callback, file_share_event, signed

BUCKET = "argo-artifacts"
CHANNEL = "C0BENCHDROP"
S3_KEYS = {"S3_ACCESS_KEY": "bench", "S3_SECRET_KEY": "bench", "S3_REGION": "us-east-1"}


def s3_client_kwargs(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": S3_KEYS["S3_ACCESS_KEY"],
        "aws_secret_access_key": S3_KEYS["S3_SECRET_KEY"],
        "region_name": S3_KEYS["S3_REGION"],
    }


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_for_s3(endpoint: str) -> None:
    session = AioSession(session_vars=isolated_session_vars())
    async with session.create_client("s3", **s3_client_kwargs(endpoint)) as s3:
        for _ in range(300):
            try:
                await s3.create_bucket(Bucket=BUCKET)
                return
            except (aiohttp.ClientError, OSError, BotoCoreError):  # not listening yet
                await asyncio.sleep(0.1)
    raise TimeoutError("moto did not start")


async def head(endpoint: str, key: str) -> int:
    session = AioSession(session_vars=isolated_session_vars())
    async with session.create_client("s3", **s3_client_kwargs(endpoint)) as s3:
        return int((await s3.head_object(Bucket=BUCKET, Key=key))["ContentLength"])


async def relay_through_service(size: int, endpoint: str, workdir: Path) -> dict[str, Any]:
    bot_token = "xoxb-bench-relay"
    slack = FakeSlack(bot_token=bot_token)
    argo = ArgoEmulator(token="bench-argo", schema_path=schema_path(), s3=None, auto_run=False)
    argo.load_templates(templates_path())
    await slack.start()
    await argo.start()
    routes = workdir / "routes.yaml"
    routes.write_text(f"drop_zones:\n  {CHANNEL}:\n    template: summarize-csv\n")
    service = ServiceProcess(
        stand_ins={
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": bot_token,
            "SLACK_FILE_HOSTS": slack.host,
            "ARGO_SERVER_URL": argo.url,
            "ARGO_TOKEN": "bench-argo",
            "S3_ENDPOINT_URL": endpoint,
            "S3_BUCKET": BUCKET,
            **S3_KEYS,
        },
        database_url=f"sqlite:///{workdir / 'state.db'}",
        extra_env={
            "ROUTES_FILE": str(routes),
            "MAX_UPLOAD_BYTES": str(size + MiB),
            "BENCH_VARIANTS": os.environ.get("BENCH_VARIANTS", ""),
        },
        module="benchmarks.variants",
        log_path=workdir / "service.log",
    )
    try:
        await service.start()
        file = slack.add_file_stream("big.csv", size, lambda: generated(size))
        message = slack.add_user_message(CHANNEL, "", files=[file])
        body = event_callback(file_share_event([file], channel=CHANNEL, ts=message.ts))
        idle = rss_mb("VmRSS", service.pid)
        started = time.perf_counter()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                service.url + "/slack/events",
                data=body,
                headers=signed(SIGNING_SECRET, body, content_type=JSON),
            ) as response,
        ):
            assert response.status == 200, await response.text()
        while not argo.created:
            if time.perf_counter() - started > 3600:
                raise TimeoutError(f"no workflow; see {service.log_path}")
            if any("Nothing was started" in (m.text or "") for m in slack.messages[CHANNEL]):
                raise RuntimeError(f"the relay failed: {slack.dump()}")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        peak = peak_rss_mb(service.pid)
        [manifest] = argo.created
        [artifact] = manifest["spec"]["arguments"]["artifacts"]
        status = json.dumps([m.blocks for m in slack.messages[CHANNEL]])
        return {
            "seconds": elapsed,
            "idle_rss_mb": idle,
            "peak_rss_mb": peak,
            "key": artifact["s3"]["key"],
            "status_message": status,
        }
    finally:
        service.stop()
        await argo.close()
        await slack.close()


def run_plain_upload(endpoint: str, size: int) -> dict[str, float]:
    """The floor, in a process of its own that imports only aiobotocore."""
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.plain_upload",
            endpoint,
            BUCKET,
            str(size),
            str(PART_SIZE),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


async def main(size: int) -> int:
    expected = hashlib.sha256()
    for chunk in generated(size):
        expected.update(chunk)
    moto, endpoint = start_moto()
    try:
        await wait_for_s3(endpoint)
        with tempfile.TemporaryDirectory(prefix="file-relay-") as workdir:
            relay = await relay_through_service(size, endpoint, Path(workdir))
        stored = await head(endpoint, relay["key"])
        floor = run_plain_upload(endpoint, size)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    assert stored == size, f"S3 holds {stored} bytes, expected {size}"
    assert expected.hexdigest()[:12] in relay["status_message"], "SHA-256 not as generated"

    mib = size / MiB
    print(f"file relay of {mib:.0f} MiB ({size} bytes), S3 part size {PART_SIZE // MiB} MiB")
    print(f"{'':34}{'seconds':>9}{'MiB/s':>9}{'idle RSS MB':>13}{'peak RSS MB':>13}")
    for label, row in (
        ("service: Slack → S3 → Workflow", relay),
        ("floor: plain aiobotocore upload", floor),
    ):
        print(
            f"{label:34}{row['seconds']:9.1f}{mib / row['seconds']:9.1f}"
            f"{row['idle_rss_mb']:13.1f}{row['peak_rss_mb']:13.1f}"
        )
    print(f"object size and SHA-256 ({expected.hexdigest()[:12]}…) match the generated bytes")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.file_relay", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.size_mib * MiB)))
