"""The floor of benchmarks/file_relay.py: a plain aiobotocore multipart upload, nothing else.

`python -m benchmarks.plain_upload ENDPOINT BUCKET SIZE PART_SIZE` uploads SIZE generated
bytes in PART_SIZE parts and prints one JSON line: seconds, idle and peak RSS (MB). It
imports only aiobotocore, so its RSS is the floor's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from aiobotocore.session import AioSession

MiB = 1024 * 1024


def generated(size: int) -> Iterator[bytes]:
    """`size` bytes of CSV-looking rows, one reused 1 MiB block at a time (flat memory)."""
    row = b"Lisbon,21.5,64\n"
    block = b"city,temperature,humidity\n" + row * ((MiB - 26) // len(row))
    block += b"#" * (MiB - len(block))
    sent = 0
    while sent < size:
        chunk = block[: min(MiB, size - sent)]
        sent += len(chunk)
        yield chunk


def rss_mb(field: str, pid: int | None = None) -> float:
    """`VmRSS` (now) or `VmHWM` (peak so far) of a process, in MB."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def upload(endpoint: str, bucket: str, key: str, size: int, part_size: int) -> None:
    session = AioSession(session_vars={"profile": (None, None, None, None)})
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    ) as s3:
        started = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        parts: list[dict[str, object]] = []
        buffer = bytearray()

        async def send(body: bytes) -> None:
            number = len(parts) + 1
            answer = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=started["UploadId"], PartNumber=number, Body=body
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        for chunk in generated(size):
            buffer += chunk
            if len(buffer) >= part_size:
                await send(bytes(buffer))
                buffer = bytearray()
        if buffer:
            await send(bytes(buffer))
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=started["UploadId"], MultipartUpload={"Parts": parts}
        )


def main(endpoint: str, bucket: str, size: int, part_size: int) -> int:
    idle = rss_mb("VmRSS")
    started = time.perf_counter()
    asyncio.run(upload(endpoint, bucket, f"plain/{size}.csv", size, part_size))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "idle_rss_mb": idle, "peak_rss_mb": rss_mb("VmHWM")}))
    return 0


if __name__ == "__main__":
    endpoint, bucket, size, part_size = sys.argv[1:5]
    raise SystemExit(main(endpoint, bucket, int(size), int(part_size)))
