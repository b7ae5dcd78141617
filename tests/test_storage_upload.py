"""Streamed uploads store exactly the bytes given, whatever the chunks and part lengths.

The relay fills one part while the previous one is sent, in two buffers that are reused:
a longer part must leave nothing behind in the buffer the next, shorter one is written into.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from bot.storage import PART_SIZE, S3Storage
from stand_ins.s3_server import S3Server


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(
    "sizes",
    [
        # parts of 5 MiB + 900 KiB, + 10 B, + 700 KiB (in the first one's buffer), then 123 B
        [PART_SIZE + 900 * 1024, PART_SIZE + 10, 3, PART_SIZE - 3 + 700 * 1024, 123],
        [PART_SIZE, PART_SIZE],  # parts that end exactly at a chunk's end: no last part
        [1000, 24, 1],  # one PUT
        [],  # an empty file: one empty PUT
    ],
    ids=["uneven-parts", "exact-parts", "one-put", "empty"],
)
async def test_the_stored_object_is_the_bytes_streamed(
    storage: S3Storage, s3_server: S3Server, sizes: list[int]
) -> None:
    rng = random.Random(len(sizes))
    chunks = [rng.randbytes(size) for size in sizes]
    key = f"uploads/{len(sizes)}.bin"

    stored = await storage.upload_stream(key, _chunks(chunks), content_type="text/csv")

    assert stored == sum(sizes)
    assert await s3_server.read_object(key) == b"".join(chunks)
    assert await s3_server.list_multipart_uploads() == []
