"""Every statement of the load is linear (or n log n) in the day: checked on its plans.

A day of 300,000 staged records with 10% rejects, 5% duplicates and voids is loaded twice (new
day, then the rerun) with PostgreSQL's default ``work_mem``; the ``EXPLAIN`` of every statement
must show only hash, merge or index joins: no subplan run per row and no nested loop that scans
(or materializes) a table once per outer row. The quadratic shape found in production
(``WHERE a IS NULL OR x IN (SELECT y FROM big)``) is shown to fail the same check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from sales_etl.schema import CLEAN_SCHEMA, REJECTED_SCHEMA
from sales_etl.settings import WarehouseConfig
from sales_etl.warehouse import create_warehouse_engine, ensure_tables, load_day, tables_for
from tests.utils import DAY

RECORDS = 300_000
INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
SMALL_SCAN_COST = 100  # the planner's cost of scanning ~10,000 narrow rows


def staged_day(records: int) -> tuple[pa.Table, pa.Table]:
    """Clean and rejected tables of a day: 10% rejects (a third without an id, a third voids),
    5% of the sales sent twice (the second copy newer)."""
    start = datetime(2026, 11, 23, tzinfo=UTC)
    clean_rows: dict[str, list[Any]] = {name: [] for name in CLEAN_SCHEMA.names}
    rejected_rows: dict[str, list[Any]] = {name: [] for name in REJECTED_SCHEMA.names}
    for i in range(records):
        moment = start + timedelta(seconds=i % 86_400)
        if i % 10 == 9:
            kind = i % 3
            rejected_rows["record_index"].append(i)
            rejected_rows["sale_id"].append(None if kind == 0 else f"sale-{i // 2:012d}")
            rejected_rows["updated_at"].append(moment + timedelta(hours=1))
            rejected_rows["reason"].append(
                "invalid_sale_id" if kind == 0 else "non_positive_amount" if kind == 1 else "x"
            )
            rejected_rows["detail"].append("d")
            rejected_rows["raw_record"].append(f'{{"n": {i}}}')
            rejected_rows["record_hash"].append(f"h{i:031d}")
            continue
        sale = i // 2 if i % 20 < 2 else i  # pairs of records share a sale id: duplicates
        values = {
            "record_index": i,
            "sale_id": f"sale-{sale:012d}",
            "sale_date": moment,
            "store_id": f"S{i % 50:03d}",
            "product_id": f"P{i % 1000:04d}",
            "customer_id": None if i % 7 == 0 else f"C{i:08d}",
            "quantity": 1 + i % 5,
            "unit_price": Decimal("1.2500"),
            "amount": Decimal("2.5000"),
            "currency": "EUR",
            "updated_at": moment,
            "extra": '{"channel":"web"}' if i % 13 == 0 else None,
        }
        for name, value in values.items():
            clean_rows[name].append(value)
    return (
        pa.table(clean_rows, schema=CLEAN_SCHEMA),
        pa.table(rejected_rows, schema=REJECTED_SCHEMA),
    )


def scans_per_row(plan: dict[str, Any]) -> list[str]:
    """The nodes of a JSON plan that run once per row of another input."""
    problems = []
    for node in _walk(plan["Plan"]):
        children = node.get("Plans", [])
        if node.get("Parent Relationship") == "SubPlan":
            problems.append(
                f"subplan {node.get('Subplan Name')} runs per row ({node['Node Type']})"
            )
        if node["Node Type"] == "Nested Loop" and len(children) == 2:
            inner = children[1]
            while inner["Node Type"] == "Limit":  # a probe for one row: what does it scan?
                inner = inner["Plans"][0]
            # a scan of a table (not a near-empty one), however few rows it is expected to return
            scans = inner["Node Type"] == "Seq Scan" and inner["Total Cost"] > SMALL_SCAN_COST
            if scans or (inner["Node Type"] not in INDEX_SCANS and inner.get("Plan Rows", 0) > 1):
                problems.append(f"nested loop rescans {inner['Node Type']} per outer row")
    return problems


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found += _walk(child)
    return found


@pytest.fixture(scope="module")
def day() -> tuple[pa.Table, pa.Table]:
    return staged_day(RECORDS)


def test_every_load_statement_joins_by_hash_merge_or_index(
    warehouse: WarehouseConfig, day: tuple[pa.Table, pa.Table]
) -> None:
    clean, rejected = day
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    results = []
    try:
        for attempt in ("new day", "rerun"):
            plans: list[tuple[str, Any]] = []
            stats = load_day(
                engine,
                tables,
                DAY,
                attempt,
                [clean],
                [rejected],
                work_mem=None,  # the server's default (4MB here): the setting that went wrong
                plans=plans,
            )
            steps = [step for step, _ in plans]
            assert {
                "pick_winners",
                "update_changed_sales",
                "remove_voided",
                "collect_rejects",
            } <= set(steps)
            problems = {step: scans_per_row(plan[0]) for step, plan in plans}
            assert {step: p for step, p in problems.items() if p} == {}, attempt
            results.append(stats)
    finally:
        engine.dispose()
    first, rerun = results
    assert first.inserted == first.day_sales > 0
    assert (rerun.inserted, rerun.updated, rerun.voided) == (0, 0, 0)
    assert rerun.unchanged == first.inserted
    assert rerun.rejects_kept == first.rejects_kept


def test_the_quadratic_shape_fails_the_check(
    warehouse: WarehouseConfig, day: tuple[pa.Table, pa.Table]
) -> None:
    engine = create_warehouse_engine(warehouse)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TEMP TABLE big AS SELECT g AS y FROM generate_series(1, 1e6) g")
        )
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE outer_rows AS "
                "SELECT g AS x, NULLIF(g % 10, 0) AS a FROM generate_series(1, 100000) g"
            )
        )
        conn.execute(sa.text("ANALYZE big, outer_rows"))
        plan = conn.execute(
            sa.text(
                "EXPLAIN (FORMAT JSON) SELECT * FROM outer_rows "
                "WHERE a IS NULL OR x IN (SELECT y FROM big)"
            )
        ).scalar_one()
        # A probe per outer row (LATERAL ... LIMIT) is only as good as what it scans: a table
        # without an index on the key is scanned per row.
        probe = conn.execute(
            sa.text(
                "EXPLAIN (FORMAT JSON) SELECT * FROM outer_rows o "
                "LEFT JOIN LATERAL (SELECT y FROM big WHERE y = o.x LIMIT 1) b ON true"
            )
        ).scalar_one()
    engine.dispose()
    assert scans_per_row(plan[0]) != []
    assert scans_per_row(probe[0]) == ["nested loop rescans Seq Scan per outer row"]
