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
from functools import cached_property
from typing import Any

from prefect import Task, flow, runtime
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
from flows.runners import start_part_workers_for
from flows.termination import note_stage, stop_reason
from flows.transform import transform_day
from sales_etl.assets import DayAssets, day_assets
from sales_etl.dates import closes_previous_day, run_business_date
from sales_etl.errors import (
    LakeError,
    PartialExtractError,
    QualityError,
    TransientSourceError,
    WarehouseError,
)
from sales_etl.memory import return_freed_memory_soon
from sales_etl.report import RunSummary, mask_url
from sales_etl.settings import (
    LakeConfig,
    QualityConfig,
    SourceConfig,
    WarehouseConfig,
    load_settings,
)
from sales_etl.snapshots import CleanManifest, RawManifest
from tasks.assets import emit_asset_due, materializing
from tasks.extract import (
    check_schema_contract,
    check_source,
    extract_sales,
    find_raw_snapshot,
    find_replay_snapshots,
)
from tasks.housekeeping import read_newest_loads, tidy_lake_day
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


def _deployment_schedule() -> datetime | None:
    """A deployment run's scheduled start (None for an ad-hoc run outside a deployment)."""
    if runtime.deployment.id is None:
        return None
    return runtime.flow_run.scheduled_start_time


def is_closing_run() -> bool:
    """A deployment run scheduled in the first hour after midnight UTC closes the previous day:
    it extracts the whole day (never incrementally) and so reconciles it."""
    scheduled = _deployment_schedule()
    return scheduled is not None and closes_previous_day(scheduled)


@dataclass(frozen=True)
class RunOptions:
    """How a run extracts and loads its day."""

    refresh: bool = False  # ignore a cached extract
    reload: bool = False  # load even a snapshot the ledger holds as loaded
    full_extract: bool = False  # the whole day, not the records since the high-water mark
    lag: timedelta = timedelta(minutes=10)  # subtracted from the high-water mark
    schema_contract: str = "evolve"  # what a change of the records' shape does (SCHEMA_CONTRACT)

    @property
    def keep_extra(self) -> bool:
        """Whether the load keeps the fields outside the contract (all modes but discard)."""
        return self.schema_contract != "discard"


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
    return_freed_memory_soon()  # this process streams batches: keep its RSS bounded
    day = run_business_date(run_date, _deployment_schedule())
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
        schema_contract=settings.schema_contract,
    )
    with ExitStack() as stack:
        # The embedded warehouse (WAREHOUSE_URL unset) runs for the whole run, failures included.
        warehouse, look = stack.enter_context(warehouse_endpoint(warehouse_config))
        try:
            check_lake_writable(lake)
            source, identity = stack.enter_context(source_endpoint(source_config))
            run = DayRun(
                day, run_id, source, identity, lake, warehouse, options, settings.quality(), look
            )
            result = _run_day(run)
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


@dataclass(frozen=True)
class DayRun:
    """Everything one run of a day works with, chosen once by the flow."""

    day: date
    run_id: str
    source: SourceConfig
    identity: str  # the source's identity in the extract's cache key ("demo" or its URL)
    lake: LakeConfig
    warehouse: WarehouseConfig
    options: RunOptions
    quality: QualityConfig
    look: str = ""  # how to look at the loaded data (the embedded warehouse)

    @cached_property
    def assets(self) -> DayAssets:
        """The day's Prefect assets: raw lake, clean lake, warehouse table."""
        return day_assets(self.day, self.lake, self.warehouse)

    def new_summary(self) -> RunSummary:
        source = self.source.base_url or ""
        return RunSummary(
            day=self.day.isoformat(),
            run_id=self.run_id,
            source=f"demo API ({source})" if self.identity == "demo" else mask_url(source),
            lake=self.lake.url,
            warehouse=mask_url(self.warehouse.sqlalchemy_url),
            look=self.look,
            schema_contract=self.options.schema_contract,
        )


def _run_day(run: DayRun) -> Any:
    """Extract (or replay the lake), transform, load, judge and report one day."""
    summary = run.new_summary()
    get_run_logger().info("Daily Sales ETL for %s from %s", run.day, summary.source)
    with _timed(summary.timings, "extract"):
        extracted = _extract_or_replay(run, summary)
    if extracted is None:
        return _skipped(summary)
    _announce_due(run)
    earlier, raw = extracted
    summary.snapshot_id = raw.snapshot_id
    summary.pages = raw.pages
    summary.records_extracted = raw.records
    summary.extract_mode = raw.mode
    summary.schema_change = _check_contract(run, earlier, raw)

    with _timed(summary.timings, "transform"):
        clean = transform_day(run.lake, raw, assets=run.assets)  # runner: TASK_RUNNER
    summary.clean = clean.clean
    summary.rejected_by_reason = dict(clean.by_reason)
    summary.clean_amount_total = clean.clean_amount_total

    with _timed(summary.timings, "load"):
        for replayed in earlier:
            _transform_and_load(run, replayed)
        loaded = _load(run, clean, raw.mode, run.options.reload, summary.schema_change)
    _add_load(summary, loaded)
    with _timed(summary.timings, "housekeeping"):
        _tidy_lake(run)
    verdict = judge_day_quality(run.warehouse, run.day, loaded, run.quality, raw.mode)
    emit_day_events(run.day, loaded, verdict, datetime.now(UTC))
    return _finish(summary, verdict.failure)


def _check_contract(run: DayRun, earlier: list[RawManifest], raw: RawManifest) -> str | None:
    """The shape change of ``raw`` (a replay's earlier snapshots are held to the contract too);
    under ``freeze`` a change fails the day here, before a clean snapshot is committed or
    anything is loaded."""
    mode = run.options.schema_contract
    for replayed in earlier:
        check_schema_contract(run.lake, replayed, mode)
    change = check_schema_contract(run.lake, raw, mode)
    return change.describe() if change else None


def _extract_or_replay(
    run: DayRun, summary: RunSummary
) -> tuple[list[RawManifest], RawManifest] | None:
    """The raw snapshot to load (and earlier ones a replay needs first), or None when the source
    says there is nothing to process."""
    try:
        since = None if run.options.full_extract else _incremental_since(run)
        raw = _extract(run, since)
    except PartialExtractError:
        # Part of a fresh extract arrived: an older snapshot must not stand in for it.
        get_run_logger().error(
            "The fresh extract of %s partly succeeded: no replay from the lake", run.day
        )
        raise
    except TransientSourceError as exc:
        # The source is down (status or pages) even after retries: replay the lake, from the
        # newest full snapshot on (the ledger skips those already loaded).
        replay = find_replay_snapshots(run.lake, run.day)
        if not replay:
            get_run_logger().error("Extraction failed and the lake has no snapshot of %s", run.day)
            raise
        *earlier, newest = replay
        _announce_replay(summary, newest, exc)
        return earlier, newest
    return None if raw is None else ([], raw)


def _skipped(summary: RunSummary) -> dict[str, Any]:
    summary.status = "skipped"
    summary.message = f"the source says {summary.day} has nothing to process; nothing was touched"
    get_run_logger().info("Skipped: %s", summary.message)
    publish_report(summary)
    return summary.as_dict()


def _finish(summary: RunSummary, quality_failure: str | None) -> Any:
    """The run's verdict: reported, then returned (or raised, for a failed quality check)."""
    if summary.fallback_used:
        summary.status = "loaded_from_snapshot"
        summary.message = f"API unavailable; loaded from raw snapshot {summary.snapshot_id}"
    else:
        summary.status = "loaded"
        summary.message = summary.run_text()
    publish_report(summary)  # prints the summary into the run's logs, once (log_prints)
    if quality_failure:
        raise QualityError(quality_failure)
    if summary.fallback_used:
        return Completed(
            name="Completed from snapshot", message=summary.message, data=summary.as_dict()
        )
    return summary.as_dict()


def _announce_replay(summary: RunSummary, raw: RawManifest, exc: Exception) -> None:
    """A replay from the lake is loud: the summary, a warning and ``sales.day.replayed``."""
    summary.fallback_used = True
    summary.fallback_reason = str(exc)
    get_run_logger().warning(
        "FALLBACK: extraction of %s failed (%s); reloading raw snapshot %s (committed %s) "
        "from the lake",
        raw.day,
        exc,
        raw.snapshot_id,
        raw.committed_at or "by an earlier run",
    )
    emit_day_replayed(raw.day, raw.snapshot_id, str(exc))


def _transform_and_load(run: DayRun, raw: RawManifest) -> LoadedDay:
    """An earlier snapshot replayed from the lake (a no-op load when the ledger has it)."""
    return _load(run, transform_day(run.lake, raw, assets=run.assets), raw.mode)


def _load(
    run: DayRun,
    clean: CleanManifest,
    mode: str,
    reload: bool = False,
    schema_change: str | None = None,
) -> LoadedDay:
    """Load a clean snapshot: one load, or one per segment of a compacted snapshot (the loads
    it stands for, in order); the result of the last."""
    *before, (last, last_mode) = clean.loads(mode)
    for segment, segment_mode in before:
        _loader(run)(
            run.warehouse, run.lake, segment, run.run_id, segment_mode, reload,
            keep_extra=run.options.keep_extra,
        )  # fmt: skip
    return _loader(run)(
        run.warehouse, run.lake, last, run.run_id, last_mode, reload,
        keep_extra=run.options.keep_extra, schema_change=schema_change,
    )  # fmt: skip


def _tidy_lake(run: DayRun) -> None:
    """After a successful load: compact the day's lake and remove the snapshots it no longer
    needs (LAKE_KEEP_SNAPSHOTS). A lake that refuses is a warning: the day is loaded, and the
    next run or the housekeeping flow tidies it."""
    try:
        newest = read_newest_loads(run.warehouse, [run.day]).get(run.day)
        tidy_lake_day(run.lake, run.day, newest)
    except LakeError as exc:
        get_run_logger().warning("Lake housekeeping of %s failed: %s", run.day, exc)


def _loader(run: DayRun) -> Task[..., LoadedDay]:
    """``load-sales`` materializing the day's warehouse asset (upstream: its clean lake one)."""
    return materializing(load_sales, run.assets.warehouse, [run.assets.clean])


def _announce_due(run: DayRun) -> None:
    """``sales.asset.due``: the day's warehouse asset must be materialized within the
    freshness window from the run's scheduled start (an ad-hoc run: its creation). Only a run
    with something to load announces it: a skipped run materializes nothing."""
    emit_asset_due(run.assets, runtime.flow_run.scheduled_start_time or datetime.now(UTC))


def _add_load(summary: RunSummary, loaded: LoadedDay) -> None:
    stats = loaded.stats
    summary.load = stats.counts
    summary.load_skipped = stats.skipped
    summary.load_steps = dict(stats.step_seconds)
    summary.warehouse = f"{loaded.warehouse} ({loaded.table})"


def _incremental_since(run: DayRun) -> datetime | None:
    """The day's high-water mark minus the lag; None (extract the whole day) before any load,
    or when the warehouse cannot be read: the day still lands in the lake, and the load says
    what is wrong with the warehouse."""
    try:
        mark = read_high_water_mark(run.warehouse, run.day)
    except WarehouseError as exc:
        get_run_logger().warning("Extracting the whole day: %s", exc)
        return None
    return None if mark is None else mark - run.options.lag


def _extract(run: DayRun, since: datetime | None) -> RawManifest | None:
    """Land the day (or the records changed since ``since``) in the raw zone, or reuse the
    cached extract; None when there is nothing to process."""
    day, source, lake = run.day, run.source, run.lake
    status = check_source(source, day, since)
    if not status.should_process:
        return None
    since = status.updated_since  # None when the server does not filter: the whole day
    start_part_workers_for(status.record_count)
    source_state = f"{run.identity}|records={status.record_count}|since={since}"
    # With an S3 lake the cached extract lives in the bucket too, so it outlives the pod.
    extract_task = results_in_lake(materializing(extract_sales, run.assets.raw), lake)
    extract = extract_task.with_options(refresh_cache=True) if run.options.refresh else extract_task
    raw = extract(source, lake, day, source_state, lake.url, since)
    if find_raw_snapshot(lake, day, raw.snapshot_id) is None:
        # A cached result whose snapshot was removed from the lake: fetch again.
        raw = extract_task.with_options(refresh_cache=True)(
            source, lake, day, source_state, lake.url, since
        )
        if find_raw_snapshot(lake, day, raw.snapshot_id) is None:
            raise LakeError(f"raw snapshot {raw.snapshot_id} of {day} vanished after writing")
    return raw
