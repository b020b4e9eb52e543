"""Task that validates a raw snapshot into the clean zone."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from sales_etl.errors import LakeError
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import find_snapshot
from sales_etl.transform import DEFAULT_CHUNK_RECORDS, transform_snapshot


@task(
    name="transform-sales",
    description="Validate and type a raw snapshot in bounded chunks; keep every reject.",
    tags=["etl", "transform"],
    timeout_seconds=3600,
    # The clean zone itself is the cache: a clean snapshot built from this raw one is reused.
    cache_policy=NO_CACHE,
)
def transform_sales(
    lake: LakeConfig, day: date, snapshot_id: str, chunk_records: int = DEFAULT_CHUNK_RECORDS
) -> dict[str, Any]:
    """Build (or reuse) the clean snapshot of raw snapshot ``snapshot_id``; returns its manifest."""
    logger = get_run_logger()
    store = open_lake(lake)
    try:
        raw = find_snapshot(store, "raw", day, snapshot_id)
        if raw is None:
            raise LakeError(f"raw snapshot {snapshot_id} of {day} is not in the lake")
        clean = transform_snapshot(store, raw, chunk_records=chunk_records)
        logger.info(
            "Validated %d records: %d clean, %d rejected %s",
            clean.manifest["records"],
            clean.manifest["clean"],
            clean.manifest["rejected"],
            clean.manifest["by_reason"],
        )
        return dict(clean.manifest)
    finally:
        store.close()
