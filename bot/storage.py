"""S3 / MinIO through aiobotocore: streamed uploads, object listings and presigned links."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Iterable
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

# S3 parts are 5 MiB to 5 GiB (only the last may be smaller). The minimum keeps memory lowest
# (benchmarks/file_relay.py: half the RSS of 8 MiB parts for ~2% less throughput) and allows
# objects up to 48 GiB within the 10,000-part limit; callers may pass larger parts.
PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


class StorageError(Exception):
    """S3 could not be reached or refused the request."""


class S3Storage:
    """One bucket on one S3-compatible endpoint."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        access_key: str,
        secret_key: str,
        region: str,
    ) -> None:
        self.bucket = bucket
        self._endpoint_url = endpoint_url
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._exit_stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        session = get_session()
        self._client = await self._exit_stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self._endpoint_url,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                region_name=self._region,
                config=config,
            )
        )

    async def close(self) -> None:
        await self._exit_stack.aclose()
        self._client = None

    @property
    def client(self) -> Any:
        """The open aiobotocore client, for metrics (its call events) and `argo-chatops check`."""
        if self._client is None:
            raise RuntimeError("S3Storage is not open")
        return self._client

    async def object_sizes(self, prefix: str, bucket: str | None = None) -> dict[str, int]:
        """Key → size of every object under `prefix`: one ListObjectsV2 per 1,000 keys.

        What a run's artifacts cost to size: one request per run instead of a HEAD each.
        """
        sizes: dict[str, int] = {}
        params: dict[str, Any] = {"Bucket": bucket or self.bucket, "Prefix": prefix}
        try:
            while True:
                page = await self._client.list_objects_v2(**params)
                for item in page.get("Contents") or []:
                    sizes[str(item["Key"])] = int(item["Size"])
                if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                    return sizes
                params["ContinuationToken"] = page["NextContinuationToken"]
        except ClientError as error:
            raise StorageError(f"S3 refused to list {prefix}: {_code(error)}") from error
        except BotoCoreError as error:
            raise StorageError(f"S3 unreachable: {error.__class__.__name__}") from error

    async def upload_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = PART_SIZE,
    ) -> int:
        """Stream bytes into one object with bounded memory; returns the number of bytes.

        Up to `part_size` it is one PUT. Beyond, a multipart upload holds at most one part in
        memory while the previous one is sent, and is aborted if anything fails (the source,
        S3, cancellation): abandoned parts are invisible in listings but still cost storage.
        Errors raised by `chunks` propagate unchanged; S3 errors become StorageError.
        """
        extra = {"ContentType": content_type} if content_type else {}
        pending: list[bytes] = []  # chunks of the next part, joined once (no growing copy)
        buffered = 0
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[dict[str, Any]] | None = None
        try:
            async for chunk in chunks:
                pending.append(chunk)
                buffered += len(chunk)
                total += len(chunk)
                if buffered < part_size:
                    continue
                if upload_id is None:
                    created = await self._client.create_multipart_upload(
                        Bucket=self.bucket, Key=key, **extra
                    )
                    upload_id = str(created["UploadId"])
                if in_flight is not None:
                    parts.append(await in_flight)
                body, pending, buffered = b"".join(pending), [], 0
                in_flight = asyncio.ensure_future(
                    self._upload_part(key, upload_id, len(parts) + 1, body)
                )
            if upload_id is None:
                await self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=b"".join(pending), **extra
                )
                return total
            if in_flight is not None:
                parts.append(await in_flight)
                in_flight = None
            if pending:
                body = b"".join(pending)
                parts.append(await self._upload_part(key, upload_id, len(parts) + 1, body))
            await self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return total
        except BaseException as error:
            if in_flight is not None:
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
            if upload_id is not None:
                await asyncio.shield(self._abort(key, upload_id))
            if isinstance(error, ClientError):
                raise StorageError(f"S3 refused the upload of {key}: {_code(error)}") from error
            if isinstance(error, BotoCoreError):
                raise StorageError(f"S3 unreachable: {error.__class__.__name__}") from error
            raise

    async def _upload_part(
        self, key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        response = await self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except (ClientError, BotoCoreError):
            logger.exception("could not abort the multipart upload of %s", key)

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete objects of this bucket (missing ones are no error)."""
        objects = [{"Key": key} for key in keys]
        if not objects:
            return
        try:
            await self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"S3 refused to delete {len(objects)} object(s)") from error

    async def presigned_get_url(self, key: str, expires_in: int, bucket: str | None = None) -> str:
        """A link anyone can open until it expires; signing is local, no request is sent."""
        return await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket or self.bucket, "Key": key},
            ExpiresIn=expires_in,
        )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "error"))
