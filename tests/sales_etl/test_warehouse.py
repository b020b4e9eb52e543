"""The load of a day into PostgreSQL: idempotent, newest version wins, rejects replaced."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from devharness.raw_days import write_realistic_day
from sales_etl.errors import WarehouseError
from sales_etl.lake import Lake, open_lake
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import RawSnapshotWriter, SnapshotRef, iter_tables
from sales_etl.source import Page
from sales_etl.transform import transform_snapshot
from sales_etl.warehouse import (
    ADDED_COLUMNS,
    STAMP_COLUMNS,
    LoadSource,
    LoadStats,
    create_warehouse_engine,
    day_high_water_mark,
    ensure_tables,
    load_day,
    tables_for,
    warehouse_tables,
)
from tests.utils import DAY, query, table_contents, table_rows


def sale(
    sale_id: str, amount: Any = "10.00", updated: str = "2026-11-23T12:00:00Z", **kw: Any
) -> dict[str, Any]:
    record = {
        "sale_id": sale_id,
        "sale_date": "2026-11-23T10:00:00+00:00",
        "store_id": "S1",
        "product_id": "P1",
        "customer_id": None,
        "quantity": 1,
        "unit_price": "10.00",
        "amount": amount,
        "currency": "EUR",
        "updated_at": updated,
    }
    record.update(kw)
    return record


def snapshot(lake: Lake, pages: list[list[Any]], chunk_records: int = 100_000) -> SnapshotRef:
    writer = RawSnapshotWriter(lake, DAY, part_bytes=1)
    for number, records in enumerate(pages):
        body = json.dumps({"data": records, "next_cursor": None}).encode()
        writer.add(Page(number, body, records, None))
    return transform_snapshot(lake, writer.commit(), chunk_records=chunk_records)


def load(
    warehouse: WarehouseConfig,
    lake: Lake,
    clean: SnapshotRef,
    run_id: str = "r1",
    source: LoadSource | None = None,
    force: bool = False,
    keep_extra: bool = True,
    new_day_shortcut: bool = True,
) -> LoadStats:
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    try:
        ensure_tables(engine, tables)
        return load_day(
            engine,
            tables,
            DAY,
            run_id,
            iter_tables(lake, clean.manifest["sales_parts"]),
            iter_tables(lake, clean.manifest["rejected_parts"]),
            source,
            force=force,
            keep_extra=keep_extra,
            new_day_shortcut=new_day_shortcut,
        )
    finally:
        engine.dispose()


@pytest.fixture
def lake(local_lake: LakeConfig) -> Lake:
    return open_lake(local_lake)


def test_load_types_columns_and_counts(warehouse: WarehouseConfig, lake: Lake, pg_url: str) -> None:
    clean = snapshot(lake, [[sale("a", "19.99"), sale("b", "5"), sale("c", "0"), {"x": 1}]])
    stats = load(warehouse, lake, clean)
    assert (stats.inserted, stats.updated, stats.unchanged, stats.rejects_kept) == (2, 0, 0, 2)
    assert query(pg_url, "SELECT sale_id, amount, quantity, sale_date FROM sales ORDER BY 1") == [
        ("a", Decimal("19.9900"), 1, datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("b", Decimal("5.0000"), 1, datetime(2026, 11, 23, 10, tzinfo=UTC)),
    ]
    types = dict(
        query(
            pg_url,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'sales'",
        )
    )
    assert types["sale_date"] == types["updated_at"] == "timestamp with time zone"
    assert types["amount"] == types["unit_price"] == "numeric"
    assert types["quantity"] == "integer"
    assert query(pg_url, "SELECT sale_id, reason FROM sales_rejected ORDER BY 2") == [
        (None, "invalid_sale_id"),
        ("c", "non_positive_amount"),
    ]


def test_rerun_changes_nothing(warehouse: WarehouseConfig, lake: Lake, pg_url: str) -> None:
    clean = snapshot(lake, [[sale("a"), sale("b"), sale("bad", "x")]])
    load(warehouse, lake, clean, run_id="first")
    before = query(pg_url, "SELECT * FROM sales ORDER BY sale_id")
    rejected_before = query(pg_url, "SELECT * FROM sales_rejected ORDER BY record_hash")
    stats = load(warehouse, lake, clean, run_id="second")
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, 2)
    assert query(pg_url, "SELECT * FROM sales ORDER BY sale_id") == before
    assert query(pg_url, "SELECT * FROM sales_rejected ORDER BY record_hash") == rejected_before


def test_newest_version_wins_within_and_across_loads(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    first = snapshot(
        lake,
        [
            [sale("a", "1.00", "2026-11-23T12:00:00Z"), sale("b", "1.00")],
            [sale("a", "2.00", "2026-11-23T13:00:00Z"), sale("a", "1.50", "2026-11-23T11:00:00Z")],
        ],
    )
    stats = load(warehouse, lake, first)
    assert stats.superseded == 2
    assert query(pg_url, "SELECT sale_id, amount FROM sales ORDER BY 1") == [
        ("a", Decimal("2.0000")),
        ("b", Decimal("1.0000")),
    ]
    newer = snapshot(lake, [[sale("a", "3.00", "2026-11-23T14:00:00Z")]])
    assert load(warehouse, lake, newer).updated == 1
    older = snapshot(lake, [[sale("a", "0.50", "2026-11-23T09:00:00Z")]])
    stats = load(warehouse, lake, older)  # a stale snapshot never overwrites a newer version
    assert (stats.updated, stats.unchanged, stats.stale) == (0, 0, 1)
    assert query(pg_url, "SELECT amount FROM sales WHERE sale_id = 'a'") == [(Decimal("3.0000"),)]


def test_malformed_newest_version_is_quarantined_next_to_the_good_one(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    clean = snapshot(
        lake,
        [[sale("a", "1.00", "2026-11-23T12:00:00Z"), sale("a", "oops", "2026-11-23T13:00:00Z")]],
    )
    stats = load(warehouse, lake, clean)
    assert (stats.inserted, stats.quarantined, stats.rejects_kept) == (1, 1, 1)
    assert query(pg_url, "SELECT sale_id, amount FROM sales") == [("a", Decimal("1.0000"))]
    assert query(pg_url, "SELECT sale_id, reason FROM sales_rejected") == [("a", "invalid_amount")]


def test_rejects_of_a_day_are_replaced_not_duplicated(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    broken = {"no": "sale_id"}
    load(warehouse, lake, snapshot(lake, [[sale("a", "x"), sale("b", "y"), broken, broken]]))
    assert query(pg_url, "SELECT sale_id, occurrences FROM sales_rejected ORDER BY 1") == [
        ("a", 1),
        ("b", 1),
        (None, 2),  # identical records without an id collapse into one reject, counted
    ]
    # The source fixed "a"; "b" is still broken: a's reject goes, b's stays once.
    load(warehouse, lake, snapshot(lake, [[sale("a"), sale("b", "y"), broken]]))
    assert query(pg_url, "SELECT sale_id FROM sales") == [("a",)]
    assert query(pg_url, "SELECT sale_id, occurrences FROM sales_rejected ORDER BY 1") == [
        ("b", 1),
        (None, 1),
    ]


def test_every_sale_id_in_exactly_one_table(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    records = [sale(f"id{i}", "1.00" if i % 3 else "-1") for i in range(50)]
    records += [sale(f"id{i}", "2.00", "2026-11-23T13:00:00Z") for i in range(0, 50, 5)]
    load(warehouse, lake, snapshot(lake, [records[:30], records[30:]], chunk_records=7))
    loaded = {r[0] for r in query(pg_url, "SELECT sale_id FROM sales")}
    rejected = {r[0] for r in query(pg_url, "SELECT sale_id FROM sales_rejected")}
    assert loaded.isdisjoint(rejected)
    assert loaded | rejected == {f"id{i}" for i in range(50)}


def test_concurrent_loads_of_a_day_end_like_one(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    clean = snapshot(lake, [[sale(f"id{i}") for i in range(200)] + [sale("bad", "x")]])
    errors: list[BaseException] = []

    def run(run_id: str) -> None:
        try:
            load(warehouse, lake, clean, run_id=run_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"r{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert query(pg_url, "SELECT count(*), count(DISTINCT run_id) FROM sales") == [(200, 1)]
    assert query(pg_url, "SELECT count(*) FROM sales_rejected") == [(1,)]


def test_configured_schema_and_sql_looking_text(lake: Lake, pg_url: str) -> None:
    from pydantic import SecretStr

    config = WarehouseConfig(url=SecretStr(pg_url), db_schema="analytics")
    evil = "x'); DROP TABLE sales; --"
    load(config, lake, snapshot(lake, [[sale("a", store_id=evil)]]))
    assert query(pg_url, "SELECT store_id FROM analytics.sales") == [(evil,)]


# Late data: one day loaded several times while the source changes it in between.
T = "2026-11-23T{:02d}:00:00Z".format


def state(url: str) -> tuple[dict[str, Decimal], set[tuple[str | None, str]]]:
    """The amount of every sale and the reason of every reject, by sale_id."""
    sales = dict(table_rows(url, "sales", ["sale_id", "amount"]))
    return sales, set(table_rows(url, "sales_rejected", ["sale_id", "reason"]))


def assert_invariant(url: str) -> None:
    """For every sale_id the newest well-formed version decides, and nothing contradicts it:
    no sale sits next to a void at least as new; no reject is older than its stored sale."""
    contradicted = query(
        url,
        "SELECT r.sale_id, r.reason FROM sales s JOIN sales_rejected r USING (sale_id) "
        "WHERE r.updated_at IS NULL OR r.updated_at <= s.updated_at",
    )
    assert contradicted == []


def test_late_data_converges_to_the_newest_truth(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    # Load 1: sales a-e; k malformed (no good version yet); m only ever a void.
    first = [
        *(sale(x, "10.00", T(10)) for x in "abcde"),
        sale("k", "oops", T(10)),
        sale("m", "0", T(10)),
    ]
    stats = load(warehouse, lake, snapshot(lake, [first]), run_id="1")
    assert (stats.inserted, stats.voided) == (5, 0)
    assert state(pg_url) == (
        {x: Decimal("10.0000") for x in "abcde"},
        {("k", "invalid_amount"), ("m", "non_positive_amount")},
    )
    assert_invariant(pg_url)

    # Load 2: a updated; b voided; c gets a newer malformed version; k fixed; d stale; n new;
    # e voided (to come back in load 3).
    second = [
        sale("a", "11.00", T(12)),
        sale("b", "0", T(12)),
        sale("c", "10.00", T(12), currency="XXX"),
        sale("k", "7.00", T(12)),
        sale("d", "1.00", T(9)),
        sale("n", "5.00", T(12)),
        sale("e", "-3.00", T(12)),
    ]
    stats = load(warehouse, lake, snapshot(lake, [second]), run_id="2")
    assert (stats.inserted, stats.updated, stats.voided, stats.stale, stats.quarantined) == (
        2,
        1,
        2,
        1,
        1,
    )
    sales, rejects = state(pg_url)
    assert sales == {
        "a": Decimal("11.0000"),
        "c": Decimal("10.0000"),  # a malformed update never destroys the stored good version
        "d": Decimal("10.0000"),  # an older version never overwrites a newer one
        "k": Decimal("7.0000"),  # the fix moves k to sales; its old reject goes
        "n": Decimal("5.0000"),
    }
    assert rejects == {
        ("b", "non_positive_amount"),
        ("c", "invalid_currency"),
        ("e", "non_positive_amount"),
        ("m", "non_positive_amount"),
    }
    assert_invariant(pg_url)
    assert query(pg_url, "SELECT count(*), sum(amount) FROM sales") == [(5, Decimal("43.0000"))]
    assert (stats.day_sales, stats.day_amount) == (5, Decimal("43.0000"))

    # Load 3: e comes back newer than its void; b's stale positive stays voided; c is fixed by
    # a good version newer than its quarantined one.
    third = [sale("e", "4.00", T(14)), sale("b", "10.00", T(11)), sale("c", "12.00", T(14))]
    stats = load(warehouse, lake, snapshot(lake, [third]), run_id="3")
    assert (stats.inserted, stats.updated, stats.stale, stats.voided) == (1, 1, 1, 0)
    sales, rejects = state(pg_url)
    assert sales == {
        "a": Decimal("11.0000"),
        "c": Decimal("12.0000"),
        "d": Decimal("10.0000"),
        "e": Decimal("4.0000"),
        "k": Decimal("7.0000"),
        "n": Decimal("5.0000"),
    }
    assert rejects == {("b", "non_positive_amount"), ("m", "non_positive_amount")}
    assert_invariant(pg_url)

    # The same three loads in one go (one full snapshot of everything) end the same way.
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE sales, sales_rejected"))
    engine.dispose()
    load(warehouse, lake, snapshot(lake, [first, second, third]), run_id="all")
    assert state(pg_url) == (sales, rejects)


def test_ledger_skips_a_loaded_snapshot_and_keeps_the_high_water_mark(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    clean = snapshot(lake, [[sale("a", "1.00", T(10)), sale("b", "x", T(13))]])
    source = LoadSource(snapshot_id=clean.snapshot_id, mode="full", records=2)
    first, second = (
        load(warehouse, lake, clean, "1", source),
        load(warehouse, lake, clean, "2", source),
    )
    forced = load(warehouse, lake, clean, "3", source, force=True)
    assert (first.skipped, first.inserted) == (False, 1)
    assert (second.skipped, second.inserted, second.unchanged) == (True, 0, 1)
    assert (forced.skipped, forced.inserted, forced.unchanged) == (False, 0, 1)
    engine = create_warehouse_engine(warehouse)
    try:
        mark = day_high_water_mark(engine, tables_for(warehouse), DAY)
    finally:
        engine.dispose()
    assert mark == datetime(2026, 11, 23, 13, tzinfo=UTC)
    assert query(pg_url, "SELECT run_id, status, mode FROM sales_load_ledger ORDER BY load_id") == [
        ("1", "loaded", "full"),
        ("3", "loaded", "full"),
    ]


def test_a_server_in_another_time_zone_loads_the_same_instants_and_marks_them_in_utc(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    database = sa.make_url(pg_url).database
    query(pg_url, f"ALTER DATABASE {database} SET timezone = 'America/New_York'")
    older = snapshot(lake, [[sale("a", "1.00", T(10))]])
    newer = snapshot(lake, [[sale("a", "1.00", T(13)), sale("b", "2.00", T(9))]])
    load(warehouse, lake, newer, "1")
    # The older snapshot's mark is the ledger's, read back inside the load.
    stats = load(warehouse, lake, older, "2", force=True)
    assert stats.high_water_mark == datetime(2026, 11, 23, 13, tzinfo=UTC)
    assert stats.high_water_mark is not None and stats.high_water_mark.utcoffset() == timedelta(0)
    assert table_rows(pg_url, "sales", ["sale_id", "sale_date", "updated_at"]) == [
        ("a", datetime(2026, 11, 23, 10, tzinfo=UTC), datetime(2026, 11, 23, 13, tzinfo=UTC)),
        ("b", datetime(2026, 11, 23, 10, tzinfo=UTC), datetime(2026, 11, 23, 9, tzinfo=UTC)),
    ]


def test_a_batch_that_fails_to_read_fails_the_load_and_writes_nothing(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    from sales_etl.errors import LakeError

    clean = snapshot(lake, [[sale("a"), sale("b")]], chunk_records=1)
    parts = list(iter_tables(lake, clean.manifest["sales_parts"]))

    class Torn:
        """Sales whose second part cannot be read (on every reading)."""

        def __iter__(self) -> Any:
            yield parts[0]
            raise LakeError("part 2 is torn")

    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    try:
        with pytest.raises(LakeError, match="part 2 is torn"):
            load_day(engine, tables, DAY, "r", Torn(), [])
    finally:
        engine.dispose()
    assert query(pg_url, "SELECT count(*) FROM sales") == [(0,)]
    assert query(pg_url, "SELECT count(*) FROM sales_load_ledger") == [(0,)]


class _Readings:
    """Batches that differ between the load's first reading (versions) and its second (rows)."""

    def __init__(self, first: list[Any], second: list[Any]) -> None:
        self.readings = [first, second]

    def __iter__(self) -> Any:
        return iter(self.readings.pop(0) if len(self.readings) > 1 else self.readings[0])


@pytest.mark.parametrize(
    ("what", "second"),
    [
        ("sales", lambda parts: parts[:1]),  # a winning sale missing from the second reading
        ("sales", lambda parts: [parts[0].set_column(0, "record_index", pa.array([99]))]),
        ("rejects", lambda parts: []),  # a reject to keep missing from the second reading
    ],
    ids=["sale-missing", "sale-unseen", "reject-missing"],
)
def test_batches_that_change_between_the_two_readings_fail_the_load(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str, what: str, second: Any
) -> None:
    clean = snapshot(lake, [[sale("a")], [sale("b"), {"x": 1}]], chunk_records=1)
    sales = list(iter_tables(lake, clean.manifest["sales_parts"]))
    rejects = list(iter_tables(lake, clean.manifest["rejected_parts"]))
    batches: dict[str, Any] = {"sales": sales, "rejects": rejects}
    batches[what] = _Readings(batches[what], second(batches[what]))
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    try:
        with pytest.raises(WarehouseError, match="the load was rolled back"):
            load_day(engine, tables, DAY, "r", batches["sales"], batches["rejects"])
    finally:
        engine.dispose()
    assert query(pg_url, "SELECT count(*) FROM sales") == [(0,)]
    assert query(pg_url, "SELECT count(*) FROM sales_rejected") == [(0,)]


@pytest.mark.parametrize("statement", ["INSERT", "UPDATE"])
def test_rows_the_table_silently_refuses_fail_the_load(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str, statement: str
) -> None:
    # A trigger that drops every new (or changed) row: the server writes less than was sent.
    load(warehouse, lake, snapshot(lake, [[sale("a")]]))
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RETURN NULL; END $$"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TRIGGER drop_rows BEFORE {statement} ON sales "
                "FOR EACH ROW EXECUTE FUNCTION drop_row()"
            )
        )
    engine.dispose()
    changed = snapshot(lake, [[sale("a", "12.00", "2026-11-23T13:00:00Z"), sale("b")]])
    expected = "wrote 0 of its 1 new" if statement == "INSERT" else "reconciliation failed"
    with pytest.raises(WarehouseError, match=expected):
        load(warehouse, lake, changed, run_id="r2")
    assert query(pg_url, "SELECT sale_id, amount FROM sales") == [("a", Decimal("10.0000"))]


def test_the_load_refuses_batches_it_cannot_read_twice(
    warehouse: WarehouseConfig, lake: Lake
) -> None:
    clean = snapshot(lake, [[sale("a")]])
    once = iter(list(iter_tables(lake, clean.manifest["sales_parts"])))
    engine = create_warehouse_engine(warehouse)
    try:
        with pytest.raises(TypeError, match="reads its batches twice"):
            load_day(engine, tables_for(warehouse), DAY, "r", once, [])
    finally:
        engine.dispose()


# The contract's largest amount: numeric(18,4), 18 significant digits (beyond float64).
MAX_AMOUNT = "99999999999999.9999"


def test_a_day_of_sales_near_the_contract_maximum_loads_with_exact_totals(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    records = [sale(f"max-{i:04d}", MAX_AMOUNT, unit_price=MAX_AMOUNT) for i in range(2_999)] + [
        sale("exact", "12345678901234.5678", unit_price="12345678901234.5678")
    ]
    clean = snapshot(lake, [records[:1_500], records[1_500:]])
    source = LoadSource(snapshot_id=clean.snapshot_id, records=len(records))
    stats = load(warehouse, lake, clean, source=source)
    total = Decimal(MAX_AMOUNT) * 2_999 + Decimal("12345678901234.5678")
    assert (stats.inserted, stats.rejects_kept, stats.day_sales) == (3_000, 0, 3_000)
    assert stats.day_amount == total == Decimal("299912345678901234.2679")
    assert query(pg_url, "SELECT count(*), sum(amount) FROM sales") == [(3_000, total)]
    assert query(pg_url, "SELECT amount FROM sales WHERE sale_id = 'exact'") == [
        (Decimal("12345678901234.5678"),)
    ]
    assert query(pg_url, "SELECT status, day_sales, day_amount FROM sales_load_ledger") == [
        ("loaded", 3_000, total)
    ]
    rerun = load(warehouse, lake, clean, run_id="again", source=source)
    assert (rerun.skipped, rerun.day_amount) == (True, total)


def test_a_ledger_created_with_the_old_total_type_is_widened_in_place_on_the_next_load(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    engine = create_warehouse_engine(warehouse)
    try:
        ensure_tables(engine, tables_for(warehouse))
    finally:
        engine.dispose()
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:  # the ledger as the previous version created it, with a row
        conn.execute(
            sa.text("ALTER TABLE sales_load_ledger ALTER COLUMN day_amount TYPE numeric(20,4)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO sales_load_ledger (business_date, status, mode, snapshot_id, run_id,"
                " day_sales, day_amount, finished_at) VALUES ('2026-11-22', 'loaded', 'full',"
                " 'old', 'old-run', 1, 1234567890123456.7890, now())"
            )
        )
    column_type = (
        "SELECT format_type(atttypid, atttypmod), c.oid, c.relfilenode FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relname = 'sales_load_ledger' AND a.attname = 'day_amount'"
    )
    [(old_type, oid, filenode)] = query(pg_url, column_type)
    assert old_type == "numeric(20,4)"

    records = [sale(f"max-{i:04d}", MAX_AMOUNT, unit_price=MAX_AMOUNT) for i in range(3_000)]
    stats = load(warehouse, lake, snapshot(lake, [records]))

    # Altered, not recreated or rewritten: same table, same file, the old row kept.
    assert query(pg_url, column_type) == [("numeric", oid, filenode)]
    assert query(pg_url, "SELECT run_id, day_amount FROM sales_load_ledger ORDER BY load_id") == [
        ("old-run", Decimal("1234567890123456.7890")),
        ("r1", Decimal(MAX_AMOUNT) * 3_000),
    ]
    assert stats.day_amount == Decimal("299999999999999999.7000")
    admin.dispose()


def previous_version_tables(schema_name: str | None = None) -> sa.MetaData:
    """The tables as the version before the schema contract created them: the current DDL
    without the columns that version lacked (``ADDED_COLUMNS``) and without the defaults of the
    stamp columns (``STAMP_COLUMNS``: that version sent the run id and the time with each row).
    """
    current = warehouse_tables(schema_name)
    metadata = sa.MetaData(schema=schema_name)
    for attribute in ("sales", "rejected", "ledger"):
        table: sa.Table = getattr(current, attribute)
        added = {name for owner, name in ADDED_COLUMNS if owner == attribute}
        stamps = {name for owner, name, _ in STAMP_COLUMNS if owner == attribute}
        columns = [c._copy() for c in table.columns if c.name not in added]
        for column in columns:
            if column.name in stamps:
                column.server_default = None
        sa.Table(table.name, metadata, *columns)
    return metadata


def test_unknown_fields_land_in_the_extra_jsonb_and_a_rerun_changes_nothing(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    records = [sale("a"), sale("b", channel="web", meta={"tags": [1, "x"]}), sale("c", gone=None)]
    first = load(warehouse, lake, snapshot(lake, [records]))
    assert first.inserted == 3
    assert query(pg_url, "SELECT sale_id, extra FROM sales ORDER BY sale_id") == [
        ("a", None),
        ("b", {"channel": "web", "meta": {"tags": [1, "x"]}}),
        ("c", None),
    ]
    # The same records again (a new snapshot): nothing changes, the jsonb compared as values.
    again = load(warehouse, lake, snapshot(lake, [records]), run_id="r2")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    # A newer version with another extra value updates it; discard writes null there.
    newer = [sale("b", updated="2026-11-23T13:00:00Z", channel="store")]
    assert load(warehouse, lake, snapshot(lake, [newer]), run_id="r3").updated == 1
    assert query(pg_url, "SELECT extra FROM sales WHERE sale_id = 'b'") == [({"channel": "store"},)]
    discarded = load(warehouse, lake, snapshot(lake, [newer]), run_id="r4", keep_extra=False)
    assert discarded.updated == 1
    assert query(pg_url, "SELECT count(*) FROM sales WHERE extra IS NOT NULL") == [(0,)]


def test_a_warehouse_of_the_previous_version_gets_the_new_columns_and_defaults_in_place(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str
) -> None:
    admin = sa.create_engine(pg_url)
    previous_version_tables().create_all(admin)
    with admin.begin() as conn:  # a day the previous version loaded
        conn.execute(
            sa.text(
                "INSERT INTO sales (sale_id, sale_date, store_id, product_id, quantity,"
                " unit_price, amount, currency, updated_at, run_id, loaded_at) VALUES ('old',"
                " '2026-11-22T10:00:00Z', 'S1', 'P1', 1, 5, 5, 'EUR', '2026-11-22T10:00:00Z',"
                " 'old-run', now())"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO sales_load_ledger (business_date, status, mode, snapshot_id, run_id,"
                " day_sales, day_amount, finished_at) VALUES ('2026-11-22', 'loaded', 'full',"
                " 'old', 'old-run', 1, 5, now())"
            )
        )
    admin.dispose()
    files = (
        "SELECT relname, oid, relfilenode FROM pg_class"
        " WHERE relname IN ('sales', 'sales_load_ledger') ORDER BY relname"
    )
    columns = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE column_name IN ('extra', 'schema_change') ORDER BY table_name"
    )
    defaults = (
        "SELECT table_name, column_name, column_default FROM information_schema.columns"
        " WHERE column_name IN ('run_id', 'loaded_at', 'rejected_at')"
        " AND table_name IN ('sales', 'sales_rejected') ORDER BY table_name, column_name"
    )
    before = query(pg_url, files)
    assert query(pg_url, columns) == []
    assert {default for _, _, default in query(pg_url, defaults)} == {None}

    records = [sale("new", channel="web"), sale("void", amount="0.00")]
    source = LoadSource(snapshot_id="s1", schema_change="added channel (1 records)")
    stats = load(warehouse, lake, snapshot(lake, [records]), source=source)

    # Added, not recreated or rewritten: same tables, same files, the old rows kept.
    assert query(pg_url, files) == before
    assert query(pg_url, columns) == [
        ("sales", "extra", "jsonb"),
        ("sales_load_ledger", "schema_change", "text"),
    ]
    assert stats.inserted == 1
    assert query(pg_url, "SELECT sale_id, run_id, extra FROM sales ORDER BY sale_id") == [
        ("new", "r1", {"channel": "web"}),
        ("old", "old-run", None),
    ]
    # The rows the load wrote took the run id and the load's time from the defaults it set.
    assert query(pg_url, defaults) == [
        ("sales", "loaded_at", "now()"),
        ("sales", "run_id", "current_setting('daily_sales.run_id'::text, true)"),
        ("sales_rejected", "rejected_at", "now()"),
        ("sales_rejected", "run_id", "current_setting('daily_sales.run_id'::text, true)"),
    ]
    stamped = (
        "SELECT s.run_id, r.run_id, s.loaded_at = l.finished_at, r.rejected_at = l.finished_at"
        " FROM sales s, sales_rejected r, sales_load_ledger l"
        " WHERE s.sale_id = 'new' AND r.sale_id = 'void' AND l.run_id = 'r1'"
    )
    assert query(pg_url, stamped) == [("r1", "r1", True, True)]
    assert query(
        pg_url, "SELECT run_id, schema_change FROM sales_load_ledger ORDER BY load_id"
    ) == [
        ("old-run", None),
        ("r1", "added channel (1 records)"),
    ]


# A new day: the versions alone of their sale_id win without being staged and judged.


@pytest.mark.parametrize("reject_share", [0.1, 0.3])
def test_a_new_day_loads_the_same_with_and_without_the_lone_versions_shortcut(
    lake: Lake, pg_url: str, new_database: Callable[[], str], reject_share: float
) -> None:
    raw = write_realistic_day(
        lake, DAY, 6_000, page_size=500, reject_share=reject_share, duplicate_share=0.2
    )
    clean = transform_snapshot(lake, raw, chunk_records=2_000)
    judged_url = new_database()
    shortcut = load(WarehouseConfig(url=SecretStr(pg_url)), lake, clean)
    judged = load(WarehouseConfig(url=SecretStr(judged_url)), lake, clean, new_day_shortcut=False)
    assert "find_lone" in shortcut.step_seconds and "find_lone" not in judged.step_seconds
    assert "new_day_refused" not in shortcut.step_seconds
    assert shortcut.counts == judged.counts
    assert shortcut.superseded > 0 and shortcut.quarantined > 0 and shortcut.inserted > 0
    assert table_contents(pg_url) == table_contents(judged_url)


class _ChangingBatches:
    """Batches whose later readings differ from the first (a snapshot rewritten mid-load)."""

    def __init__(self, first: list[pa.Table], later: list[pa.Table]) -> None:
        self.readings = 0
        self.first, self.later = first, later

    def __iter__(self) -> Any:
        self.readings += 1
        return iter(self.first if self.readings == 1 else self.later)


@pytest.mark.parametrize("change", ["a batch shorter", "a batch more", "a batch less"])
def test_a_clean_snapshot_that_changes_between_the_loads_readings_fails_the_load(
    lake: Lake, pg_url: str, change: str
) -> None:
    raw = write_realistic_day(lake, DAY, 3_000, page_size=500, reject_share=0.1)
    clean = transform_snapshot(lake, raw)
    sales = pa.concat_tables(iter_tables(lake, clean.manifest["sales_parts"]))
    rejects = list(iter_tables(lake, clean.manifest["rejected_parts"]))
    halves = [sales.slice(0, 1_000), sales.slice(1_000)]
    later = {
        "a batch shorter": [halves[0].slice(0, 999), halves[1]],
        "a batch more": [*halves, halves[1].slice(0, 1)],
        "a batch less": halves[:1],
    }[change]
    engine = sa.create_engine(pg_url)
    tables = warehouse_tables(None)
    ensure_tables(engine, tables)
    with pytest.raises(WarehouseError, match="changed while it was loading"):
        load_day(engine, tables, DAY, "r1", _ChangingBatches(halves, later), rejects)
    engine.dispose()
    assert query(pg_url, "SELECT count(*) FROM sales") == [(0,)]


def test_batches_of_types_that_cast_to_the_clean_ones_load_the_same(
    lake: Lake, pg_url: str, new_database: Callable[[], str]
) -> None:
    """COPY sends typed binary data: a caller's batch of castable types (the block's ``upsert``
    takes any Arrow tables) is cast to the clean zone's types, as CSV text once was parsed."""
    raw = write_realistic_day(lake, DAY, 2_000, page_size=500, reject_share=0.2)
    clean = transform_snapshot(lake, raw)
    sales = pa.concat_tables(iter_tables(lake, clean.manifest["sales_parts"]))
    rejects = pa.concat_tables(iter_tables(lake, clean.manifest["rejected_parts"]))
    loose_sales = sales.cast(
        sales.schema.set(sales.schema.get_field_index("quantity"), pa.field("quantity", pa.int64()))
        .set(sales.schema.get_field_index("record_index"), pa.field("record_index", pa.int32()))
        .set(
            sales.schema.get_field_index("sale_date"),
            pa.field("sale_date", pa.timestamp("ns", tz="UTC")),
        )
        .set(sales.schema.get_field_index("amount"), pa.field("amount", pa.decimal128(20, 4)))
    )
    loose_rejects = rejects.cast(
        rejects.schema.set(
            rejects.schema.get_field_index("raw_record"), pa.field("raw_record", pa.string())
        )
    )
    exact_url = new_database()
    for url, batches in ((pg_url, (loose_sales, loose_rejects)), (exact_url, (sales, rejects))):
        engine = sa.create_engine(url)
        tables = warehouse_tables(None)
        ensure_tables(engine, tables)
        stats = load_day(engine, tables, DAY, "r1", [batches[0]], [batches[1]])
        engine.dispose()
        assert stats.inserted > 0 and stats.rejects_kept > 0
    assert table_contents(pg_url) == table_contents(exact_url)


@pytest.mark.parametrize("new_day_shortcut", [True, False])
def test_a_new_day_naming_sales_stored_under_another_day_judges_them_like_any_day(
    warehouse: WarehouseConfig, lake: Lake, pg_url: str, new_day_shortcut: bool
) -> None:
    admin = sa.create_engine(pg_url)
    ensure_tables(admin, tables_for(warehouse))
    with admin.begin() as conn:  # the day before holds m (moved to DAY), s (stale) and v
        for sale_id, updated in (("m", T(8)), ("s", T(20)), ("v", T(8))):
            conn.execute(
                sa.text(
                    "INSERT INTO sales (sale_id, sale_date, store_id, product_id, quantity,"
                    " unit_price, amount, currency, updated_at, run_id) VALUES (:id,"
                    " '2026-11-22T10:00:00Z', 'S1', 'P1', 1, 5, 5, 'EUR', :updated, 'old')"
                ),
                {"id": sale_id, "updated": updated},
            )
    admin.dispose()
    day = [sale("a"), sale("m", "7.00", T(12)), sale("s", "8.00", T(12)), sale("v", "0", T(12))]
    stats = load(warehouse, lake, snapshot(lake, [day]), new_day_shortcut=new_day_shortcut)
    # The shortcut tried the day as new and gave way at the first stored sale_id.
    assert ("new_day_refused" in stats.step_seconds) == new_day_shortcut
    assert (stats.inserted, stats.updated, stats.stale, stats.voided) == (1, 1, 1, 1)
    assert table_rows(pg_url, "sales", ["sale_id", "amount", "sale_date"]) == [
        ("a", Decimal("10.0000"), datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("m", Decimal("7.0000"), datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("s", Decimal("5.0000"), datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ]
