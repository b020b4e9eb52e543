"""Reading the load ledger on a real PostgreSQL: day statuses, the baseline, backfill days."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from sales_etl.ledger import baseline_reject_rate, day_statuses, days_to_backfill
from sales_etl.settings import WarehouseConfig
from sales_etl.warehouse import (
    LoadSource,
    WarehouseTables,
    create_warehouse_engine,
    ensure_tables,
    record_failure,
    tables_for,
)

D = [date(2026, 11, 1) + timedelta(days=i) for i in range(10)]


@pytest.fixture
def ledger(warehouse: WarehouseConfig) -> Iterator[tuple[Engine, WarehouseTables]]:
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    yield engine, tables
    engine.dispose()


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def loaded(
    ledger: tuple[Engine, WarehouseTables],
    day: date,
    valid: int,
    rejected: int,
    hour: int = 1,
    mode: str = "full",
) -> None:
    engine, tables = ledger
    row: dict[str, Any] = {
        "business_date": day,
        "status": "loaded",
        "mode": mode,
        "snapshot_id": f"snap-{day}-{hour}",
        "run_id": f"run-{day}-{hour}",
        "records": valid + rejected,
        "staged": valid,
        "staged_rejected": rejected,
        "day_sales": valid,
        "day_amount": Decimal("10.5000") * valid,  # a sum of numeric(18,4): scale 4
        "finished_at": at(day, hour),
    }
    with engine.begin() as conn:
        conn.execute(tables.ledger.insert(), row)


def failed(ledger: tuple[Engine, WarehouseTables], day: date, hour: int = 2) -> None:
    engine, tables = ledger
    record_failure(
        engine, tables, day, f"run-{day}-{hour}", LoadSource(), "warehouse down", at(day, hour)
    )


def test_each_day_is_loaded_failed_or_missing(ledger: tuple[Engine, WarehouseTables]) -> None:
    loaded(ledger, D[0], 95, 5)
    failed(ledger, D[1])  # failed, never loaded
    loaded(ledger, D[2], 90, 10, hour=1)
    failed(ledger, D[2], hour=3)  # loaded earlier, the newest attempt failed
    loaded(ledger, D[3], 80, 20, hour=1)
    loaded(ledger, D[3], 99, 1, hour=5)  # reloaded: the newest load counts
    failed(ledger, D[4], hour=1)
    loaded(ledger, D[4], 50, 0, hour=4)  # failed then loaded: loaded
    loaded(ledger, D[3], 3, 2, hour=6, mode="incremental")  # counts stay those of the full load
    statuses = day_statuses(*ledger, D[0], D[5])
    assert [(s.day, s.status, s.attempts) for s in statuses] == [
        (D[0], "loaded", 1),
        (D[1], "failed", 1),
        (D[2], "failed", 2),
        (D[3], "loaded", 3),
        (D[4], "loaded", 2),
        (D[5], "missing", 0),
    ]
    assert statuses[0].reject_rate == pytest.approx(0.05)
    assert (statuses[1].valid, statuses[1].reject_rate, statuses[1].message) == (
        None,
        None,
        "warehouse down",
    )
    # The failed day keeps the counts of its last successful load, and says when that was.
    assert (statuses[2].valid, statuses[2].rejected) == (90, 10)
    assert statuses[2].last_loaded_at == at(D[2], 1)
    assert statuses[2].last_attempt_at == at(D[2], 3)
    assert (statuses[3].valid, statuses[3].rejected, statuses[3].records) == (99, 1, 100)
    # Day totals (sales and amount in the warehouse) come from the newest load, whatever mode.
    assert (statuses[3].day_sales, statuses[3].day_amount) == (3, Decimal("31.5000"))
    assert statuses[3].as_row() == {
        "day": "2026-11-04",
        "status": "loaded",
        "records": 100,
        "valid": 99,
        "rejected": 1,
        "reject rate": "1.00%",
        "sales in warehouse": 3,
        "amount": "31.5000",
        "last load (UTC)": "2026-11-04 06:00:00",
        "last attempt (UTC)": "2026-11-04 06:00:00",
        "attempts": 3,
        "message": "",
        "schema change": "",
        "last flow run": statuses[3].last_run_id,  # no UI known: the run's id
        "fill it with": "",
        "or the backfill deployment": "",
    }
    # A failed day links to its run and says what fills it; a missing day has no run.
    failed_row = statuses[1].as_row("http://127.0.0.1:4200/")
    assert failed_row["last flow run"] == (
        f"http://127.0.0.1:4200/runs/flow-run/{statuses[1].last_run_id}"
    )
    assert failed_row["fill it with"] == "python -m flows.daily_sales --date 2026-11-02"
    assert failed_row["or the backfill deployment"] == (
        "prefect deployment run 'Daily Sales Backfill/backfill' "
        "-p start=2026-11-02 -p end=2026-11-02 -p mode=failed"
    )
    missing_row = statuses[5].as_row("http://127.0.0.1:4200")
    assert missing_row["last flow run"] is None
    assert missing_row["fill it with"] == "python -m flows.daily_sales --date 2026-11-06"
    assert missing_row["or the backfill deployment"].endswith("-p mode=missing")

    assert days_to_backfill(statuses, "missing") == [D[5]]
    assert days_to_backfill(statuses, "failed") == [D[1], D[2]]
    assert days_to_backfill(statuses, "all") == D[:6]
    with pytest.raises(ValueError, match="missing, failed, all"):
        days_to_backfill(statuses, "some")


def test_baseline_is_the_median_of_the_previous_seven_loaded_days(
    ledger: tuple[Engine, WarehouseTables],
) -> None:
    assert baseline_reject_rate(*ledger, D[9]) is None
    rates = [1, 2, 3, 50, 4, 5, 6, 7]  # percent, D[0]..D[7]
    for day, rate in zip(D, rates, strict=False):
        loaded(ledger, day, 100 - rate, rate)
    failed(ledger, D[8])  # no loaded row: not part of the baseline
    loaded(ledger, D[9], 10, 90)  # the day judged itself is not part of its baseline
    loaded(ledger, D[7], 1, 9, hour=9, mode="incremental")  # not a whole day: not counted
    # The 7 loaded days before D[9] are D[1]..D[7]: 2, 3, 50, 4, 5, 6, 7 -> median 5 %.
    assert baseline_reject_rate(*ledger, D[9]) == pytest.approx(0.05)
    assert baseline_reject_rate(*ledger, D[9], days=3) == pytest.approx(0.06)
    assert baseline_reject_rate(*ledger, D[1]) == pytest.approx(0.01)
