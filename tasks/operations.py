"""Tasks that make a run operable: the days view, the quality verdict and the day's events.

Events have the business day as their resource (``sales.day.<YYYY-MM-DD>``), so automations
can follow each day (``for_each: prefect.resource.id``):

- ``sales.day.due``: the day must be loaded by the freshness deadline; ``occurred`` is the
  moment the day closes (midnight UTC after it), the start of the freshness window;
- ``sales.day.loaded``: counts, reject rate and amount of the load;
- ``sales.day.quality-degraded``: the reject rate is above the configured thresholds;
- ``sales.day.failed``: the day's run failed (or was stopped), with the reason;
- ``sales.day.replayed``: the source was down and the day was loaded from a raw snapshot
  already in the lake;
- ``sales.schema.changed``: the shape of the day's records differs from the contract or from
  the previous snapshot of the day (fields added, missing, retyped, with their record counts).
"""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL

from sales_etl.contract import SchemaChange
from sales_etl.dates import day_closes_at
from sales_etl.ledger import (
    DayStatus,
    baseline_reject_rate,
    day_statuses,
    failure_recorded,
    reject_rate,
)
from sales_etl.quality import QualityVerdict, judge_reject_rate
from sales_etl.settings import QualityConfig, WarehouseConfig
from sales_etl.warehouse import (
    LoadSource,
    ensure_tables,
    record_failure,
    tables_for,
    warehouse_engine,
)
from tasks.load import LoadedDay

DAYS_ARTIFACT_KEY = "daily-sales-days"
DAYS_SHOWN = 30
DAY_LOADED = "sales.day.loaded"
DAY_FAILED = "sales.day.failed"
DAY_DEGRADED = "sales.day.quality-degraded"
DAY_DUE = "sales.day.due"
DAY_REPLAYED = "sales.day.replayed"
SCHEMA_CHANGED = "sales.schema.changed"


def day_resource(day: date) -> dict[str, str]:
    """The Prefect resource of a business day."""
    text = day.isoformat()
    return {
        "prefect.resource.id": f"sales.day.{text}",
        "prefect.resource.name": f"sales {text}",
        "sales.day": text,
    }


@task(
    name="judge-day-quality",
    description="Reject rate of the load against the thresholds and the previous days.",
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def judge_day_quality(
    warehouse: WarehouseConfig, day: date, loaded: LoadedDay, config: QualityConfig, mode: str
) -> QualityVerdict:
    """The verdict on ``day``'s reject rate; the baseline is the median of the previous
    ``config.baseline_days`` loaded days in the ledger. Only a full load (the whole day) has a
    rate: an incremental one holds just the records changed since the last load."""
    if mode != "full":
        return QualityVerdict(day, None, None)
    with warehouse_engine(warehouse) as engine:
        baseline = baseline_reject_rate(engine, tables_for(warehouse), day, config.baseline_days)
    rate = reject_rate(loaded.stats.staged, loaded.stats.staged_rejected)
    verdict = judge_reject_rate(day, rate, baseline, config)
    if verdict.degraded:
        get_run_logger().warning("Quality of %s degraded: %s", day, "; ".join(verdict.reasons))
    return verdict


@task(
    name="emit-day-events",
    description="Emit sales.day.loaded (and .due, .quality-degraded) for the day.",
    cache_policy=NO_CACHE,
)
def emit_day_events(
    day: date, loaded: LoadedDay, verdict: QualityVerdict, now: datetime
) -> list[str]:
    """Emit the day's events; returns their names. ``now`` decides whether the day is still
    within its freshness window (a backfill of an old day emits no ``sales.day.due``)."""
    resource = day_resource(day)
    emitted = []
    closes = day_closes_at(day)
    if now < closes + timedelta(days=1):
        emit_event(DAY_DUE, resource, occurred=closes, payload={"closes_at": closes.isoformat()})
        emitted.append(DAY_DUE)
    stats = loaded.stats
    payload: dict[str, Any] = {
        "day": day.isoformat(),
        **stats.counts.as_payload(),
        # The names the days view and the automations use for the staged counts.
        "records": stats.records,
        "valid": stats.staged,
        "rejected": stats.staged_rejected,
        "reject_rate": verdict.rate,
        "load_skipped": stats.skipped,
        "full_day": verdict.rate is not None or stats.records == 0,
        "table": loaded.table,
    }
    emit_event(DAY_LOADED, resource, payload=payload)
    emitted.append(DAY_LOADED)
    if verdict.degraded:
        emit_event(
            DAY_DEGRADED,
            resource,
            payload={
                "day": day.isoformat(),
                "reject_rate": verdict.rate,
                "baseline_median": verdict.baseline,
                "reasons": list(verdict.reasons),
            },
        )
        emitted.append(DAY_DEGRADED)
    return emitted


def emit_day_replayed(day: date, snapshot_id: str, reason: str) -> None:
    """Emit ``sales.day.replayed``: the day is being loaded from snapshot ``snapshot_id``."""
    emit_event(
        DAY_REPLAYED,
        day_resource(day),
        payload={"day": day.isoformat(), "snapshot_id": snapshot_id, "reason": first_line(reason)},
    )


def emit_schema_changed(day: date, change: SchemaChange, mode: str) -> None:
    """Emit ``sales.schema.changed``: the added, missing and retyped fields and their counts."""
    emit_event(
        SCHEMA_CHANGED,
        day_resource(day),
        payload={"day": day.isoformat(), "mode": mode, **change.as_payload()},
    )


def first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:500]


@task(
    name="record-failed-day",
    description="The run of the day failed: a 'failed' ledger row and sales.day.failed.",
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def record_failed_day(
    warehouse: WarehouseConfig, day: date, run_id: str, message: str, now: datetime
) -> None:
    """Emit ``sales.day.failed`` and make the day's newest ledger row a failure of this run
    (a failed load already wrote one; a failed extract, transform or quality check did not)."""
    _record_failed_day(warehouse, day, run_id, message, now, keep_earlier=True)


def _record_failed_day(
    warehouse: WarehouseConfig,
    day: date,
    run_id: str,
    message: str,
    now: datetime,
    *,
    keep_earlier: bool,
) -> None:
    """``sales.day.failed`` and a ``failed`` ledger row; with ``keep_earlier`` none when this
    run already recorded a failure (the load's own row names the statement that failed)."""
    reason = first_line(message)
    emit_event(DAY_FAILED, day_resource(day), payload={"day": day.isoformat(), "reason": reason})
    tables = tables_for(warehouse)
    with warehouse_engine(warehouse) as engine:
        ensure_tables(engine, tables)
        if not (keep_earlier and failure_recorded(engine, tables, day, run_id)):
            record_failure(engine, tables, day, run_id, LoadSource(), reason, now)


def report_failed_day(
    warehouse: WarehouseConfig, day: date, run_id: str, message: str, now: datetime
) -> None:
    """:func:`record_failed_day` without hiding the run's own error when the warehouse is down."""
    state = record_failed_day(warehouse, day, run_id, message, now, return_state=True)
    if not state.is_completed():
        get_run_logger().warning("could not record the failure of %s: %s", day, state.message)


def record_stopped_day(
    warehouse: WarehouseConfig, day: date, run_id: str, message: str, now: datetime
) -> None:
    """:func:`record_failed_day` for a run that is being stopped (Ctrl-C, SIGTERM, its Prefect API
    gone): called as a plain function, since no task run can be created or may be waited for
    then; a warehouse that cannot be reached is reported on stderr, never raised. The stop is
    the day's newest row even when the load already recorded the statement the stop cancelled
    ("canceling statement due to user request" says less than why it was cancelled)."""
    try:
        _record_failed_day(warehouse, day, run_id, message, now, keep_earlier=False)
    except Exception as exc:
        print(f"could not record the stopped run of {day} as failed: {exc}", file=sys.stderr)


@task(
    name="publish-days",
    description="Publish the last 30 days of the load ledger as the daily-sales-days table.",
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def publish_days(warehouse: WarehouseConfig, through: date) -> list[DayStatus]:
    """Update the ``daily-sales-days`` table artifact: the 30 days up to ``through``."""
    start = through - timedelta(days=DAYS_SHOWN - 1)
    tables = tables_for(warehouse)
    with warehouse_engine(warehouse) as engine:
        statuses = day_statuses(engine, tables, start, through)
    counts = {kind: sum(s.status == kind for s in statuses) for kind in ("loaded", "failed")}
    missing = len(statuses) - counts["loaded"] - counts["failed"]
    ui_url = PREFECT_UI_URL.value()  # None without a UI: the rows show the run ids
    create_table_artifact(
        key=DAYS_ARTIFACT_KEY,
        table=[status.as_row(ui_url) for status in reversed(statuses)],
        description=(
            f"Daily sales {start}..{through} ({tables.ledger.fullname}): {counts['loaded']} "
            f"loaded, {counts['failed']} failed, {missing} missing"
        ),
    )
    return statuses


def refresh_days_view(warehouse: WarehouseConfig, day: date, now: datetime) -> None:
    """Publish the days view after a run, whatever its outcome; a warehouse that is down is
    logged, not raised (the run's own outcome, not this view, decides its final state)."""
    state = publish_days(warehouse, max(day, now.date()), return_state=True)
    if not state.is_completed():
        get_run_logger().warning("could not update the %s artifact: %s", DAYS_ARTIFACT_KEY, state)
