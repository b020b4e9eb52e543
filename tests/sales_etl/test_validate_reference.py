"""The optimised :func:`validate_records` gives exactly the frames of the original version.

``validate_reference`` is the first, straightforward implementation (one ``DataFrame`` of the
records, ``Series.map(type)`` per field), kept as an oracle: any speed-up of the real one must
produce identical clean and rejected frames, reason codes included.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from devharness.demo_api import DemoData
from sales_etl import jsontext
from sales_etl.validate import validate_records
from tests.sales_etl import validate_reference
from tests.utils import DAY, mangled_records


def assert_same(records: list[Any], first_index: int = 0) -> None:
    new = validate_records(records, DAY, first_index)
    old = validate_reference.validate_records(records, DAY, first_index)
    pd.testing.assert_frame_equal(new.clean, old.clean)
    pd.testing.assert_frame_equal(new.rejected, old.rejected)


def test_demo_day_with_every_corruption_matches_the_reference() -> None:
    data = DemoData(rows_per_day=3000, malformed_every=7, update_every=11)
    day = DAY.isoformat()
    records = jsontext.loads(json.dumps(data.page(day, 0, data.count(day))))
    assert_same(records, first_index=500)


def test_empty_chunk_matches_the_reference() -> None:
    assert_same([])


@settings(max_examples=150, deadline=None)
@given(st.lists(mangled_records(), min_size=1, max_size=25))
def test_hostile_records_match_the_reference(records: list[Any]) -> None:
    assert_same([jsontext.loads(json.dumps(r, allow_nan=True)) for r in records], 1000)


def test_lone_surrogates_and_odd_values_match_the_reference() -> None:
    base = json.loads(json.dumps(DemoData(rows_per_day=1).page(DAY.isoformat(), 0, 1)[0]))
    odd = [
        {**base, "store_id": "\ud800x"},
        {**base, "customer_id": "\udfff"},
        {**base, "sale_id": "\ud83d"},
        {k: v for k, v in base.items() if k != "customer_id"},
        {**base, "amount": 1e400},
        {**base, "quantity": 10**40},
        [base],
        "text",
        None,
    ]
    assert_same([jsontext.loads(json.dumps(r, allow_nan=True)) for r in odd])


def test_unicode_digits_and_odd_spacing_match_the_reference() -> None:
    base = json.loads(json.dumps(DemoData(rows_per_day=1).page(DAY.isoformat(), 0, 1)[0]))
    odd = [
        {**base, "quantity": "\u0661\u0662"},  # Arabic-Indic digits: Python's \d matches them
        {**base, "amount": "\u0661\u0662.50"},
        {**base, "unit_price": " 9.99\u2003"},
        {**base, "sale_date": "\u0662026-11-23T10:00:00Z"},
        {**base, "currency": "e\u00fcr"},
        {**base, "store_id": "caf\u00e9"},
    ]
    assert_same([jsontext.loads(json.dumps(r)) for r in odd], first_index=3)


def test_a_realistic_day_matches_the_reference() -> None:
    from devharness.raw_days import realistic_pages

    records: list[Any] = []
    for _, body in realistic_pages(DAY, 4000, page_size=500, nan_every_pages=3):
        records.extend(jsontext.loads(body)["data"])
    assert_same(records, first_index=10_000)
