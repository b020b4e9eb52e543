"""The strict Arrow path gives the per-record path's lake, row for row and byte for byte.

Whichever way a page goes (read strictly into typed columns, with the rows a rule rejects judged
from their text; or refused and judged record by record), the clean and rejected Parquet parts
written to the lake are the same files. Hostile, late-data and realistic days, pages cut at
random, money written at numeric(18,4)'s edges, records nested beyond any parser.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devharness.demo_api import generate_record
from devharness.demo_days import DayMix, day_records
from devharness.raw_days import realistic_pages
from sales_etl import arrow_parse, jsontext, transform
from sales_etl.lake import LocalLake
from sales_etl.snapshots import RawSnapshotWriter, SnapshotRef
from sales_etl.source import Page
from sales_etl.validate import (
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    RAW_HEAD_CHARS,
    RECORD_TOO_DEEP,
    RECORD_TOO_LARGE,
)
from tests.utils import DAY, hostile_records

MONEY = [
    "99999999999999.9999",
    "12345678901234.5678",
    "0.10",
    '"0.10"',
    "1e2",
    '"1E2"',
    "-0",
    '"-0"',
    "0.00",
    '"+5"',
    '".5"',
    '" 7 "',
    "1.23450",
    "1000000000000000000",
    # Around the scan's first window of 12 bytes (arrow_parse._value_fits): 11, 12, 13 bytes.
    "1234567.123",
    "-1234567.12",
    '"1234567.123"',
    "12345678.123",
    "123456789012",
    '"-1234567.1234"',
    "123456789.1234",
]


def write_raw(lake: LocalLake, bodies: list[tuple[int, bytes]]) -> SnapshotRef:
    writer = RawSnapshotWriter(lake, DAY, part_bytes=40_000)
    for number, (count, body) in enumerate(bodies):
        writer.add(Page(number=number, body=body, records=[None] * count, next_cursor=None))
    return writer.commit()


def lake_files(lake: LocalLake, raw: SnapshotRef, *, strict: bool) -> dict[str, bytes]:
    """The clean and rejected parts the transform writes, by key (same keys either way)."""
    parts = [
        transform.transform_part(lake, part, chunk_records=97, strict=strict)
        for part in transform.plan_parts(lake, raw)
    ]
    keys = [k for p in parts for k in (*p.sales_parts, *p.rejected_parts)]
    return {key: lake.get(key) for key in keys}


def assert_same_lake(tmp_path: Path, bodies: list[tuple[int, bytes]]) -> None:
    lake = LocalLake(tmp_path / f"lake-{uuid.uuid4().hex}")
    raw = write_raw(lake, bodies)
    strict = lake_files(lake, raw, strict=True)
    per_record = lake_files(lake, raw, strict=False)
    assert sorted(strict) == sorted(per_record)
    for key, content in strict.items():
        assert content == per_record[key], key


def spelt(records: list[Any], money: list[str]) -> str:
    """``json.dumps`` of a page, with some money fields written as exact literal numbers."""
    text = json.dumps({"data": records, "next_cursor": None}, allow_nan=True)
    for literal in money:
        text = text.replace('"__money__"', literal, 1)
    return text


def pages_of(records: list[Any], sizes: list[int], money: list[str]) -> list[tuple[int, bytes]]:
    out, start = [], 0
    for size in sizes:
        if start >= len(records):
            break
        page = records[start : start + size]
        out.append((len(page), spelt(page, money).encode()))
        start += size
    if start < len(records):
        out.append((len(records) - start, spelt(records[start:], money).encode()))
    return out


def deep_record(depth: int) -> str:
    return '{"sale_id":"DEEP","extra":' + "[" * depth + "]" * depth + "}"


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    records=st.lists(hostile_records(), min_size=1, max_size=12),
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=6),
    money=st.lists(st.sampled_from(MONEY), max_size=6),
    clean=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_hostile_pages_give_the_same_lake_either_way(
    tmp_path: Path, records: list[Any], sizes: list[int], money: list[str], clean: list[int]
) -> None:
    good = [generate_record(DAY.isoformat(), i) for i in clean]
    for record, _ in zip(good, money, strict=False):
        record["amount"] = "__money__"
    mixed = good + records
    random.Random(len(mixed)).shuffle(mixed)
    assert_same_lake(tmp_path, pages_of(mixed, sizes, money))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    extras=st.lists(
        st.dictionaries(st.sampled_from(["channel", "meta", "sale_ID", "z"]), JSON_VALUES),
        min_size=1,
        max_size=20,
    ),
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=6),
    hostile=st.lists(hostile_records(), max_size=4),
)
def test_extra_fields_give_the_same_lake_either_way(
    tmp_path: Path, extras: list[dict[str, Any]], sizes: list[int], hostile: list[Any]
) -> None:
    """Fields outside the contract, of any JSON type (null, nested, one field of several types
    across a page), on valid and hostile records: the same ``extra`` texts either way."""
    records: list[Any] = [
        {**generate_record(DAY.isoformat(), i), **extra} for i, extra in enumerate(extras)
    ]
    assert_same_lake(tmp_path, pages_of(records + hostile, sizes, []))


def test_records_with_fields_outside_the_contract_are_read_with_their_extra_text() -> None:
    """The reader skips the fields outside the contract; their text gives ``extra``. Only a
    value the reader could refuse (not plain JSON: ``1e999999``) sets its record aside."""
    records = [generate_record(DAY.isoformat(), i) for i in range(7)]
    records[1]["channel"] = {"kind": "web", "score": jsontext.JsonNumber("1.50")}
    records[2]["channel"] = None
    records[4]["channel"] = {"kind": "store", "tags": ["a"]}
    records[4]["note"] = "two fields, in their order"
    records[5]["rate"] = jsontext.JsonNumber("1e999999")
    records[6]["sale_ix"] = "S"  # the shape of "sale_id" (its length, first and last letters)
    body = ('{"data": [' + ", ".join(jsontext.dumps(r) for r in records) + "]}").encode()
    page = arrow_parse.read_strict(body)
    assert page is not None
    assert page.aside.tolist() == [5] and page.kept.tolist() == [0, 1, 2, 3, 4, 6]
    rows, _, _ = page.extra
    assert rows.tolist() == [1, 2, 4, 4, 5]  # rows of the kept records: 1, 2, 4 (twice), 6
    judged = transform.judge_page(body, DAY, 0)
    assert judged.strict
    assert judged.chunk.clean.column("extra").to_pylist() == [
        None,
        '{"channel":{"kind":"web","score":1.50}}',
        None,
        None,
        '{"channel":{"kind":"store","tags":["a"]},"note":"two fields, in their order"}',
        '{"_unstorable":["rate"]}',
        '{"sale_ix":"S"}',
    ]
    per_record = transform.judge_page(body, DAY, 0, strict=False)
    assert transform.clean_table(per_record.chunk.clean) == transform.clean_table(
        judged.chunk.clean
    )


def test_realistic_days_give_the_same_lake_either_way(tmp_path: Path) -> None:
    for share in (0.0, 0.1, 0.3):
        pages = list(realistic_pages(DAY, 3000, page_size=400, reject_share=share))
        assert_same_lake(tmp_path, pages)
        # Most records go the strict way: only those it cannot read are set aside.
        read = [arrow_parse.read_strict(body) for _, body in pages]
        assert all(page is not None for page in read)
        kept = sum(len(page.kept) for page in read if page is not None)
        assert kept > 3000 * (0.9 - share)


def test_late_data_revisions_give_the_same_lake_either_way(tmp_path: Path) -> None:
    mix = DayMix(rows=1500, reject_rate=0.1, duplicate_rate=0.05, seed=3)
    for revision in (0, 2):
        records = day_records(mix, DAY.isoformat(), revision)
        assert_same_lake(tmp_path, pages_of(records, [300] * 5, []))
    since = datetime.fromisoformat(f"{DAY.isoformat()}T12:00:00+00:00")
    delta = day_records(mix, DAY.isoformat(), 2, updated_since=since)
    assert_same_lake(tmp_path, pages_of(delta, [50] * 20, []))


def test_a_clean_page_goes_the_strict_way_and_money_stays_exact() -> None:
    # Beyond float64, and around the scan's first window of 12 bytes (11, 12, 14 characters).
    money = ["99999999999999.9999", '"12345678901234.5678"', "0.10"]
    money += ["1234567.123", '"12345678.123"', "123456789.1234"]
    records = [generate_record(DAY.isoformat(), i) for i in range(len(money))]
    for record in records:
        record["amount"] = "__money__"
    body = spelt(records, money).encode()
    page = arrow_parse.read_strict(body)
    assert page is not None
    assert page.aside.tolist() == []
    assert [str(v) for v in page.records.column("amount").to_pylist()] == [
        "99999999999999.9999",
        "12345678901234.5678",
        "0.1000",
        "1234567.1230",
        "12345678.1230",
        "123456789.1234",
    ]
    assert [json.loads(body[a:b]) for a, b in zip(page.starts, page.stops, strict=True)] == [
        json.loads(spelt([r], [m]))["data"][0] for r, m in zip(records, money, strict=True)
    ]


def test_records_the_strict_parse_cannot_read_are_set_aside_the_page_is_kept() -> None:
    """One record of a type the reader refuses (or reads otherwise than the rules) costs the
    per-record way for that record only."""
    record = generate_record(DAY.isoformat(), 1)
    aside = [
        {**record, "amount": "__money__"},  # 1e2: the reader takes it, the contract does not
        {**record, "unit_price": "__money__"},  # "+5"
        {**record, "amount": "__money__"},  # " 7 "
        {**record, "amount": "__money__"},  # 1.23450: five decimals
        {**record, "sale_id": 7},
        {**record, "quantity": "3"},
        {**record, "quantity": 2.5},
        {**record, "currency": True},
        {**record, "store_id": ["S1"]},
        {**record, "customer_id": {"id": "C1"}},
        {**record, "sale_id": "a\u00e9"},
        [record],
        "text",
        7,
        None,
        {**record, "extra": "__money__"},  # 1e999999: a double cannot hold it, the reader fails
        {**record, "extra": "__money__"},  # NaN: not JSON
    ]
    read = {**record, "extra": {"tags": ["a", "{"], "n": math.pi}}  # skipped by the reader
    money = ["1e2", '"+5"', '" 7 "', "1.23450", "1e999999", "NaN"]
    body = spelt([record, *aside, read, record], money).encode()
    page = arrow_parse.read_strict(body)
    assert page is not None
    assert page.kept.tolist() == [0, len(aside) + 1, len(aside) + 2]
    assert page.aside.tolist() == list(range(1, len(aside) + 1))
    strict, per_record = (transform.judge_page(body, DAY, 0, strict=s) for s in (True, False))
    assert strict.strict and not per_record.strict
    assert transform.clean_table(strict.chunk.clean) == transform.clean_table(
        per_record.chunk.clean
    )
    assert transform.rejected_table(strict.chunk.rejected) == transform.rejected_table(
        per_record.chunk.rejected
    )


def test_pages_the_strict_parse_must_refuse() -> None:
    record = generate_record(DAY.isoformat(), 1)
    deep = {
        **record,
        "extra": json.loads("[" * (MAX_RECORD_DEPTH + 1) + "]" * (MAX_RECORD_DEPTH + 1)),
    }
    assert arrow_parse.read_strict(spelt([record, deep], []).encode()) is None
    # A key of a contract name's shape (length, first and last letter) is another field: the
    # reader skips it and the record lacks sale_id, judged the same either way.
    renamed = {("sxxx_id" if k == "sale_id" else k): v for k, v in record.items()}
    body = spelt([record, renamed], []).encode()
    page = arrow_parse.read_strict(body)
    assert page is not None and page.kept.tolist() == [0, 1]
    strict, per_record = (transform.judge_page(body, DAY, 0, strict=s) for s in (True, False))
    assert strict.strict and not per_record.strict
    assert [r["reason"] for r in strict.chunk.rejected.to_pylist()] == ["invalid_sale_id"]
    assert strict.chunk.rejected.equals(per_record.chunk.rejected)
    tails = [', "data": []}', ', "more": {"a": 1}}', ", }", "} x"]
    for tail in tails:
        page = spelt([record], []).encode().removesuffix(b', "next_cursor": null}')
        assert arrow_parse.read_strict(page + tail.encode()) is None, tail


def test_a_record_nested_100000_deep_is_one_reject_and_the_page_is_kept(tmp_path: Path) -> None:
    good = [generate_record(DAY.isoformat(), i) for i in range(4)]
    body = (
        '{"data": ['
        + ", ".join([json.dumps(good[0]), json.dumps(good[1]), deep_record(100_000)])
        + ", "
        + ", ".join(json.dumps(r) for r in good[2:])
        + '], "next_cursor": null}'
    ).encode()
    assert arrow_parse.read_strict(body) is None  # pyarrow reads it without crashing; refused
    result = transform.judge_page(body, DAY, 10)
    assert result.records == 5
    clean = result.chunk.clean
    assert clean.column("record_index").to_pylist() == [10, 11, 13, 14]
    assert clean.column("sale_id").to_pylist() == [r["sale_id"] for r in good]
    rejected = result.chunk.rejected.to_pylist()
    assert [(r["record_index"], r["sale_id"], r["reason"]) for r in rejected] == [
        (12, None, RECORD_TOO_DEEP)
    ]
    assert (
        rejected[0]["detail"] == f"record nests 100001 levels deep; the limit is {MAX_RECORD_DEPTH}"
    )
    # Depth is checked first; over the size limit too, so only its head is kept.
    assert_cut(rejected[0]["raw_record"], deep_record(100_000), len(deep_record(100_000)))
    assert_same_lake(tmp_path, [(5, body)])


def test_a_record_just_past_the_depth_limit_is_rejected_with_its_text() -> None:
    record = {**generate_record(DAY.isoformat(), 1), "extra": "__x__"}
    nested = "[" * MAX_RECORD_DEPTH + "]" * MAX_RECORD_DEPTH
    body = json.dumps({"data": [record], "next_cursor": None}).replace('"__x__"', nested)
    result = transform.judge_page(body.encode(), DAY, 0)
    assert result.chunk.clean.num_rows == 0
    assert result.chunk.rejected.column("reason").to_pylist() == [RECORD_TOO_DEEP]
    assert result.chunk.rejected.column("sale_id").to_pylist() == [None]
    within = body.replace(nested, "[" * (MAX_RECORD_DEPTH - 1) + "]" * (MAX_RECORD_DEPTH - 1))
    assert transform.judge_page(within.encode(), DAY, 0).chunk.clean.num_rows == 1


def assert_cut(raw: str, text: str, sent: int) -> None:
    """``raw`` is what sales_rejected keeps of a record over the size limit whose text is
    ``text`` (compact JSON) and was ``sent`` bytes long."""
    assert json.loads(raw) == {
        "_truncated": True,
        "_bytes": sent,
        "_length": len(text),
        "_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "_head": text[:RAW_HEAD_CHARS],
    }


def padded(record: dict[str, Any], size: int, *, indent: int | None = None) -> dict[str, Any]:
    """``record`` with a ``note`` making its text (as json.dumps writes it) ``size`` bytes."""
    base = len(json.dumps({**record, "note": ""}, indent=indent).encode())
    return {**record, "note": "n" * (size - base)}


def test_a_record_over_the_size_limit_is_one_reject_either_way(tmp_path: Path) -> None:
    good = [generate_record(DAY.isoformat(), i) for i in range(5)]
    big = padded({**good[2], "sale_id": "BIG"}, MAX_RECORD_BYTES + 1)
    scalar = "s" * MAX_RECORD_BYTES  # 65,538 bytes with its quotes
    records = [good[0], good[1], big, good[3], scalar, good[4]]
    body = json.dumps({"data": records, "next_cursor": None}).encode()
    # The scalar is set aside; the padded record is read, and the size limit sends it the
    # per-record way.
    page = arrow_parse.read_strict(body)
    assert page is not None and page.aside.tolist() == [4]
    without_scalar = json.dumps({"data": records[:4], "next_cursor": None}).encode()
    assert arrow_parse.read_strict(without_scalar) is not None
    too_large = [(12, "BIG", MAX_RECORD_BYTES + 1), (14, None, MAX_RECORD_BYTES + 2)]
    cases = (
        (body, 6, [10, 11, 13, 15], too_large),
        (without_scalar, 4, [10, 11, 13], too_large[:1]),
    )
    for page, count, clean, expected in cases:
        for strict in (True, False):
            result = transform.judge_page(page, DAY, 10, strict=strict)
            assert result.records == count
            assert result.chunk.clean.column("record_index").to_pylist() == clean
            rejected = result.chunk.rejected.to_pylist()
            assert [
                (r["record_index"], r["sale_id"], r["reason"], r["detail"]) for r in rejected
            ] == [
                (
                    i,
                    sale_id,
                    RECORD_TOO_LARGE,
                    f"record is {n:,} bytes as sent; the limit is 65,536",
                )
                for i, sale_id, n in expected
            ]
            assert_cut(rejected[0]["raw_record"], jsontext.dumps(big), MAX_RECORD_BYTES + 1)
    assert_same_lake(tmp_path, [(6, body), (4, without_scalar)])


def test_the_size_is_the_text_as_sent_whitespace_inside_included(tmp_path: Path) -> None:
    record = generate_record(DAY.isoformat(), 1)
    for indent in (None, 2):
        at = padded(record, MAX_RECORD_BYTES, indent=indent)
        over = padded(record, MAX_RECORD_BYTES + 1, indent=indent)
        texts = [json.dumps(r, indent=indent).encode() for r in (at, over, record)]
        pages = [
            b'{"data": [' + b",\n".join(texts) + b"]}",
            b'{"data": [ \n' + texts[0] + b"\n\t ] }",
        ]
        for strict in (True, False):
            first = transform.judge_page(pages[0], DAY, 0, strict=strict)
            assert first.chunk.clean.column("record_index").to_pylist() == [0, 2]
            assert first.chunk.rejected.column("reason").to_pylist() == [RECORD_TOO_LARGE]
            second = transform.judge_page(pages[1], DAY, 0, strict=strict)
            assert second.chunk.clean.num_rows == 1
        assert arrow_parse.read_strict(pages[0]) is not None
        assert_same_lake(tmp_path, [(3, pages[0]), (1, pages[1])])


def test_record_sizes_on_any_layout_match_the_token_scan() -> None:
    record = generate_record(DAY.isoformat(), 1)
    big = padded(record, MAX_RECORD_BYTES + 10)
    items = [record, big, "x" * 70_000, 7, None, [big], {"é": "é" * 40_000}]
    plain = {"data": items, "next_cursor": None}
    layouts = [
        plain,
        {"next_cursor": None, "meta": [1, {"data": [big]}], "data": items},
        {"data": items, "more": {"data": [big]}},
    ]
    expected = {1: MAX_RECORD_BYTES + 10, 2: 70_002, 5: MAX_RECORD_BYTES + 12, 6: 80_010}
    for page in layouts:
        for indent in (None, 1):
            body = json.dumps(page, indent=indent, ensure_ascii=False).encode()
            assert jsontext.loads_page(body)["data"] == jsontext.loads(json.dumps(items))
            sizes, shallow = arrow_parse.record_limits(body, len(items))
            assert shallow is (page is plain)  # the depth is known from the plain layout's scan
            assert sizes == jsontext.data_item_sizes(body, MAX_RECORD_BYTES)
            assert sizes.keys() == expected.keys(), (page.keys(), indent)
            if indent is None:
                assert sizes == expected
    duplicated = (
        b'{"data": [1, 2], "data": [' + json.dumps(items, ensure_ascii=False)[1:].encode() + b"}"
    )
    assert jsontext.loads_page(duplicated)["data"] == jsontext.loads(json.dumps(items))
    assert arrow_parse.read_strict(duplicated) is None
    assert arrow_parse.record_limits(duplicated, len(items)) == (expected, False)


def test_a_deep_record_over_the_size_limit_is_too_deep_and_cut() -> None:
    good = generate_record(DAY.isoformat(), 1)
    deep = '{"sale_id":"D","x":' + "[" * 300 + '"' + "p" * 70_000 + '"' + "]" * 300 + "}"
    body = ('{"data": [' + json.dumps(good) + ", " + deep + "]}").encode()
    for strict in (True, False):
        rejected = transform.judge_page(body, DAY, 0, strict=strict).chunk.rejected.to_pylist()
        assert [r["reason"] for r in rejected] == [RECORD_TOO_DEEP]
        assert_cut(rejected[0]["raw_record"], deep, len(deep))


def test_oversized_records_among_hostile_ones_give_the_same_lake(tmp_path: Path) -> None:
    rng = random.Random(7)
    records: list[Any] = [generate_record(DAY.isoformat(), i) for i in range(60)]
    for i in rng.sample(range(60), 12):
        records[i] = padded(records[i], MAX_RECORD_BYTES + rng.randint(-3, 3))
    records[5] = {**records[5], "quantity": "3"}  # refuses its page the strict way
    records.insert(30, "z" * (MAX_RECORD_BYTES - 1))
    assert_same_lake(tmp_path, pages_of(records, [7, 11, 13, 30], []))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='\\"a{', max_size=40))
def test_string_quotes_are_the_quotes_no_odd_run_of_backslashes_escapes(text: str) -> None:
    body = text.encode()
    # The definition: pairs of backslashes stand for one each; a backslash left escapes a quote.
    blanked = body.replace(b"\\\\", b"  ").replace(b'\\"', b"  ")
    expected = [i for i, byte in enumerate(blanked) if byte == ord('"')]
    data = np.frombuffer(body, dtype=np.uint8)
    candidate, quote = arrow_parse._candidates(body, data, np.flatnonzero(data == ord("\\")))
    assert candidate[quote].tolist() == expected
    # The other candidates are the structural characters, inside strings or not.
    assert candidate[~quote].tolist() == [i for i, byte in enumerate(body) if byte == ord("{")]
