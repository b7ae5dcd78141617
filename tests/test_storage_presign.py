"""Presigned links are signed locally with botocore's SigV4 query signer.

They must be exactly the links the aiobotocore client itself would give, for awkward keys,
other buckets and AWS's own endpoints, and open the object on the S3 stand-in.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.storage import S3Storage

KEYS = [
    "sessions/csv-summary-ab12c/report/out.txt",
    "sessions/run/step/a file (1) + ümlaut ~!*'.csv",
    "run/deep/er/path/x%2Fy.txt",
]


async def _same_second(storage: S3Storage, key: str, bucket: str | None) -> tuple[str, str]:
    """Ours and the client's link for the same key, signed within the same second."""
    for _ in range(5):
        ours = storage.presigned_get_url(key, 3600, bucket)
        theirs = await storage.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket or storage.bucket, "Key": key}, ExpiresIn=3600
        )
        if _query(ours)["X-Amz-Date"] == _query(theirs)["X-Amz-Date"]:
            return ours, theirs
    raise AssertionError("could not sign both links within one second")


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("bucket", [None, "other-bucket"])
async def test_links_are_the_clients_own(storage: S3Storage, key: str, bucket: str | None) -> None:
    ours, theirs = await _same_second(storage, key, bucket)
    assert ours == theirs
    assert _query(ours)["X-Amz-Expires"] == "3600"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://minio.argo.svc:9000/",  # how the settings hand over a URL without a path
        "http://minio.argo.svc:9000",
        "https://gateway.example.com/s3/",
        "https://gateway.example.com/s3",
    ],
)
async def test_links_for_every_form_of_endpoint_are_the_clients_own(endpoint: str) -> None:
    store = S3Storage(
        bucket="artifacts", endpoint_url=endpoint, access_key="a", secret_key="b", region="r1"
    )
    await store.open()
    try:
        ours, theirs = await _same_second(store, KEYS[0], None)
    finally:
        await store.close()
    assert ours == theirs
    assert "//artifacts/" not in ours


@pytest.mark.parametrize(
    ("region", "host"),
    [("eu-west-1", "s3.eu-west-1.amazonaws.com"), ("us-east-1", "s3.amazonaws.com")],
)
async def test_links_for_aws_endpoints_are_the_clients_own(region: str, host: str) -> None:
    store = S3Storage(
        bucket="artifacts", endpoint_url=None, access_key="AKIA", secret_key="x", region=region
    )
    await store.open()
    try:
        ours, theirs = await _same_second(store, KEYS[1], None)
    finally:
        await store.close()
    assert ours == theirs
    assert ours.startswith(f"https://{host}/artifacts/sessions/run/step/")


async def test_a_link_opens_the_object(storage: S3Storage) -> None:
    # (moto does not check signatures: the equality with the client's links above is what
    # shows they are right.)
    key = KEYS[1]
    await storage.client.put_object(Bucket=storage.bucket, Key=key, Body=b"the bytes")
    url = storage.presigned_get_url(key, 60)
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert await response.read() == b"the bytes"
