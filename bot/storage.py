"""S3 / MinIO through aiobotocore: streamed uploads and presigned links."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

# S3 parts are 5 MiB to 5 GiB (only the last may be smaller). The minimum keeps memory lowest
# (benchmarks/file_relay.py: half the RSS of 8 MiB parts for ~2% less throughput) and allows
# objects up to 48 GiB within the 10,000-part limit; callers may pass larger parts.
PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000

# botocore resolves a client's endpoint with endpoints.json: every AWS service in every
# partition, ~7 MB of Python objects kept for the life of the process and ~40 ms to parse.
# With an explicit endpoint (MinIO) the URL is given, and the table only supplies S3's
# signing defaults, so botocore is handed the same table with S3 alone (botocore's own
# endpoints.json with every other service removed). Without an endpoint (AWS itself), the
# whole table resolves the URL.
S3_ONLY_DATA_PATH = Path(__file__).with_name("s3_data")

S3_CLIENT_CONFIG = AioConfig(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},
)


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
        session = s3_session(self._endpoint_url)
        self._client = await self._exit_stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self._endpoint_url,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                region_name=self._region,
                config=S3_CLIENT_CONFIG,
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
        # The part being filled and the one being sent, swapped and reused (RSS): each part is
        # written chunk by chunk and sent as is, where joining bytes would copy it and aiohttp
        # copies the BytesIO botocore wraps around bytes once more; reuse spares the allocator
        # a fresh 5 MiB block per part, which it would keep resident and fragmented.
        part, spare = io.BytesIO(), io.BytesIO()
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[dict[str, Any]] | None = None
        try:
            async for chunk in chunks:
                part.write(chunk)
                total += len(chunk)
                if part.tell() < part_size:
                    continue
                if upload_id is None:
                    created = await self._client.create_multipart_upload(
                        Bucket=self.bucket, Key=key, **extra
                    )
                    upload_id = str(created["UploadId"])
                if in_flight is not None:
                    parts.append(await in_flight)
                in_flight = asyncio.ensure_future(
                    self._upload_part(key, upload_id, len(parts) + 1, part)
                )
                part, spare = spare, part  # the spare's upload is over (awaited above)
                part.seek(0)
            if upload_id is None:
                part.seek(0)
                await self._client.put_object(Bucket=self.bucket, Key=key, Body=part, **extra)
                return total
            if in_flight is not None:
                parts.append(await in_flight)
                in_flight = None
            if part.tell():
                parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
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
        self, key: str, upload_id: str, number: int, body: io.BytesIO
    ) -> dict[str, Any]:
        body.truncate()  # what a longer, earlier part left in the reused buffer
        body.seek(0)
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

    def presigned_get_url(self, key: str, expires_in: int, bucket: str | None = None) -> str:
        """A link anyone can open until it expires; signing is local, no request is sent.

        botocore's own SigV4 query signer, given the path-style URL the client would build:
        the same link as the client's `generate_presigned_url` (tests/test_storage_presign.py)
        at about half its CPU, which skips endpoint rules and event hooks per link.
        """
        path = f"/{quote(bucket or self.bucket)}/{quote(key, safe='/~')}"
        endpoint = self.client.meta.endpoint_url.rstrip("/")  # as given: may end in "/"
        request = AWSRequest(method="GET", url=endpoint + path)
        credentials = ReadOnlyCredentials(self._access_key, self._secret_key, None)
        S3SigV4QueryAuth(credentials, "s3", self._region, expires=expires_in).add_auth(request)
        return str(request.prepare().url)


def s3_session(endpoint_url: str | None) -> AioSession:
    """A botocore session that loads only the endpoint data the client will use."""
    session = get_session()
    if endpoint_url:
        session.set_config_variable("data_path", str(S3_ONLY_DATA_PATH))
    return session


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "error"))
