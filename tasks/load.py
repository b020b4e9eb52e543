"""Task that loads a clean snapshot into the warehouse, idempotently, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg2.errors
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from sales_etl.assets import warehouse_metadata
from sales_etl.errors import WarehouseError
from sales_etl.lake import Lake, open_lake
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import CleanManifest, iter_tables
from sales_etl.warehouse import (
    LoadSource,
    LoadStats,
    day_high_water_mark,
    describe_engine,
    driver_reason,
    ensure_tables,
    load_day,
    read_failed,
    record_failure,
    tables_for,
    warehouse_engine,
)
from tasks.assets import describe_materialized


@dataclass(frozen=True)
class LoadedDay:
    """The result of ``load-sales``: the load's counts and where they went."""

    stats: LoadStats
    warehouse: str
    table: str


def _retry_unless_cancelled(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """A statement cancelled on purpose is not retried: the run's stop (Ctrl-C, SIGTERM: a
    ``KeyboardInterrupt`` raised while psycopg2 was inside a COPY is lost there, the cancel is
    what comes back), an operator's ``pg_cancel_backend``, ``statement_timeout``."""
    try:
        state.result()
    except Exception as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        return not isinstance(cause, psycopg2.errors.QueryCanceled)
    return True


@task(
    name="load-sales",
    description="Upsert a day's clean sales and keep its rejects in the warehouse.",
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=_retry_unless_cancelled,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def load_sales(
    warehouse: WarehouseConfig,
    lake: LakeConfig,
    clean: CleanManifest,
    run_id: str,
    mode: str = "full",
    reload: bool = False,
    keep_extra: bool = True,
    schema_change: str | None = None,
) -> LoadedDay:
    """Load clean snapshot ``clean`` (its parts are read from ``lake``).

    A snapshot the load ledger already holds as loaded for the day is skipped (nothing is read
    from the lake) unless ``reload``. A failed load leaves a ``failed`` ledger row.
    ``keep_extra``: write the sales' fields outside the contract (``SCHEMA_CONTRACT`` evolve);
    ``schema_change``: how the source's shape changed, for the ledger.
    """
    with open_lake(lake) as store, warehouse_engine(warehouse) as engine:
        source = LoadSource(
            snapshot_id=clean.snapshot_id,
            mode=mode,
            records=clean.records,
            rejects_by_reason=dict(clean.by_reason),
            schema_change=schema_change,
        )
        stats = _load_or_record_failure(
            engine, store, warehouse, clean, run_id, source, reload=reload, keep_extra=keep_extra
        )
        target = describe_engine(engine)
        _log_load(clean, target, stats)
        table = tables_for(warehouse).sales.fullname
        # The warehouse asset, when the flow binds it (a skipped load: the day is up to date).
        metadata = warehouse_metadata(clean.snapshot_id, table, stats.counts, stats.skipped)
        describe_materialized(metadata)
        return LoadedDay(stats=stats, warehouse=target, table=table)


def _load_or_record_failure(
    engine: Engine,
    store: Lake,
    warehouse: WarehouseConfig,
    clean: CleanManifest,
    run_id: str,
    source: LoadSource,
    *,
    reload: bool,
    keep_extra: bool,
) -> LoadStats:
    """:func:`sales_etl.warehouse.load_day` of the snapshot's parts; a failure leaves a
    ``failed`` ledger row naming it and raises a :class:`WarehouseError`."""
    day, tables = clean.day, tables_for(warehouse)
    try:
        ensure_tables(engine, tables)
        return load_day(
            engine,
            tables,
            day,
            run_id,
            iter_tables(store, list(clean.sales_parts)),
            iter_tables(store, list(clean.rejected_parts)),
            source=source,
            force=reload,
            work_mem=warehouse.work_mem,
            keep_extra=keep_extra,
        )
    except DBAPIError as exc:
        # The driver's text names host and database, never the password (hide_parameters).
        message = f"loading {day} into {describe_engine(engine)} failed: {driver_reason(exc)}"
        _record_failure(engine, warehouse, day, run_id, source, message)
        raise WarehouseError(message) from None
    except WarehouseError as exc:
        _record_failure(engine, warehouse, day, run_id, source, str(exc))
        raise


def _log_load(clean: CleanManifest, target: str, stats: LoadStats) -> None:
    logger = get_run_logger()
    if stats.skipped:
        logger.info(
            "Snapshot %s of %s is already loaded into %s (load ledger): load skipped",
            clean.snapshot_id,
            clean.day,
            target,
        )
        return
    logger.info(
        "Loaded %s into %s: %d inserted, %d updated, %d unchanged, %d voided, "
        "%d stale, %d rejects kept (%s)",
        clean.day,
        target,
        stats.inserted,
        stats.updated,
        stats.unchanged,
        stats.voided,
        stats.stale,
        stats.rejects_kept,
        stats.describe_steps(),
    )


@task(
    name="read-high-water-mark",
    description="The newest updated_at the warehouse has loaded for a day (the load ledger).",
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def read_high_water_mark(warehouse: WarehouseConfig, day: date) -> datetime | None:
    """None when no load of ``day`` succeeded yet (or the warehouse has no tables yet)."""
    with warehouse_engine(warehouse) as engine:
        try:
            return day_high_water_mark(engine, tables_for(warehouse), day)
        except DBAPIError as exc:
            raise read_failed(f"the high-water mark of {day}", engine, exc) from None


def _record_failure(
    engine: Engine,
    warehouse: WarehouseConfig,
    day: date,
    run_id: str,
    source: LoadSource,
    message: str,
) -> None:
    """Best effort: a warehouse that is down cannot take the failure row either."""
    try:
        record_failure(
            engine, tables_for(warehouse), day, run_id, source, message, datetime.now(UTC)
        )
    except DBAPIError:
        get_run_logger().warning("could not record the failed load of %s in the ledger", day)
