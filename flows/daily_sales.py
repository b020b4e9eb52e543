"""The Daily Sales ETL flow: status -> extract (raw lake) -> transform (clean lake) -> load.

Run one day locally (ephemeral Prefect, embedded demo API, local lake and warehouse)::

    python -m flows.daily_sales --date 2026-11-23
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any, cast

from prefect import flow, runtime
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from flows.config import resolve_configs
from flows.transform import transform_day
from sales_etl.demo_api import DemoData, serve_demo_api
from sales_etl.errors import LakeError, TransientSourceError
from sales_etl.report import RunSummary, mask_url
from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig, load_settings
from tasks.extract import check_source, extract_sales, find_raw_snapshot
from tasks.load import LoadedDay, load_sales
from tasks.report import publish_report

FLOW_NAME = "Daily Sales ETL"
DEMO_DATA = DemoData(rows_per_day=5000, malformed_every=97, update_every=50)


def default_business_date(now: datetime | None = None) -> date:
    """Yesterday in UTC: the last complete day."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.date() - timedelta(days=1)


# A deployment run scheduled before this UTC time of day closes the previous day instead.
CLOSE_PREVIOUS_DAY_BEFORE = dt_time(1, 0)


def scheduled_business_date(scheduled: datetime) -> date:
    """The business day of a deployment run scheduled at ``scheduled``.

    Hourly runs re-load the current UTC day (idempotently, so each one refreshes it); the run
    scheduled in the first hour after midnight (00:00-00:59 UTC) loads the previous day once more,
    with its complete data, and so closes it. The next run (01:00) starts on the new day.
    """
    moment = scheduled.astimezone(UTC)
    if moment.time() < CLOSE_PREVIOUS_DAY_BEFORE:
        return moment.date() - timedelta(days=1)
    return moment.date()


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


@contextmanager
def source_endpoint(source: SourceConfig) -> Iterator[tuple[SourceConfig, str]]:
    """The source to use, starting the embedded demo API when no URL is configured."""
    if source.base_url is not None:
        yield source, source.base_url
        return
    with serve_demo_api(DEMO_DATA) as api:
        yield source.model_copy(update={"base_url": api.url}), "demo"


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - start


@flow(name=FLOW_NAME, description="Extract a day of sales, land it raw, validate it, load it.")
def daily_sales(
    run_date: date | None = None,
    refresh: bool = False,
    reload: bool = False,
    warehouse_block: str | None = None,
    data_lake_block: str | None = None,
    sales_api_block: str | None = None,
) -> Any:
    """Run the pipeline for one business day.

    Args:
        run_date: the business day (UTC). Empty: the scheduled day of a deployment run,
            yesterday for an ad-hoc run.
        refresh: ignore a cached extract and fetch the day from the API again.
        reload: load the snapshot even when the load ledger says it is already loaded.
        warehouse_block: name of a saved ``WarehouseBlock``; empty: the environment settings.
        data_lake_block: name of a saved ``DataLakeBlock``; empty: the environment settings.
        sales_api_block: name of a saved ``SalesApiBlock``; empty: the environment settings.

    Returns:
        The run summary (a dict). The run ends Completed, "Completed from snapshot" when the API
        failed and the day was reloaded from the lake, or Failed with the reason.
    """
    logger = get_run_logger()
    source_config, lake, warehouse = resolve_configs(
        load_settings(),
        warehouse_block=warehouse_block,
        data_lake_block=data_lake_block,
        sales_api_block=sales_api_block,
    )
    day = resolve_business_date(run_date)
    run_id = str(runtime.flow_run.id or uuid.uuid4())
    with ExitStack() as stack:
        source, identity = stack.enter_context(source_endpoint(source_config))
        return _run_day(logger, day, run_id, source, identity, lake, warehouse, refresh, reload)


def _run_day(
    logger: Any,
    day: date,
    run_id: str,
    source: SourceConfig,
    identity: str,
    lake: LakeConfig,
    warehouse: WarehouseConfig,
    refresh: bool,
    reload: bool,
) -> Any:
    summary = RunSummary(
        day=day.isoformat(),
        run_id=run_id,
        source=mask_url(source.base_url or "")
        if identity != "demo"
        else f"demo API ({source.base_url})",
        lake=lake.url,
        warehouse=mask_url(warehouse.sqlalchemy_url),
    )
    timings = summary.timings
    logger.info("Daily Sales ETL for %s from %s", day, summary.source)

    with _timed(timings, "extract"):
        try:
            raw = _extract(source, identity, lake, day, refresh)
        except TransientSourceError as exc:
            # The source is down (status or pages) even after retries: replay the lake.
            raw = find_raw_snapshot(lake, day)
            if raw is None:
                logger.error("Extraction failed and the lake has no snapshot of %s", day)
                raise
            summary.fallback_used = True
            summary.fallback_reason = str(exc)
            logger.warning(
                "FALLBACK: extraction of %s failed (%s); reloading raw snapshot %s from the lake",
                day,
                exc,
                raw["snapshot_id"],
            )
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

    with _timed(timings, "transform"):
        clean = transform_day(lake, day, raw["snapshot_id"])  # runner: TASK_RUNNER
    summary.clean = clean.clean
    summary.rejected_by_reason = dict(clean.by_reason)
    summary.clean_amount_total = clean.clean_amount_total

    with _timed(timings, "load"):
        loaded = load_sales(warehouse, lake, day, raw["snapshot_id"], run_id, reload=reload)
    _add_load(summary, loaded)

    if summary.fallback_used:
        summary.status = "loaded_from_snapshot"
        summary.message = f"API unavailable; loaded from raw snapshot {summary.snapshot_id}"
    else:
        summary.status = "loaded"
        summary.message = f"{summary.clean} valid, {summary.rejected} rejected"
    publish_report(summary)
    logger.info("%s", summary.to_text())
    if summary.fallback_used:
        return Completed(
            name="Completed from snapshot", message=summary.message, data=summary.as_dict()
        )
    return summary.as_dict()


def _add_load(summary: RunSummary, loaded: LoadedDay) -> None:
    stats = loaded.stats
    for name in ("inserted", "updated", "unchanged", "stale", "voided", "quarantined"):
        setattr(summary, name, getattr(stats, name))
    summary.superseded = stats.superseded
    summary.rejected_rows = stats.rejected
    summary.load_skipped = stats.skipped
    summary.day_sales = stats.day_sales
    summary.day_amount = str(stats.day_amount)
    summary.warehouse = f"{loaded.warehouse} ({loaded.table})"


def _extract(
    source: SourceConfig, identity: str, lake: LakeConfig, day: date, refresh: bool
) -> dict[str, Any] | None:
    """Land the day in the raw zone (or reuse the cached extract); None when there is nothing."""
    status = check_source(source, day)
    if not status.should_process:
        return None
    source_state = f"{identity}|records={status.record_count}"
    extract = extract_sales.with_options(refresh_cache=True) if refresh else extract_sales
    raw_info = extract(source, lake, day, source_state, lake.url)
    raw = find_raw_snapshot(lake, day, raw_info["snapshot_id"])
    if raw is None:  # a cached result whose snapshot was removed from the lake: fetch again
        raw_info = extract_sales.with_options(refresh_cache=True)(
            source, lake, day, source_state, lake.url
        )
        raw = find_raw_snapshot(lake, day, raw_info["snapshot_id"])
    if raw is None:
        raise LakeError(f"raw snapshot {raw_info['snapshot_id']} of {day} vanished after writing")
    return raw


def date_argument(text: str) -> date:
    """An argparse ``type`` for YYYY-MM-DD options (shared by every CLI of the project)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.daily_sales",
        description=(
            "Run the Daily Sales ETL for one day: sales API -> raw Parquet in the lake -> "
            "validated frame -> idempotent load into the warehouse. Configuration comes from "
            "the environment (SALES_API_URL, SALES_API_KEY, DATA_LAKE_URL, WAREHOUSE_URL, "
            "WAREHOUSE_SCHEMA); unset, it runs on the embedded demo API, ./.data/lake and "
            "./.data/warehouse.db."
        ),
    )
    parser.add_argument(
        "--date",
        type=date_argument,
        default=None,
        help="business day to process, YYYY-MM-DD (UTC); default: yesterday",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="fetch the day from the API again even if a cached extract exists",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="load the snapshot again even if the load ledger says it is already loaded",
    )
    for option, kind in (
        ("--warehouse-block", "WarehouseBlock"),
        ("--data-lake-block", "DataLakeBlock"),
        ("--sales-api-block", "SalesApiBlock"),
    ):
        parser.add_argument(
            option,
            metavar="NAME",
            default=None,
            help=f"name of a saved {kind} to use instead of the environment settings",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: exit 0 on success, 1 with a one-line reason on failure."""
    args = build_parser().parse_args(argv)
    day = args.date or default_business_date()
    state = cast(
        State[Any],
        daily_sales(
            run_date=day,
            refresh=args.refresh,
            reload=args.reload,
            warehouse_block=args.warehouse_block,
            data_lake_block=args.data_lake_block,
            sales_api_block=args.sales_api_block,
            return_state=True,
        ),
    )
    if not state.is_completed():
        reason = (state.message or state.name or "failed").strip().splitlines()[0]
        print(f"Daily Sales ETL {day} failed: {reason}", file=sys.stderr)
        return 1
    summary = RunSummary(**{k: v for k, v in state.result().items() if k != "rejected"})
    print(summary.to_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
