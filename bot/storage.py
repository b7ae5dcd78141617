"""S3 / MinIO through aiobotocore: object metadata and presigned links."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)


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

    async def object_size(self, key: str, bucket: str | None = None) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        try:
            head = await self._client.head_object(Bucket=bucket or self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"S3 refused HEAD {key}: {_code(error)}") from error
        except BotoCoreError as error:
            raise StorageError(f"S3 unreachable: {error.__class__.__name__}") from error
        return int(head["ContentLength"])

    async def presigned_get_url(self, key: str, expires_in: int, bucket: str | None = None) -> str:
        """A link anyone can open until it expires; signing is local, no request is sent."""
        return await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket or self.bucket, "Key": key},
            ExpiresIn=expires_in,
        )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "error"))
