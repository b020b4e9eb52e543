"""Tasks that validate a raw snapshot into the clean zone, one raw part per task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sales_etl import transform
from sales_etl.assets import clean_metadata
from sales_etl.lake import open_lake
from sales_etl.part_workers import shared_part_workers, take_landed
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import (
    CleanManifest,
    CleanParts,
    RawManifest,
)
from sales_etl.transform import DEFAULT_CHUNK_RECORDS, RawPart
from tasks.assets import describe_materialized


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
def plan_transform(lake: LakeConfig, raw: RawManifest) -> TransformPlan:
    """The parts of raw snapshot ``raw`` with their record offsets (or the clean snapshot
    already built from it)."""
    with open_lake(lake) as store:
        existing = transform.reusable_clean_snapshot(store, raw.ref())
        if existing is not None:
            get_run_logger().info("Clean snapshot %s already built: reused", raw.snapshot_id)
            return TransformPlan(raw.day, raw.snapshot_id, (), CleanManifest.from_ref(existing))
        parts = tuple(transform.plan_parts(store, raw.ref()))
        return TransformPlan(raw.day, raw.snapshot_id, parts)


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
    lake: LakeConfig,
    part: RawPart,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    processes: int = 0,
) -> CleanParts:
    """Transform raw part ``part``; returns the clean parts it wrote and their counts.

    ``processes``: hand the work to this process's pool of that many part workers
    (:mod:`sales_etl.part_workers`) and wait for it; 0: do it here. A part the workers started
    when the extract landed it is not started again: the task waits for that result.
    """
    landed = take_landed(lake, part, chunk_records)
    if landed is not None:
        written = landed
    elif processes:
        written = shared_part_workers(processes).transform(lake, part, chunk_records)
    else:
        with open_lake(lake) as store:
            written = transform.transform_part(store, part, chunk_records)
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
    lake: LakeConfig, raw: RawManifest, parts: Sequence[CleanParts]
) -> CleanManifest:
    """Commit the clean snapshot of ``raw`` from its parts, in raw part order."""
    with open_lake(lake) as store:
        committed = transform.commit_clean_snapshot(store, raw.ref(), parts)
        clean = CleanManifest.from_ref(committed)
    _log_counts(clean)
    describe_materialized(clean_metadata(clean))  # the clean lake asset, when the flow binds it
    return clean


def _log_counts(clean: CleanManifest) -> None:
    get_run_logger().info(
        "Validated %d records: %d clean, %d rejected %s",
        clean.records,
        clean.clean,
        clean.rejected,
        dict(clean.by_reason),
    )
