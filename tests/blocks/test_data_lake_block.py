"""DataLakeBlock on a local folder and on a real S3 endpoint (moto server)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from blocks import DataLakeBlock
from sales_etl.errors import LakeError
from sales_etl.lake import LocalLake, S3Lake
from sales_etl.schema import CLEAN_SCHEMA, REJECTED_SCHEMA
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import CleanManifest, new_snapshot_id
from sales_etl.transform import clean_table
from sales_etl.validate import validate_records
from tests.utils import DAY, clean_sales, demo_records


@pytest.fixture(params=["local", "s3", "s3-default-chain"])
def lake_block(request: pytest.FixtureRequest, tmp_path: Path) -> DataLakeBlock:
    if request.param == "local":
        return DataLakeBlock(path=str(tmp_path / "lake"))
    s3: LakeConfig = request.getfixturevalue("s3_lake")
    bucket, _, prefix = s3.url.removeprefix("s3://").partition("/")
    credentials = (
        {}
        if request.param == "s3-default-chain"  # the s3_lake fixture sets AWS_* variables
        else {
            "aws_access_key_id": SecretStr("testing"),
            "aws_secret_access_key": SecretStr("testing"),
        }
    )
    return DataLakeBlock(
        bucket=bucket,
        prefix=prefix,
        region="us-east-1",
        endpoint_url=s3.endpoint_url,
        **credentials,
    )


def snapshot_at(hour: int) -> str:
    return new_snapshot_id(datetime(2026, 11, 24, hour, tzinfo=UTC))


def test_write_read_and_list_snapshots_newest_first(lake_block: DataLakeBlock) -> None:
    older, newer = snapshot_at(1), snapshot_at(2)
    first = lake_block.write_snapshot(DAY, clean_sales(30), snapshot_id=older)
    second = lake_block.write_snapshot(DAY, clean_sales(12, first=100), snapshot_id=newer)
    lake_block.write_snapshot(date(2026, 11, 22), clean_sales(3), snapshot_id=snapshot_at(3))

    refs = lake_block.list_snapshots(DAY)
    assert [r.snapshot_id for r in refs] == [newer, older]
    assert refs[0].manifest == second.manifest
    assert (first.manifest["clean"], second.manifest["clean"]) == (30, 12)

    newest = lake_block.read_snapshot(DAY)
    assert newest.schema == CLEAN_SCHEMA
    assert newest.equals(clean_table(clean_sales(12, first=100)))
    by_id = lake_block.read_snapshot(DAY, older)
    assert by_id.column("sale_id").to_pylist() == clean_sales(30)["sale_id"].tolist()
    rejected = lake_block.read_snapshot(DAY, older, part="rejected")
    assert (rejected.num_rows, rejected.schema) == (0, REJECTED_SCHEMA)
    assert lake_block.list_snapshots(DAY, zone="raw") == []


def test_a_written_snapshot_is_a_clean_snapshot_the_pipeline_reads(
    lake_block: DataLakeBlock,
) -> None:
    records = [*demo_records(3), {"sale_id": "no-fields"}]
    validated = validate_records(records, DAY)
    ref = lake_block.write_snapshot(DAY, validated.clean, validated.rejected, snapshot_at(1))
    manifest = CleanManifest.from_ref(ref)  # every field the load reads, by_reason included
    assert (manifest.records, manifest.clean, manifest.rejected) == (4, 3, 1)
    assert sum(manifest.by_reason.values()) == 1
    assert lake_block.read_snapshot(DAY, part="rejected").num_rows == 1


def test_block_opens_the_same_lake_implementation_as_the_pipeline(
    lake_block: DataLakeBlock,
) -> None:
    with lake_block.open() as store:
        assert isinstance(store, S3Lake if lake_block.bucket else LocalLake)
        store.put("probe/one.txt", b"1")
    with lake_block.open() as store:
        assert store.get("probe/one.txt") == b"1"


def test_reading_a_missing_snapshot_names_the_lake_and_day(lake_block: DataLakeBlock) -> None:
    where = lake_block.to_config().url if lake_block.bucket else str(Path(str(lake_block.path)))
    with pytest.raises(LakeError, match=r"clean zone of .* has no snapshot of 2026-11-23") as info:
        lake_block.read_snapshot(DAY)
    assert where in str(info.value)
    with pytest.raises(LakeError, match="has no snapshot 20261124T0100"):
        lake_block.read_snapshot(DAY, snapshot_at(1), zone="raw")


def test_s3_block_writes_under_its_prefix(s3_lake: LakeConfig) -> None:
    import boto3

    bucket, _, prefix = s3_lake.url.removeprefix("s3://").partition("/")
    block = DataLakeBlock(
        bucket=bucket, prefix=prefix, region="us-east-1", endpoint_url=s3_lake.endpoint_url
    )
    assert block.to_config() == s3_lake
    ref = block.write_snapshot(DAY, clean_sales(2), snapshot_id=snapshot_at(1))
    client = boto3.client("s3", endpoint_url=s3_lake.endpoint_url, region_name="us-east-1")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    client.close()
    base = f"{prefix}/clean/sales/date=2026-11-23/snapshot={ref.snapshot_id}/"
    assert keys == [base + "_manifest.json", base + "sales-00000.parquet"]


def test_config_round_trips_and_defaults() -> None:
    s3 = LakeConfig(
        url="s3://bucket/a/b",
        endpoint_url="http://127.0.0.1:9000",
        region="eu-west-1",
        access_key_id=SecretStr("id"),
        secret_access_key=SecretStr("secret"),
    )
    assert DataLakeBlock.from_config(s3).to_config() == s3
    local = LakeConfig(url="/srv/lake")
    assert DataLakeBlock.from_config(local).to_config() == local
    assert DataLakeBlock().to_config() == LakeConfig()
    assert DataLakeBlock(bucket="b").to_config().url == "s3://b"


def test_invalid_combinations_are_rejected() -> None:
    with pytest.raises(ValidationError, match="either path"):
        DataLakeBlock(path="/srv/lake", bucket="b")
    with pytest.raises(ValidationError, match="both AWS credentials"):
        DataLakeBlock(bucket="b", aws_access_key_id=SecretStr("id"))
