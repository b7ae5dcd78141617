"""S3 for tests and the demo: moto's threaded server on 127.0.0.1 with an OS-chosen port.

The bot talks to S3/MinIO through aiobotocore over HTTP, so the stand-in is a real S3 endpoint
rather than an in-process mock: the same code path as production, and nothing patched.

Credentials, region and config files are set explicitly (never read from ``AWS_*`` variables
or ``~/.aws``), so a developer's environment cannot change what the tests see.

moto keeps its data in process-wide backends: every ``S3Server`` in one process serves the
same buckets. ``start()`` and ``stop()`` therefore empty this server's bucket, so one test's
objects never leak into the next.
"""

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import botocore.session
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

__all__ = ["S3Config", "S3Server", "isolated_session_vars"]

_ALREADY_THERE = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach an S3 endpoint; the single definition shared by all stand-ins."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``session.create_client("s3", **kwargs)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(s3={"addressing_style": "path"}),
        }


def isolated_session_vars() -> dict[str, tuple[Any, Any, Any, Any]]:
    """botocore session variables that ignore AWS_PROFILE and the user's config files."""
    return {
        "profile": (None, None, None, None),
        "config_file": (None, None, os.devnull, None),
        "credentials_file": (None, None, os.devnull, None),
    }


class S3Server:
    """One moto S3 endpoint with one bucket; ``start()`` returns the settings to reach it."""

    def __init__(self, bucket: str = "argo-artifacts") -> None:
        self.bucket = bucket
        self._server: ThreadedMotoServer | None = None
        self._config: S3Config | None = None

    @property
    def config(self) -> S3Config:
        if self._config is None:
            raise RuntimeError("S3Server is not started")
        return self._config

    def start(self) -> S3Config:
        """Start the server thread, create (or empty) the bucket and return its config."""
        if self._server is not None:
            raise RuntimeError("S3Server is already started")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        host, port = server.get_host_and_port()
        self._server = server
        self._config = S3Config(
            endpoint_url=f"http://{host}:{port}",
            access_key="testing",
            secret_key="testing",
            bucket=self.bucket,
        )
        client = self._sync_client()
        try:
            try:
                client.create_bucket(Bucket=self.bucket)
            except ClientError as err:
                if err.response["Error"]["Code"] not in _ALREADY_THERE:
                    raise
            # A bucket left by an earlier server in this process may still hold objects.
            _empty_bucket(client, self.bucket)
        finally:
            client.close()
        return self._config

    def stop(self) -> None:
        """Empty the bucket (moto's state outlives the server) and stop the server thread."""
        if self._server is None:
            return
        client = self._sync_client()
        try:
            _empty_bucket(client, self.bucket)
        finally:
            client.close()
            self._server.stop()
            self._server = None

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """An aiobotocore S3 client for this server, for assertions and seeding."""
        session = AioSession(session_vars=isolated_session_vars())
        async with session.create_client("s3", **self.config.client_kwargs()) as s3:
            yield s3

    async def read_object(self, key: str) -> bytes:
        async with self.client() as s3:
            response = await s3.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                return await body.read()

    async def put_object(self, key: str, body: bytes) -> None:
        async with self.client() as s3:
            await s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    async def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        async with self.client() as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    async def list_multipart_uploads(self) -> list[dict[str, Any]]:
        """Unfinished multipart uploads (Key, UploadId, ...): a clean upload path leaves none."""
        async with self.client() as s3:
            response = await s3.list_multipart_uploads(Bucket=self.bucket)
        return list(response.get("Uploads", []))

    def _sync_client(self) -> Any:
        session = botocore.session.Session(session_vars=isolated_session_vars())
        return session.create_client("s3", **self.config.client_kwargs())


def _empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object and abort every multipart upload, keeping the bucket."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
