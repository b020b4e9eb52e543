"""Hostile records: arbitrary JSON through validation and the real PostgreSQL load. Every
offered sale_id lands in sales or sales_rejected, in both only when a newer malformed version is
quarantined next to its sale (the invariant, docs/architecture.md), nothing crashes,
SQL-looking text is stored as text."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from devharness.demo_api import DemoData, generate_record, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl import jsontext
from sales_etl.settings import WarehouseConfig
from sales_etl.transform import clean_table, rejected_table
from sales_etl.validate import MAX_ID_CHARS, RAW_HEAD_CHARS, validate_records
from sales_etl.warehouse import create_warehouse_engine, ensure_tables, load_day, tables_for
from tests.sales_etl import validate_reference
from tests.utils import (
    ABSURD_DATES,
    DAY,
    DAY_TEXT,
    SQLISH,
    hostile_records,
    pipeline_env,
    set_env,
    table_names,
    table_rows,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def valid_id(value: Any) -> bool:
    """A sale_id the rules accept (the reference implementation's test; C1 and bidirectional
    controls and lone surrogates are refused too: found by hypothesis, a sale_id "\x80")."""
    return validate_reference.valid_id(value, MAX_ID_CHARS["sale_id"])


# Found by hypothesis: a sale and, 1 us newer, a version of it without sale_date. The newer
# malformed version is quarantined next to the stored sale; the sale stays.
_SALE = {**generate_record(DAY_TEXT, 1), "sale_id": "S-0"}
QUARANTINED_PAIR: list[Any] = [
    {**_SALE, "updated_at": "2026-11-22T00:00:00+00:00"},
    {
        **{k: v for k, v in _SALE.items() if k != "sale_date"},
        "updated_at": "2026-11-22T00:00:00.000001+00:00",
    },
]


@pytest.fixture
def warehouse_engine(pg_url: str) -> Any:
    config = WarehouseConfig(url=SecretStr(pg_url))
    engine = create_warehouse_engine(config)
    tables = tables_for(config)
    ensure_tables(engine, tables)
    yield engine, tables
    engine.dispose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=st.lists(hostile_records(), min_size=1, max_size=25))
@example(records=QUARANTINED_PAIR)
@example(records=[{**_SALE, "sale_id": "\x80"}])  # a C1 control: an invalid sale_id
def test_hostile_records_each_sale_lands_where_the_invariant_says(
    warehouse_engine: Any, records: list[Any]
) -> None:
    engine, tables = warehouse_engine
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE sales, sales_rejected"))
    # Exactly what the API would send, parsed exactly as the pipeline parses it.
    parsed = jsontext.loads(json.dumps({"data": records}, allow_nan=True))["data"]

    result = validate_records(parsed, DAY)
    assert len(result.clean) + len(result.rejected) == len(parsed)
    load_day(
        engine,
        tables,
        DAY,
        "run",
        [clean_table(result.clean)],
        [rejected_table(result.rejected)],
    )

    with engine.connect() as conn:
        sales = conn.execute(sa.text("SELECT sale_id, store_id, product_id FROM sales")).all()
        sale_versions = dict(conn.execute(sa.text("SELECT sale_id, updated_at FROM sales")).all())
        rejects = conn.execute(
            sa.text("SELECT sale_id, occurrences, updated_at FROM sales_rejected")
        ).all()
    sales_ids = [r[0] for r in sales]
    rejected_ids = {r[0] for r in rejects if r[0] is not None}
    offered = {r["sale_id"] for r in parsed if isinstance(r, dict) and valid_id(r.get("sale_id"))}
    assert len(sales_ids) == len(set(sales_ids))
    assert set(sales_ids) | rejected_ids == offered
    # A sale_id is in both tables only when a malformed version newer than its sale is
    # quarantined (docs/architecture.md, "The invariant"): no reject of a sale is as old as its
    # row in sales.
    for sale_id, _, rejected_version in rejects:
        if sale_id in sale_versions:
            assert rejected_version is not None, sale_id
            assert rejected_version > sale_versions[sale_id], sale_id
    without_id = sum(1 for r in parsed if not isinstance(r, dict) or not valid_id(r.get("sale_id")))
    assert sum(n for sale_id, n, _ in rejects if sale_id is None) == without_id
    # Text that looks like SQL is stored as the very text that was sent.
    sent = {
        (r["sale_id"], r["store_id"], r["product_id"])
        for r in parsed
        if isinstance(r, dict)
        and all(type(r.get(k)) is str for k in ("sale_id", "store_id", "product_id"))
    }
    assert {tuple(r) for r in sales} <= sent


HOSTILE_CORPUS: list[Any] = [
    {**generate_record(DAY_TEXT, 1), "sale_id": SQLISH[0], "store_id": SQLISH[1]},
    {**generate_record(DAY_TEXT, 2), "product_id": SQLISH[3], "extra": {"a": [1, None]}},
    {**generate_record(DAY_TEXT, 3), "amount": math.nan},
    {**generate_record(DAY_TEXT, 4), "quantity": math.inf},
    {**generate_record(DAY_TEXT, 5), "store_id": "S\x00\x01\x1b[31m"},
    {**generate_record(DAY_TEXT, 6), "sale_date": ABSURD_DATES[1]},
    {**generate_record(DAY_TEXT, 7), "amount": 10**400},
    {**generate_record(DAY_TEXT, 8), "customer_id": "c" * 200_000},
    {**generate_record(DAY_TEXT, 9), "currency": ["EUR"]},
    {**generate_record(DAY_TEXT, 10), "sale_id": 12345},
    {k: v for k, v in generate_record(DAY_TEXT, 11).items() if k != "updated_at"},
    None,
    "'; DROP TABLE sales; --",
    [1, 2, 3],
    {},
]


def test_hostile_records_through_the_demo_api_and_the_flow(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    data = DemoData(records={DAY_TEXT: HOSTILE_CORPUS})
    with serve_demo_api(data) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
        # The corpus is hostile on purpose (13 of 15 records): no hard reject-rate limit here.
        monkeypatch.setenv("QUALITY_FAIL_REJECT_RATE", "1")
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    sales = table_rows(pg_url, "sales", ["sale_id", "store_id", "product_id"])
    rejects = table_rows(pg_url, "sales_rejected", ["sale_id", "reason"])
    assert table_names(pg_url) == {"sales", "sales_rejected", "sales_load_ledger"}
    # Only two of the corpus are valid sales; every other record is kept as a reject.
    assert sorted(r[0] for r in sales) == sorted([SQLISH[0], f"{DAY:%Y%m%d}-000000002"])
    by_id = {r[0]: r for r in sales}
    assert by_id[SQLISH[0]][1] == SQLISH[1]  # stored as text, executed never
    assert by_id[f"{DAY:%Y%m%d}-000000002"][2] == SQLISH[3]
    assert len(sales) + len(rejects) == len(HOSTILE_CORPUS)


def test_a_record_nested_100000_deep_costs_one_reject_not_the_page(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    """Through the flow: the valid records of the page load, the deep one is a reject."""
    good = [generate_record(DAY_TEXT, i) for i in range(40)]
    deep = '{"sale_id": "DEEP", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    body = (
        '{"data": ['
        + ", ".join(
            [*(json.dumps(r) for r in good[:20]), deep, *(json.dumps(r) for r in good[20:])]
        )
        + '], "next_cursor": null}'
    ).encode()
    with serve_demo_api(DemoData(records={DAY_TEXT: [*good, None]})) as api:
        api.page_cache = {(DAY_TEXT, 0, 200, None): body}
        set_env(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
        state = daily_sales(run_date=DAY, return_state=True)
        assert api.stats()["sales_requests"] == 1  # read once: not a broken page, no retry
    assert state.is_completed(), state.message
    sales = [row[0] for row in table_rows(pg_url, "sales", ["sale_id"], order_by=["sale_id"])]
    rejects = table_rows(pg_url, "sales_rejected", ["sale_id", "reason", "detail", "raw_record"])
    assert sales == sorted(r["sale_id"] for r in good)
    assert [(r[0], r[1], r[2]) for r in rejects] == [
        (None, "record_too_deep", "record nests 100001 levels deep; the limit is 64")
    ]
    stored = json.loads(rejects[0][3])  # over the size limit too: its head, length and hash
    assert (stored["_bytes"], stored["_head"]) == (len(deep), deep[:RAW_HEAD_CHARS])
    assert stored["_sha256"] == hashlib.sha256(deep.encode()).hexdigest()


def test_a_record_over_the_size_limit_costs_one_reject_not_the_page(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    """Through the flow: the valid records of the page load, the 1 MB one is a reject."""
    good = [generate_record(DAY_TEXT, i) for i in range(40)]
    big = {**generate_record(DAY_TEXT, 99), "sale_id": "BIG", "note": "n" * 1_000_000}
    records = [*good[:20], big, *good[20:]]
    with serve_demo_api(DemoData(records={DAY_TEXT: records})) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
        state = daily_sales(run_date=DAY, return_state=True)
        assert api.stats()["sales_requests"] == 1  # read once: not a broken page, no retry
    assert state.is_completed(), state.message
    assert state.result()["rejected_by_reason"] == {"record_too_large": 1}
    sales = [row[0] for row in table_rows(pg_url, "sales", ["sale_id"], order_by=["sale_id"])]
    rejects = table_rows(pg_url, "sales_rejected", ["sale_id", "reason", "detail", "raw_record"])
    assert sales == sorted(r["sale_id"] for r in good)
    sent = len(json.dumps(big).encode())
    assert [(r[0], r[1], r[2]) for r in rejects] == [
        ("BIG", "record_too_large", f"record is {sent:,} bytes as sent; the limit is 65,536")
    ]
    text = jsontext.dumps(jsontext.loads(json.dumps(big)))
    assert json.loads(rejects[0][3]) == {
        "_truncated": True,
        "_bytes": sent,
        "_length": len(text),
        "_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "_head": text[:RAW_HEAD_CHARS],
    }
