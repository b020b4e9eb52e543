"""extract-sales with updated_since: incremental only where the server supports it."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from devharness.demo_api import DemoData, UpdatedSinceMode, serve_demo_api
from devharness.demo_days import DayMix, day_records, revision_time
from sales_etl import part_workers, snapshots, transform
from sales_etl.lake import LocalLake, open_lake
from sales_etl.settings import LakeConfig, SourceConfig
from sales_etl.snapshots import RawManifest
from tasks.extract import extract_sales, find_raw_snapshot
from tests.utils import DAY

MIX = DayMix(rows=500, reject_rate=0.1, duplicate_rate=0.05).with_change_rate(0.05)
SINCE = revision_time(DAY, 1)


def extract(
    lake: LakeConfig, mode: UpdatedSinceMode, updated_since: datetime | None
) -> tuple[RawManifest, RawManifest, list[str]]:
    with serve_demo_api(DemoData(mix=MIX, revision=1), updated_since=mode) as api:
        source = SourceConfig(base_url=api.url, page_size=20)
        with disable_run_logger():
            info = extract_sales.fn(source, lake, DAY, "demo|x", lake.url, updated_since)
            manifest = find_raw_snapshot.fn(lake, DAY, info.snapshot_id)
        assert manifest is not None
        return info, manifest, list(api.sales_requests)


def test_incremental_extract_when_the_server_supports_it(local_lake: LakeConfig) -> None:
    info, manifest, paths = extract(local_lake, "filter", SINCE)
    delta = len(day_records(MIX, DAY.isoformat(), 1, SINCE))
    assert info.records == manifest.records == delta
    assert info.mode == manifest.mode == "incremental"
    assert info.updated_since == manifest.updated_since == SINCE.isoformat()
    assert manifest.source_record_count == len(day_records(MIX, DAY.isoformat(), 1))
    assert len(paths) == -(-delta // 20) and all("updated_since=" in p for p in paths)


@pytest.mark.parametrize("mode", ["ignore", "ignore_unreported", "reject"])
def test_full_extract_when_the_server_does_not_support_it(
    local_lake: LakeConfig, mode: UpdatedSinceMode
) -> None:
    info, manifest, paths = extract(local_lake, mode, SINCE)
    full = len(day_records(MIX, DAY.isoformat(), 1))
    assert info.records == manifest.records == full
    assert manifest.mode == "full" and manifest.updated_since is None
    assert not any("updated_since=" in p for p in paths)  # sent only when supported
    assert manifest.requests == len(paths) + 1  # the pages and one status


def test_full_extract_without_updated_since(local_lake: LakeConfig) -> None:
    info, manifest, paths = extract(local_lake, "filter", None)
    assert info.records == len(day_records(MIX, DAY.isoformat(), 1))
    assert manifest.mode == "full" and manifest.updated_since is None
    assert not any("updated_since=" in p for p in paths)


def test_updated_since_is_part_of_the_cache_key() -> None:
    inputs = next(p for p in extract_sales.cache_policy.policies if hasattr(p, "exclude"))

    def key(updated_since: datetime | None) -> str | None:
        arguments = {"day": DAY, "source_state": "demo|1", "lake_url": "lake"}
        return inputs.compute_key(
            task_ctx=None,  # type: ignore[arg-type]
            inputs={**arguments, "source": None, "lake": None, "updated_since": updated_since},
            flow_parameters={},
        )

    assert len({key(None), key(SINCE), key(revision_time(DAY, 2))}) == 3
    assert key(SINCE) == key(revision_time(DAY, 1))


def test_with_part_workers_running_each_part_is_transformed_as_it_lands(
    local_lake: LakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "RAW_PART_BYTES", 4_000)  # a part every few pages
    part_workers.close_shared_part_workers()
    part_workers.shared_part_workers(2)
    try:
        info, manifest, _ = extract(local_lake, "filter", None)
        parts = transform.plan_parts(open_lake(local_lake), manifest.ref())
        assert len(parts) > 3
        copy = tmp_path / "copy"
        prefix = snapshots.snapshot_prefix("raw", DAY, info.snapshot_id)
        shutil.copytree(Path(local_lake.url) / prefix, copy / prefix)
        for part in parts:  # what the transform-part tasks take, as they would make it
            taken = part_workers.take_landed(local_lake, part, transform.DEFAULT_CHUNK_RECORDS)
            assert taken == transform.transform_part(LocalLake(copy), part)
        assert lake_files(local_lake.url, "clean") == lake_files(copy, "clean")
    finally:
        part_workers.close_shared_part_workers()


def test_without_part_workers_nothing_is_transformed_during_the_extract(
    local_lake: LakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "RAW_PART_BYTES", 4_000)
    part_workers.close_shared_part_workers()
    _, manifest, _ = extract(local_lake, "filter", None)
    parts = transform.plan_parts(open_lake(local_lake), manifest.ref())
    assert len(parts) > 3
    assert not (Path(local_lake.url) / "clean").exists()
    assert part_workers.take_landed(local_lake, parts[0], transform.DEFAULT_CHUNK_RECORDS) is None


def test_a_whole_day_ends_in_smaller_parts(
    local_lake: LakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extract tells the writer the day's size: the last parts are transformed in a
    fraction of a full part's time while the extract ends."""
    monkeypatch.setattr(snapshots, "RAW_PART_BYTES", 30_000)  # about six pages a part
    part_workers.close_shared_part_workers()
    _, manifest, _ = extract(local_lake, "filter", None)
    records = [part.records for part in transform.plan_parts(open_lake(local_lake), manifest.ref())]
    assert sum(records) == manifest.records
    assert records[-2] < records[0] / 2


def lake_files(root: Path | str, zone: str) -> dict[str, bytes]:
    folder = Path(root) / zone
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}
