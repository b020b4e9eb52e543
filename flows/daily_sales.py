"""The Daily Sales ETL flow: status -> extract (raw lake) -> transform (clean lake) -> load.

The flow and its named steps only: configuration is chosen in ``flows/config.py``, the command
line is ``flows/cli.py``. Run one day locally (ephemeral Prefect, embedded demo API, local lake,
embedded PostgreSQL)::

    python -m flows.daily_sales --date 2026-11-23
"""

from __future__ import annotations

# The documented command runs the CLI first thing: its options are checked before Prefect and
# the flow's modules are imported (flows/cli.py imports this module again, by name, to run it).
if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main())

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, runtime
from prefect.logging import get_run_logger
from prefect.states import Completed

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from blocks.result_storage import results_in_lake
from flows.config import (
    check_business_date,
    check_lake_writable,
    resolve_configs,
    source_endpoint,
    warehouse_endpoint,
)
from flows.termination import note_stage, stop_reason
from flows.transform import transform_day
from sales_etl.dates import (
    CLOSE_PREVIOUS_DAY_BEFORE,
    default_business_date,
    scheduled_business_date,
)
from sales_etl.errors import (
    LakeError,
    PartialExtractError,
    QualityError,
    TransientSourceError,
    WarehouseError,
)
from sales_etl.report import RunSummary, mask_url
from sales_etl.settings import (
    LakeConfig,
    QualityConfig,
    SourceConfig,
    WarehouseConfig,
    load_settings,
)
from tasks.extract import check_source, extract_sales, find_raw_snapshot, find_replay_snapshots
from tasks.load import LoadedDay, load_sales, read_high_water_mark
from tasks.operations import (
    emit_day_events,
    emit_day_replayed,
    judge_day_quality,
    record_stopped_day,
    refresh_days_view,
    report_failed_day,
)
from tasks.report import publish_report

FLOW_NAME = "Daily Sales ETL"


def is_closing_run() -> bool:
    """A deployment run scheduled in the first hour after midnight UTC closes the previous day:
    it extracts the whole day (never incrementally) and so reconciles it."""
    if runtime.deployment.id is None:
        return False
    scheduled = runtime.flow_run.scheduled_start_time
    return scheduled is not None and scheduled.astimezone(UTC).time() < CLOSE_PREVIOUS_DAY_BEFORE


def resolve_business_date(run_date: date | None) -> date:
    """The business day a run processes.

    The explicit ``run_date`` wins. A deployment run without one (a scheduled run, a UI quick
    run) derives it from its *scheduled* start time, never from ``now()``, so a late run still
    processes the day it was scheduled for: see :func:`scheduled_business_date`. An ad-hoc run
    outside a deployment processes yesterday (UTC).
    """
    if run_date is not None:
        return run_date
    if runtime.deployment.id is not None:
        scheduled = runtime.flow_run.scheduled_start_time
        if scheduled is not None:
            return scheduled_business_date(scheduled)
    return default_business_date()


@dataclass(frozen=True)
class RunOptions:
    """How a run extracts and loads its day."""

    refresh: bool = False  # ignore a cached extract
    reload: bool = False  # load even a snapshot the ledger holds as loaded
    full_extract: bool = False  # the whole day, not the records since the high-water mark
    lag: timedelta = timedelta(minutes=10)  # subtracted from the high-water mark


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    note_stage(step)  # a stop line names the stage (flows.termination)
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - start


@flow(name=FLOW_NAME, description="Extract a day of sales, land it raw, validate it, load it.")
def daily_sales(
    run_date: date | None = None,
    refresh: bool = False,
    reload: bool = False,
    full_extract: bool = False,
    warehouse_block: WarehouseBlock | None = None,
    data_lake_block: DataLakeBlock | None = None,
    sales_api_block: SalesApiBlock | None = None,
    allow_future: bool = False,
) -> Any:
    """Run the pipeline for one business day.

    Args:
        run_date: the business day (UTC). Empty: the scheduled day of a deployment run,
            yesterday for an ad-hoc run.
        refresh: ignore a cached extract and fetch the day from the API again.
        reload: load the snapshot even when the load ledger says it is already loaded.
        full_extract: extract the whole day even when the warehouse has a high-water mark for
            it (the closing run after midnight and ``refresh`` always do).
        warehouse_block: the warehouse to load, a saved Sales Warehouse block (the run form
            lists them); None: the environment settings (``WAREHOUSE_URL``, ...).
        data_lake_block: the lake, a saved Sales Data Lake block; None: ``DATA_LAKE_URL``.
        sales_api_block: the source, a saved Sales API block; None: ``SALES_API_URL``.
        allow_future: load a day after today (UTC); refused otherwise (see docs/errors.md).

    Returns:
        The run summary (a dict). The run ends Completed, "Completed from snapshot" when the API
        failed and the day was reloaded from the lake, or Failed with the reason.
    """
    logger = get_run_logger()
    day = resolve_business_date(run_date)
    check_business_date(day, datetime.now(UTC).date(), allow_future)  # before any work
    settings = load_settings()
    source_config, lake, warehouse_config = resolve_configs(
        settings,
        warehouse_block=warehouse_block,
        data_lake_block=data_lake_block,
        sales_api_block=sales_api_block,
    )
    run_id = str(runtime.flow_run.id or uuid.uuid4())
    options = RunOptions(
        refresh=refresh,
        reload=reload,
        full_extract=full_extract or refresh or is_closing_run(),
        lag=timedelta(minutes=settings.incremental_lag_minutes),
    )
    with ExitStack() as stack:
        # The embedded warehouse (WAREHOUSE_URL unset) runs for the whole run, failures included.
        warehouse, look = stack.enter_context(warehouse_endpoint(warehouse_config))
        try:
            check_lake_writable(lake)
            source, identity = stack.enter_context(source_endpoint(source_config))
            result = _run_day(
                logger, day, run_id, source, identity, lake, warehouse, options,
                settings.quality(), look,
            )  # fmt: skip
        except BaseException as exc:
            _record_failure(warehouse, day, run_id, exc)
            raise
        refresh_days_view(warehouse, day, datetime.now(UTC))
        return result


def _record_failure(warehouse: WarehouseConfig, day: date, run_id: str, exc: BaseException) -> None:
    """The day's ``failed`` ledger row: a stopped run (Ctrl-C, SIGTERM, its Prefect API gone)
    records it without Prefect (no task run can be waited for then), a failed one as a task."""
    stopped = stop_reason(exc)
    if stopped is None and not isinstance(exc, Exception):
        stopped = f"crashed: {type(exc).__name__}"
    if stopped is not None:
        record_stopped_day(warehouse, day, run_id, stopped, datetime.now(UTC))
        return
    report_failed_day(warehouse, day, run_id, str(exc) or type(exc).__name__, datetime.now(UTC))
    refresh_days_view(warehouse, day, datetime.now(UTC))


def _run_day(
    logger: Any,
    day: date,
    run_id: str,
    source: SourceConfig,
    identity: str,
    lake: LakeConfig,
    warehouse: WarehouseConfig,
    options: RunOptions,
    quality: QualityConfig,
    look: str = "",
) -> Any:
    summary = RunSummary(
        day=day.isoformat(),
        run_id=run_id,
        source=mask_url(source.base_url or "")
        if identity != "demo"
        else f"demo API ({source.base_url})",
        lake=lake.url,
        warehouse=mask_url(warehouse.sqlalchemy_url),
        look=look,
    )
    timings = summary.timings
    logger.info("Daily Sales ETL for %s from %s", day, summary.source)

    earlier: list[dict[str, Any]] = []
    with _timed(timings, "extract"):
        try:
            since = (
                None if options.full_extract else _incremental_since(warehouse, day, options.lag)
            )
            raw = _extract(source, identity, lake, day, options.refresh, since)
        except PartialExtractError:
            # Part of a fresh extract arrived: an older snapshot must not stand in for it.
            logger.error("The fresh extract of %s partly succeeded: no replay from the lake", day)
            raise
        except TransientSourceError as exc:
            # The source is down (status or pages) even after retries: replay the lake, from
            # the newest full snapshot on (the ledger skips those already loaded).
            replay = find_replay_snapshots(lake, day)
            if not replay:
                logger.error("Extraction failed and the lake has no snapshot of %s", day)
                raise
            *earlier, raw = replay
            _announce_replay(summary, day, raw, exc)
    if raw is None:
        summary.status = "skipped"
        summary.message = f"the source says {day} has nothing to process; nothing was touched"
        logger.info("Skipped: %s", summary.message)
        publish_report(summary)
        return summary.as_dict()
    assert raw is not None
    summary.snapshot_id = raw["snapshot_id"]
    summary.pages = raw["pages"]
    summary.records_extracted = raw["records"]
    summary.extract_mode = raw.get("mode", "full")

    with _timed(timings, "transform"):
        clean = transform_day(lake, day, raw["snapshot_id"])  # runner: TASK_RUNNER
    summary.clean = clean.clean
    summary.rejected_by_reason = dict(clean.by_reason)
    summary.clean_amount_total = clean.clean_amount_total

    with _timed(timings, "load"):
        for replayed in earlier:
            _transform_and_load(lake, warehouse, day, replayed, run_id)
        mode = raw.get("mode", "full")
        loaded = load_sales(warehouse, lake, day, raw["snapshot_id"], run_id, mode, options.reload)
    _add_load(summary, loaded)
    verdict = judge_day_quality(warehouse, day, loaded, quality, mode)
    emit_day_events(day, loaded, verdict, datetime.now(UTC))

    if summary.fallback_used:
        summary.status = "loaded_from_snapshot"
        summary.message = f"API unavailable; loaded from raw snapshot {summary.snapshot_id}"
    else:
        summary.status = "loaded"
        summary.message = summary.run_text()
    publish_report(summary)  # prints the summary into the run's logs, once (log_prints)
    if verdict.failure:
        raise QualityError(verdict.failure)
    if summary.fallback_used:
        return Completed(
            name="Completed from snapshot", message=summary.message, data=summary.as_dict()
        )
    return summary.as_dict()


def _announce_replay(summary: RunSummary, day: date, raw: dict[str, Any], exc: Exception) -> None:
    """A replay from the lake is loud: the summary, a warning and ``sales.day.replayed``."""
    summary.fallback_used = True
    summary.fallback_reason = str(exc)
    get_run_logger().warning(
        "FALLBACK: extraction of %s failed (%s); reloading raw snapshot %s (committed %s) "
        "from the lake",
        day,
        exc,
        raw["snapshot_id"],
        raw.get("committed_at", "by an earlier run"),
    )
    emit_day_replayed(day, raw["snapshot_id"], str(exc))


def _transform_and_load(
    lake: LakeConfig, warehouse: WarehouseConfig, day: date, raw: dict[str, Any], run_id: str
) -> LoadedDay:
    """An earlier snapshot replayed from the lake (a no-op load when the ledger has it)."""
    transform_day(lake, day, raw["snapshot_id"])
    return load_sales(warehouse, lake, day, raw["snapshot_id"], run_id, raw.get("mode", "full"))


def _add_load(summary: RunSummary, loaded: LoadedDay) -> None:
    stats = loaded.stats
    summary.load = stats.counts
    summary.load_skipped = stats.skipped
    summary.load_steps = dict(stats.step_seconds)
    summary.warehouse = f"{loaded.warehouse} ({loaded.table})"


def _incremental_since(warehouse: WarehouseConfig, day: date, lag: timedelta) -> datetime | None:
    """The day's high-water mark minus the lag; None (extract the whole day) before any load,
    or when the warehouse cannot be read: the day still lands in the lake, and the load says
    what is wrong with the warehouse."""
    try:
        mark = read_high_water_mark(warehouse, day)
    except WarehouseError as exc:
        get_run_logger().warning("Extracting the whole day: %s", exc)
        return None
    return None if mark is None else mark - lag


def _extract(
    source: SourceConfig,
    identity: str,
    lake: LakeConfig,
    day: date,
    refresh: bool,
    since: datetime | None,
) -> dict[str, Any] | None:
    """Land the day (or the records changed since ``since``) in the raw zone, or reuse the
    cached extract; None when there is nothing to process."""
    status = check_source(source, day, since)
    if not status.should_process:
        return None
    since = status.updated_since  # None when the server does not filter: the whole day
    source_state = f"{identity}|records={status.record_count}|since={since}"
    # With an S3 lake the cached extract lives in the bucket too, so it outlives the pod.
    extract_task = results_in_lake(extract_sales, lake)
    extract = extract_task.with_options(refresh_cache=True) if refresh else extract_task
    raw_info = extract(source, lake, day, source_state, lake.url, since)
    raw = find_raw_snapshot(lake, day, raw_info["snapshot_id"])
    if raw is None:  # a cached result whose snapshot was removed from the lake: fetch again
        raw_info = extract_task.with_options(refresh_cache=True)(
            source, lake, day, source_state, lake.url, since
        )
        raw = find_raw_snapshot(lake, day, raw_info["snapshot_id"])
    if raw is None:
        raise LakeError(f"raw snapshot {raw_info['snapshot_id']} of {day} vanished after writing")
    return raw
