"""With an explicit endpoint, botocore gets S3's endpoint data alone (bot/s3_data).

The clients built on it must be the clients botocore builds on its whole table: same
endpoint, region, partition and signatures, in each of AWS's partitions and in a region
name that is no AWS region at all (MinIO's own).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiobotocore.session import get_session

from bot.storage import S3_CLIENT_CONFIG, S3_ONLY_DATA_PATH, S3Storage, s3_session

KEY = "sessions/csv-summary-ab12c/report/a file (1).txt"


def _date(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Date"][0]


@pytest.mark.parametrize("endpoint", ["http://minio.argo.svc:9000/", "https://gw.example.com/s3"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1", "r1"])
async def test_a_client_on_s3_data_alone_is_the_client_of_the_whole_table(
    endpoint: str, region: str
) -> None:
    store = S3Storage(
        bucket="artifacts", endpoint_url=endpoint, access_key="AKIA", secret_key="x", region=region
    )
    await store.open()
    whole_table = get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="AKIA",
        aws_secret_access_key="x",
        region_name=region,
        config=S3_CLIENT_CONFIG,
    )
    try:
        async with whole_table as reference:
            for meta in ("endpoint_url", "region_name", "partition"):
                assert getattr(store.client.meta, meta) == getattr(reference.meta, meta), meta
            params = {"Bucket": "artifacts", "Key": KEY}
            for _ in range(5):
                ours = await store.client.generate_presigned_url("get_object", Params=params)
                theirs = await reference.generate_presigned_url("get_object", Params=params)
                if _date(ours) == _date(theirs):
                    break
    finally:
        await store.close()
    assert ours == theirs


def test_the_s3_table_is_loaded_for_an_explicit_endpoint_and_the_whole_one_for_aws() -> None:
    loader = s3_session("http://minio.argo.svc:9000/").get_component("data_loader")
    table, path = loader.load_data_with_path("endpoints")
    assert Path(path).parent == S3_ONLY_DATA_PATH
    assert all(set(partition["services"]) == {"s3"} for partition in table["partitions"])
    assert {p["partition"] for p in table["partitions"]} >= {"aws", "aws-cn", "aws-us-gov"}

    loader = s3_session(None).get_component("data_loader")
    table, path = loader.load_data_with_path("endpoints")
    assert loader.is_builtin_path(path)
    assert len(table["partitions"][0]["services"]) > 100
