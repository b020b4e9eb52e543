"""Task that loads a clean snapshot into the warehouse, idempotently, in one transaction."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sqlalchemy.exc import DBAPIError

from sales_etl.errors import LakeError, WarehouseError
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import find_snapshot, iter_tables
from sales_etl.warehouse import (
    create_warehouse_engine,
    describe_engine,
    ensure_tables,
    load_day,
    tables_for,
)


@task(
    name="load-sales",
    description="Upsert a day's clean sales and replace its rejects in the warehouse.",
    tags=["etl", "load"],
    retries=2,
    retry_delay_seconds=[5, 20],
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def load_sales(
    warehouse: WarehouseConfig, lake: LakeConfig, day: date, snapshot_id: str, run_id: str
) -> dict[str, Any]:
    """Load clean snapshot ``snapshot_id`` of ``day``; returns the load's counts."""
    logger = get_run_logger()
    store = open_lake(lake)
    engine = create_warehouse_engine(warehouse)
    try:
        clean = find_snapshot(store, "clean", day, snapshot_id)
        if clean is None:
            raise LakeError(f"clean snapshot {snapshot_id} of {day} is not in the lake")
        tables = tables_for(warehouse)
        target = describe_engine(engine)
        try:
            ensure_tables(engine, tables)
            stats = load_day(
                engine,
                tables,
                day,
                run_id,
                iter_tables(store, clean.manifest["sales_parts"]),
                iter_tables(store, clean.manifest["rejected_parts"]),
                loaded_at=datetime.now(UTC),
            )
        except DBAPIError as exc:
            # The driver's text names host and database, never the password (hide_parameters).
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise WarehouseError(f"loading {day} into {target} failed: {reason}") from None
        logger.info(
            "Loaded %s into %s: %d inserted, %d updated, %d unchanged, %d rejects kept",
            day,
            target,
            stats.inserted,
            stats.updated,
            stats.unchanged,
            stats.rejected,
        )
        return {**asdict(stats), "warehouse": target, "table": tables.sales.fullname}
    finally:
        engine.dispose()
        store.close()
