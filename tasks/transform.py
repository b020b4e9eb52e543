"""Tasks that validate a raw snapshot into the clean zone, one raw part per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sales_etl import transform
from sales_etl.errors import LakeError
from sales_etl.lake import Lake, open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import CleanManifest, CleanParts, SnapshotRef, find_snapshot
from sales_etl.transform import DEFAULT_CHUNK_RECORDS, RawPart


@dataclass(frozen=True)
class TransformPlan:
    """What transforming a raw snapshot takes: nothing (``reused``) or these parts."""

    day: date
    snapshot_id: str
    parts: tuple[RawPart, ...]
    reused: CleanManifest | None = None


@task(
    name="plan-transform",
    description="Reuse the clean snapshot of a raw snapshot, or list its parts to transform.",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)
def plan_transform(lake: LakeConfig, day: date, snapshot_id: str) -> TransformPlan:
    """The parts of raw snapshot ``snapshot_id`` with their record offsets (or the clean
    snapshot already built from it)."""
    store = open_lake(lake)
    try:
        raw = _raw_snapshot(store, day, snapshot_id)
        existing = transform.reusable_clean_snapshot(store, raw)
        if existing is not None:
            get_run_logger().info("Clean snapshot %s already built: reused", snapshot_id)
            return TransformPlan(day, snapshot_id, (), CleanManifest.from_ref(existing))
        return TransformPlan(day, snapshot_id, tuple(transform.plan_parts(store, raw)))
    finally:
        store.close()


@task(
    name="transform-part",
    description="Validate one raw part into clean and rejected Parquet parts.",
    # A lost worker, a lake hiccup: the part is deterministic, so running it again is safe.
    # No timeout: on a Dask worker or in a thread Prefect could not interrupt the part anyway.
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)
def transform_part(
    lake: LakeConfig, part: RawPart, chunk_records: int = DEFAULT_CHUNK_RECORDS
) -> CleanParts:
    """Transform raw part ``part``; returns the clean parts it wrote and their counts."""
    store = open_lake(lake)
    try:
        written = transform.transform_part(store, part, chunk_records)
    finally:
        store.close()
    get_run_logger().info(
        "Raw part %d (records %d..%d): %d clean, %d rejected",
        part.number,
        part.first_index,
        part.first_index + part.records - 1,
        written.clean,
        written.rejected,
    )
    return written


@task(
    name="commit-clean-snapshot",
    description="Publish the clean snapshot's manifest once every part is written.",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)
def commit_clean_snapshot(
    lake: LakeConfig, day: date, snapshot_id: str, parts: Sequence[CleanParts]
) -> CleanManifest:
    """Commit the clean snapshot of ``snapshot_id`` from its parts, in raw part order."""
    store = open_lake(lake)
    try:
        raw = _raw_snapshot(store, day, snapshot_id)
        clean = CleanManifest.from_ref(transform.commit_clean_snapshot(store, raw, parts))
    finally:
        store.close()
    _log_counts(clean)
    return clean


@task(
    name="transform-sales",
    description="Validate and type a raw snapshot in bounded chunks, in one task; keep rejects.",
    timeout_seconds=3600,
    # The clean zone itself is the cache: a clean snapshot built from this raw one is reused.
    cache_policy=NO_CACHE,
)
def transform_sales(
    lake: LakeConfig, day: date, snapshot_id: str, chunk_records: int = DEFAULT_CHUNK_RECORDS
) -> CleanManifest:
    """Build (or reuse) the clean snapshot of raw snapshot ``snapshot_id`` in this one task.

    The same snapshot as the flow's mapped ``transform-part`` tasks; for callers without a
    flow's task runner.
    """
    store = open_lake(lake)
    try:
        raw = _raw_snapshot(store, day, snapshot_id)
        clean = CleanManifest.from_ref(
            transform.transform_snapshot(store, raw, chunk_records=chunk_records)
        )
    finally:
        store.close()
    _log_counts(clean)
    return clean


def _raw_snapshot(store: Lake, day: date, snapshot_id: str) -> SnapshotRef:
    raw = find_snapshot(store, "raw", day, snapshot_id)
    if raw is None:
        raise LakeError(f"raw snapshot {snapshot_id} of {day} is not in the lake")
    return raw


def _log_counts(clean: CleanManifest) -> None:
    get_run_logger().info(
        "Validated %d records: %d clean, %d rejected %s",
        clean.records,
        clean.clean,
        clean.rejected,
        dict(clean.by_reason),
    )
