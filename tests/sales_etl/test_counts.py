"""The load counters are defined once (sales_etl/counts.py); everything else derives from them."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Numeric

from sales_etl.counts import LoadCounts
from sales_etl.report import RunSummary
from sales_etl.warehouse import LoadStats, warehouse_tables

COUNTS = LoadCounts(
    staged=9,
    staged_rejected=1,
    inserted=5,
    updated=2,
    unchanged=1,
    stale=1,
    voided=1,
    quarantined=1,
    superseded=3,
    rejects_kept=2,
    day_sales=7,
    day_amount=Decimal("12345678901234.5678"),
    high_water_mark=datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=UTC),
)


def test_every_counter_is_a_ledger_column_of_its_type() -> None:
    ledger = warehouse_tables(None).ledger
    expected = {"int": BigInteger, "Decimal": Numeric, "datetime | None": DateTime}
    for counter in fields(LoadCounts):
        column = ledger.c[counter.name]
        assert isinstance(column.type, expected[str(counter.type)]), counter.name
    assert ledger.c["high_water_mark"].type.timezone is True


def test_counts_survive_json_exactly() -> None:
    payload = json.loads(json.dumps(COUNTS.as_payload()))
    assert payload["day_amount"] == "12345678901234.5678"  # exact text, not a float
    assert LoadCounts.from_row(payload) == COUNTS


def test_a_failed_loads_empty_counters_read_as_zero() -> None:
    row = {name: None for name in LoadCounts.names()}
    assert LoadCounts.from_row(row) == LoadCounts()


def test_load_stats_are_the_counts_and_how_the_load_went() -> None:
    stats = LoadStats(**COUNTS.as_row(), winners=8, skipped=True, step_seconds={"stage": 1.0})
    assert stats.counts == COUNTS
    assert type(stats.counts) is LoadCounts
    assert stats.records == 10


def test_the_run_summary_round_trips_through_the_flows_result() -> None:
    summary = RunSummary(
        day="2026-11-23",
        run_id="r1",
        status="loaded",
        records_extracted=10,
        clean=9,
        rejected_by_reason={"missing_field": 1},
        load=COUNTS,
        load_steps={"stage": 0.5},
    )
    result = json.loads(json.dumps(summary.as_dict()))
    assert (result["inserted"], result["rejected"], result["day_amount"]) == (
        5,
        1,
        "12345678901234.5678",
    )
    assert RunSummary.from_dict(result) == summary
    assert summary.brief() == {
        "records_extracted": 10,
        "clean": 9,
        "rejected": 1,
        "inserted": 5,
        "updated": 2,
        "unchanged": 1,
        "rejects_kept": 2,
    }
