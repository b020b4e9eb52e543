"""Lake Housekeeping: compact and prune every day of the lake (``sales_etl.housekeeping``).

The daily flow tidies its own day after each successful load; this flow does the whole lake,
and is served as the deployment ``Lake Housekeeping/housekeeping`` (``deployments/serve.py``).
A thin CLI (``flows/cli.py``)::

    python -m flows.housekeeping --dry-run            # what it would remove, and the bytes freed
    python -m flows.housekeeping --keep 2             # keep 2 raw snapshots per day (default:
                                                      # LAKE_KEEP_SNAPSHOTS)
"""

from __future__ import annotations

# The documented command runs the CLI first thing (as flows/daily_sales.py does).
if __name__ == "__main__":
    from flows.cli import housekeeping_main

    raise SystemExit(housekeeping_main())

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from blocks import DataLakeBlock, WarehouseBlock
from flows.config import resolve_configs, warehouse_endpoint
from sales_etl.settings import load_settings
from tasks.housekeeping import list_lake_days, read_newest_loads, tidy_lake_day

FLOW_NAME = "Lake Housekeeping"


@flow(name=FLOW_NAME, description="Compact each day's snapshots and remove the ones not needed.")
def lake_housekeeping(
    keep: int | None = None,
    dry_run: bool = False,
    warehouse_block: WarehouseBlock | None = None,
    data_lake_block: DataLakeBlock | None = None,
) -> list[dict[str, Any]]:
    """Tidy every day of the lake: compact its replay chain, keep its newest ``keep`` raw
    snapshots and what the ledger and running loads need, remove the rest.

    Args:
        keep: raw snapshots kept per day; None: ``LAKE_KEEP_SNAPSHOTS`` (default 3).
        dry_run: change nothing; list what would be removed and the bytes it would free.
        warehouse_block: the warehouse whose load ledger says which snapshots loads need;
            None: the environment settings.
        data_lake_block: the lake to tidy; None: ``DATA_LAKE_URL``.

    Returns:
        One row per day (also the ``lake-housekeeping`` table artifact).
    """
    _, lake, warehouse_config = resolve_configs(
        load_settings(), warehouse_block=warehouse_block, data_lake_block=data_lake_block
    )
    if keep is not None:
        lake = lake.model_copy(update={"keep_snapshots": keep})
    days = list_lake_days(lake)
    with warehouse_endpoint(warehouse_config) as (warehouse, _):
        newest = read_newest_loads(warehouse, days)
    rows = [tidy_lake_day(lake, day, newest.get(day), dry_run).as_row() for day in days]
    freed = sum(row["bytes freed"] for row in rows)
    verb = "would free" if dry_run else "freed"
    get_run_logger().info("Lake housekeeping of %d days %s %d bytes", len(rows), verb, freed)
    create_table_artifact(
        rows,
        key="lake-housekeeping",
        description=f"Lake housekeeping{' (dry run)' if dry_run else ''}: {verb} {freed} bytes",
    )
    return rows
