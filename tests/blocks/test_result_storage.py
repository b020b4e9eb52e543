"""Prefect's results beside an S3 lake (moto server): cached extracts outlive the pod."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

from blocks.result_storage import LakeResultStorage, results_in_lake
from devharness.demo_api import DemoData, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.settings import LakeConfig
from tasks.extract import extract_sales
from tests.utils import DAY


def result_keys(lake: LakeConfig) -> list[str]:
    bucket, _, prefix = lake.url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=lake.endpoint_url, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/prefect-results/")
    s3.close()
    return [item["Key"] for item in listed.get("Contents", [])]


def test_the_storage_reads_back_what_it_wrote_under_the_lake(s3_lake: LakeConfig) -> None:
    storage = LakeResultStorage.for_lake(s3_lake)
    storage.write_path("abc123", b"payload", _sync=True)
    assert storage.read_path("abc123", _sync=True) == b"payload"
    assert result_keys(s3_lake) == ["sales-lake/prefect-results/abc123"]


def test_a_local_lake_keeps_prefects_default_storage(local_lake: LakeConfig) -> None:
    assert results_in_lake(extract_sales, local_lake) is extract_sales


@pytest.mark.e2e
def test_a_fresh_pod_reuses_the_extract_cached_in_the_s3_lake(
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    s3_lake: LakeConfig,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", s3_lake.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(s3_lake.endpoint_url))
    with serve_demo_api(DemoData(rows_per_day=150)) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        # Each "pod" has its own, empty local result storage.
        with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "pod-1"}):
            assert daily_sales(run_date=DAY, return_state=True).is_completed()
        pages = api.pages_served
        assert pages > 0
        assert result_keys(s3_lake), "the extract's result is not in the lake's bucket"
        with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "pod-2"}):
            assert daily_sales(run_date=DAY, full_extract=True, return_state=True).is_completed()
        assert api.pages_served == pages  # cached extract read from S3: no page fetched again
    assert not (tmp_path / "pod-2").exists() or not any((tmp_path / "pod-2").iterdir())
