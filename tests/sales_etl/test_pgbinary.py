"""Arrow tables in PostgreSQL's binary COPY format: what COPY stores is what an INSERT of the
same Python values stores, value for value and as text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extras
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sales_etl import pgbinary

COLUMNS = "t text, j jsonb, i integer NOT NULL, b bigint, m numeric(18,4), ts timestamptz, d date"
SCHEMA = pa.schema(
    [
        ("t", pa.string()),
        ("j", pa.string()),
        ("i", pa.int32()),
        ("b", pa.int64()),
        ("m", pa.decimal128(18, 4)),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("d", pa.date32()),
    ]
)
MONEY_MAX = Decimal("99999999999999.9999")  # numeric(18,4)'s largest


@pytest.fixture
def cursor(pg_url: str) -> Iterator[Any]:
    connection = psycopg2.connect(pg_url.replace("postgresql+psycopg2", "postgresql"))
    connection.autocommit = True
    with connection.cursor() as cur:
        cur.execute(f"CREATE TABLE by_copy ({COLUMNS}); CREATE TABLE by_insert ({COLUMNS})")
        yield cur
    connection.close()


def copy_binary(cur: Any, table: pa.Table, target: str = "by_copy") -> int:
    data = pgbinary.encode(table, jsonb=("j",))
    names = ", ".join(table.column_names)
    cur.copy_expert(f"COPY {target} ({names}) FROM STDIN WITH (FORMAT binary)", data.reader())
    return int(cur.rowcount)


def insert(cur: Any, rows: list[dict[str, Any]]) -> None:
    values = [tuple(row[name] for name in SCHEMA.names) for row in rows]
    psycopg2.extras.execute_values(cur, "INSERT INTO by_insert VALUES %s", values)


def differences(cur: Any) -> list[tuple[str, ...]]:
    cur.execute(
        "(SELECT 'copy only', r::text FROM by_copy r EXCEPT ALL SELECT 'copy only', r::text "
        "FROM by_insert r) UNION ALL (SELECT 'insert only', r::text FROM by_insert r "
        "EXCEPT ALL SELECT 'insert only', r::text FROM by_copy r)"
    )
    return [tuple(row) for row in cur.fetchall()]


texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
).map(lambda value: json.dumps(value, ensure_ascii=False))
money = st.decimals(-MONEY_MAX, MONEY_MAX, places=4, allow_nan=False) | st.sampled_from(
    [MONEY_MAX, -MONEY_MAX, Decimal("12345678901234.5678"), Decimal("0.0001"), Decimal(0)]
)
instants = st.datetimes(datetime(1800, 1, 1), datetime(2300, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=UTC)
)
rows = st.fixed_dictionaries(
    {
        "t": st.none() | texts,
        "j": st.none() | json_texts,
        "i": st.integers(-(2**31), 2**31 - 1),
        "b": st.none() | st.integers(-(2**63), 2**63 - 1),
        "m": st.none() | money,
        "ts": st.none() | instants,
        "d": st.none() | st.dates(date(1, 1, 1), date(9999, 12, 31)),
    }
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(rows, max_size=12), st.integers(0, 3))
def test_copy_in_binary_stores_what_an_insert_of_the_same_values_stores(
    cursor: Any, batch: list[dict[str, Any]], offset: int
) -> None:
    cursor.execute("TRUNCATE by_copy, by_insert")
    # A slice of a longer table: the encoder reads the arrays from their offset.
    padding = [{name: 0 if name == "i" else None for name in SCHEMA.names}] * offset
    table = pa.Table.from_pylist(padding + batch, schema=SCHEMA).slice(offset)

    assert copy_binary(cursor, table) == len(batch)
    insert(cursor, batch)

    assert differences(cursor) == []
    cursor.execute("SELECT count(*) FROM by_copy")
    assert cursor.fetchone()[0] == len(batch)


def test_money_beyond_float64_and_signs_arrive_exact(cursor: Any) -> None:
    values = [MONEY_MAX, -MONEY_MAX, Decimal("12345678901234.5678"), Decimal("-0.0001"), None]
    table = pa.table(
        {"m": pa.array(values, pa.decimal128(18, 4)), "i": pa.array([1] * 5, pa.int32())}
    )

    copy_binary(cursor, table)

    cursor.execute("SELECT m::text AS shown FROM by_copy ORDER BY m NULLS LAST")
    assert [row[0] for row in cursor.fetchall()] == [
        "-99999999999999.9999",
        "-0.0001",
        "12345678901234.5678",
        "99999999999999.9999",
        None,
    ]


def test_a_column_of_another_scale_is_rounded_by_the_server_as_text_would_be(cursor: Any) -> None:
    table = pa.table(
        {
            "m": pa.array([Decimal("1.25"), Decimal("-7")], pa.decimal128(10, 2)),
            "i": pa.array([1, 2], pa.int32()),
        }
    )

    copy_binary(cursor, table)

    cursor.execute("SELECT m::text FROM by_copy ORDER BY i")
    assert [row[0] for row in cursor.fetchall()] == ["1.2500", "-7.0000"]


def test_timestamps_of_other_units_arrive_as_the_same_instants(cursor: Any) -> None:
    moment = datetime(2026, 11, 1, 23, 59, 59, 123456, tzinfo=UTC)
    for i, unit in enumerate(("s", "ms", "us", "ns")):
        ts = pa.array([moment], pa.timestamp("us", tz="UTC")).cast(
            pa.timestamp(unit, tz="UTC"), safe=False
        )
        copy_binary(cursor, pa.table({"ts": ts, "i": pa.array([i], pa.int32())}))

    cursor.execute("SELECT ts FROM by_copy ORDER BY i")
    assert [row[0] for row in cursor.fetchall()] == [
        moment.replace(microsecond=0),
        moment.replace(microsecond=123000),
        moment,
        moment,
    ]


def test_an_empty_table_copies_nothing(cursor: Any) -> None:
    assert copy_binary(cursor, SCHEMA.empty_table()) == 0


@pytest.mark.parametrize(
    ("array", "jsonb"),
    [
        (pa.array([1.5]), ()),
        (pa.array([1], pa.int16()), ()),
        (pa.array([datetime(2026, 1, 1)], pa.timestamp("us")), ()),  # no zone: which instant?
        (pa.array([Decimal(1)], pa.decimal128(30, 4)), ()),
        (pa.array([Decimal(1)], pa.decimal128(18, 6)), ()),
        (pa.array([1], pa.int32()), ("x",)),
    ],
)
def test_a_type_without_an_encoding_is_refused_by_name(array: pa.Array, jsonb: tuple[str]) -> None:
    with pytest.raises(TypeError, match="'x'"):
        pgbinary.encode(pa.table({"x": array}), jsonb=jsonb)


@given(st.lists(st.text(max_size=30), max_size=40), st.integers(min_value=1, max_value=64))
def test_the_copy_source_reads_the_whole_data_in_pieces_no_larger_than_asked(
    texts: list[str], size: int
) -> None:
    data = pgbinary.encode(pa.table({"t": pa.array(texts, pa.string())}))
    reader = data.reader()
    pieces = list(iter(lambda: reader.read(size), b""))
    assert all(0 < len(piece) <= size for piece in pieces)
    whole = b"".join(pieces)
    assert whole == bytes(data) and len(whole) == len(data)
    assert whole.startswith(pgbinary.HEADER) and whole.endswith(pgbinary.TRAILER)
    assert reader.read(size) == b""
