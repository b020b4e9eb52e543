"""Tasks of lake housekeeping: read what the ledger needs kept, tidy one day of the lake."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sqlalchemy.exc import DBAPIError

from sales_etl.housekeeping import DayHousekeeping, lake_days, tidy_day
from sales_etl.lake import open_lake
from sales_etl.ledger import newest_loaded_snapshots
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.warehouse import read_failed, tables_for, warehouse_engine


@task(
    name="read-newest-loads",
    description="The snapshot of each day's newest successful load (the load ledger).",
    retries=2,
    retry_delay_seconds=[5, 20],
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def read_newest_loads(
    warehouse: WarehouseConfig, days: Sequence[date] | None = None
) -> dict[date, str]:
    """Per day (of ``days``; None: all) the snapshot id of its newest ``loaded`` ledger row."""
    with warehouse_engine(warehouse) as engine:
        try:
            return newest_loaded_snapshots(engine, tables_for(warehouse), days)
        except DBAPIError as exc:
            raise read_failed("the load ledger", engine, exc) from None


@task(
    name="list-lake-days",
    description="The business days that have snapshot folders in the lake.",
    retries=2,
    retry_delay_seconds=[2, 10],
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def list_lake_days(lake: LakeConfig) -> list[date]:
    with open_lake(lake) as store:
        return sorted(lake_days(store))


@task(
    name="tidy-lake-day",
    description="Compact a day's replay chain and remove the snapshots it no longer needs.",
    retries=2,
    retry_delay_seconds=[5, 20],
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def tidy_lake_day(
    lake: LakeConfig, day: date, ledger_newest: str | None, dry_run: bool = False
) -> DayHousekeeping:
    """Housekeeping of ``day`` (``sales_etl.housekeeping.tidy_day``), keeping the newest
    ``lake.keep_snapshots`` raw snapshots and snapshot ``ledger_newest``; a dry run changes
    nothing and says what it would remove."""
    with open_lake(lake) as store:
        done = tidy_day(store, day, lake.keep_snapshots, ledger_newest, dry_run=dry_run)
    get_run_logger().info("Lake housekeeping of %s", done.describe())
    return done
