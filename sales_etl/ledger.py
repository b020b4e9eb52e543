"""Reading the load ledger: which days are loaded, missing or failed, and their reject rates.

The ledger (``<table>_load_ledger``, written by :mod:`sales_etl.warehouse`) has one row per
load attempt. A day's status is the status of its newest row: ``loaded``, ``failed``, or
``missing`` when it has none. Counts and the reject rate come from its newest ``loaded`` row.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.dialects.postgresql import distinct_on

from sales_etl.dates import days_between
from sales_etl.warehouse import WarehouseTables

LOADED, FAILED, MISSING = "loaded", "failed", "missing"
BACKFILL_MODES = ("missing", "failed", "all")
# flows/backfill.py FLOW_NAME / deployments/serve.py BACKFILL_NAME (not imported: no Prefect here)
BACKFILL_DEPLOYMENT = "Daily Sales Backfill/backfill"


@dataclass(frozen=True)
class DayStatus:
    """One business day as the ledger sees it."""

    day: date
    status: str  # loaded | failed | missing
    attempts: int = 0
    records: int | None = None
    valid: int | None = None
    rejected: int | None = None
    day_sales: int | None = None
    day_amount: Decimal | None = None
    last_attempt_at: datetime | None = None
    last_loaded_at: datetime | None = None
    last_run_id: str | None = None
    message: str | None = None
    schema_change: str | None = None  # of the newest load: how the source's shape changed

    @property
    def reject_rate(self) -> float | None:
        return reject_rate(self.valid, self.rejected)

    def as_row(self, ui_url: str | None = None) -> dict[str, Any]:
        """The day as a row of the ``daily-sales-days`` table artifact: its last flow run (a
        link into the UI at ``ui_url``, when known) and, for a missing or failed day, what
        fills it."""
        rate = self.reject_rate
        return {
            "day": self.day.isoformat(),
            "status": self.status,
            "records": self.records,
            "valid": self.valid,
            "rejected": self.rejected,
            "reject rate": None if rate is None else f"{rate:.2%}",
            "sales in warehouse": self.day_sales,
            "amount": None if self.day_amount is None else str(self.day_amount),
            "last load (UTC)": _utc_text(self.last_loaded_at),
            "last attempt (UTC)": _utc_text(self.last_attempt_at),
            "attempts": self.attempts,
            "message": (self.message or "")[:200],
            "schema change": (self.schema_change or "")[:200],
            "last flow run": flow_run_link(self.last_run_id, ui_url),
            "fill it with": fill_command(self.day, self.status),
            "or the backfill deployment": fill_deployment_run(self.day, self.status),
        }


def flow_run_link(run_id: str | None, ui_url: str | None) -> str | None:
    """The flow run's page in the Prefect UI at ``ui_url``; its id when there is no UI."""
    if run_id is None:
        return None
    return f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}" if ui_url else run_id


def fill_command(day: date, status: str) -> str:
    """The one command that loads a missing or failed ``day`` ("" for a loaded one)."""
    return "" if status == LOADED else f"python -m flows.daily_sales --date {day.isoformat()}"


def fill_deployment_run(day: date, status: str) -> str:
    """The run of the backfill deployment that loads a missing or failed ``day``: ``prefect
    deployment run`` with its parameters (the same in the UI's run form)."""
    if status == LOADED:
        return ""
    text = day.isoformat()
    return (
        f"prefect deployment run '{BACKFILL_DEPLOYMENT}' "
        f"-p start={text} -p end={text} -p mode={status}"
    )


def reject_rate(valid: int | None, rejected: int | None) -> float | None:
    """Rejected records over all records of a load (None when it had no records)."""
    if valid is None or rejected is None or valid + rejected == 0:
        return None
    return rejected / (valid + rejected)


def _utc_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def day_statuses(
    engine: Engine, tables: WarehouseTables, start: date, end: date
) -> list[DayStatus]:
    """Every day from ``start`` to ``end`` (oldest first), loaded, failed or missing (all of
    them when the warehouse has no ledger yet)."""
    days = days_between(start, end)
    ledger = tables.ledger
    inspector = inspect(engine)
    if not inspector.has_table(ledger.name, schema=ledger.schema):
        return [DayStatus(day=day, status=MISSING) for day in days]
    # A ledger of an older version lacks the newer columns until its next load adds them.
    present = {c["name"] for c in inspector.get_columns(ledger.name, schema=ledger.schema)}
    in_range = ledger.c.business_date.between(start, end)
    newest = (
        select(*(column for column in ledger.c if column.name in present))
        .where(in_range)
        .order_by(ledger.c.business_date, ledger.c.finished_at.desc(), ledger.c.load_id.desc())
        .ext(distinct_on(ledger.c.business_date))
    )
    newest_loaded = newest.where(ledger.c.status == LOADED)
    # Records, valid and rejected of a day: its newest *full* load (an incremental load holds
    # only the records changed since the previous one).
    newest_full = newest_loaded.where(ledger.c.mode == "full")
    attempts = (
        select(ledger.c.business_date, func.count())
        .where(in_range)
        .group_by(ledger.c.business_date)
    )
    with engine.connect() as conn:
        last = {row.business_date: row for row in conn.execute(newest)}
        loaded = {row.business_date: row for row in conn.execute(newest_loaded)}
        full = {row.business_date: row for row in conn.execute(newest_full)}
        counts = {row[0]: int(row[1]) for row in conn.execute(attempts)}
    return [
        _day_status(day, last.get(day), loaded.get(day), full.get(day), counts.get(day, 0))
        for day in days
    ]


def _day_status(day: date, last: Any, loaded: Any, full: Any, attempts: int) -> DayStatus:
    if last is None:
        return DayStatus(day=day, status=MISSING)
    counts: dict[str, Any] = {}
    if full is not None:
        counts = {"records": full.records, "valid": full.staged, "rejected": full.staged_rejected}
    if loaded is not None:
        counts |= {
            "day_sales": loaded.day_sales,
            "day_amount": loaded.day_amount,
            "last_loaded_at": loaded.finished_at,
            "schema_change": getattr(loaded, "schema_change", None),
        }
    return DayStatus(
        day=day,
        status=last.status,
        attempts=attempts,
        last_attempt_at=last.finished_at,
        last_run_id=last.run_id,
        message=last.message,
        **counts,
    )


def baseline_reject_rate(
    engine: Engine, tables: WarehouseTables, before: date, days: int = 7
) -> float | None:
    """The median reject rate of the ``days`` loaded days before ``before`` (newest full load of
    each day); None when none of those days was loaded."""
    ledger = tables.ledger
    newest_loaded = (
        select(ledger.c.business_date, ledger.c.staged, ledger.c.staged_rejected)
        .where(ledger.c.status == LOADED, ledger.c.mode == "full", ledger.c.business_date < before)
        .order_by(ledger.c.business_date.desc(), ledger.c.finished_at.desc())
        .ext(distinct_on(ledger.c.business_date))
        .limit(days)
    )
    with engine.connect() as conn:
        rates = [
            reject_rate(row.staged, row.staged_rejected) for row in conn.execute(newest_loaded)
        ]
    known = [rate for rate in rates if rate is not None]
    return statistics.median(known) if known else None


def failure_recorded(engine: Engine, tables: WarehouseTables, day: date, run_id: str) -> bool:
    """Whether the newest ledger row of ``day`` is a failure of run ``run_id``."""
    ledger = tables.ledger
    newest = (
        select(ledger.c.status, ledger.c.run_id)
        .where(ledger.c.business_date == day)
        .order_by(ledger.c.finished_at.desc(), ledger.c.load_id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(newest).one_or_none()
    return row is not None and (row.status, row.run_id) == (FAILED, run_id)


def days_to_backfill(statuses: Sequence[DayStatus], mode: str) -> list[date]:
    """The days a backfill in ``mode`` runs: ``missing`` (no ledger row), ``failed`` (newest
    attempt failed) or ``all``."""
    if mode not in BACKFILL_MODES:
        raise ValueError(f"backfill mode must be one of {', '.join(BACKFILL_MODES)}, not {mode!r}")
    if mode == "all":
        return [status.day for status in statuses]
    wanted = MISSING if mode == "missing" else FAILED
    return [status.day for status in statuses if status.status == wanted]


def newest_loaded_snapshots(
    engine: Engine, tables: WarehouseTables, days: Sequence[date] | None = None
) -> dict[date, str]:
    """Per business day (of ``days``; None: every day), the snapshot of its newest successful
    load: what lake housekeeping must keep. {} when the warehouse has no ledger yet."""
    ledger = tables.ledger
    if not inspect(engine).has_table(ledger.name, schema=ledger.schema):
        return {}
    newest = (
        select(ledger.c.business_date, ledger.c.snapshot_id)
        .where(ledger.c.status == LOADED, ledger.c.snapshot_id != "")
        .order_by(ledger.c.business_date, ledger.c.finished_at.desc(), ledger.c.load_id.desc())
        .ext(distinct_on(ledger.c.business_date))
    )
    if days is not None:
        newest = newest.where(ledger.c.business_date.in_(list(days)))
    with engine.connect() as conn:
        return {row.business_date: row.snapshot_id for row in conn.execute(newest)}
