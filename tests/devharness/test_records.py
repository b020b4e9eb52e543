"""The one definition of a generated sale: valid in every spelling, each breakage its reason."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from devharness.records import (
    BREAKAGES,
    CURRENCIES,
    EXTRA_FIELD,
    OFFSETS,
    VERSION_DELAY,
    Variety,
    broken,
    draw_sales,
    render,
)
from sales_etl import jsontext
from sales_etl.validate import REASON_ORDER, ValidationResult, validate_records
from tests.utils import DAY, DAY_TEXT

VARIED = Variety(seed=3, skew=1.1, long_id_rate=0.3, odd_spellings=True)
PER_WAY = 8  # sales broken in each way: several spellings of the record under each breakage


def rendered(n: int, variety: Variety, ways: list[int] | None = None) -> list[Any]:
    sales = draw_sales(DAY_TEXT, np.arange(n, dtype=np.int64), variety)
    return render(DAY, sales, sales.second + VERSION_DELAY, ways)


def validated(records: list[Any], as_text: bool) -> ValidationResult:
    text = orjson.dumps(records) if as_text else json.dumps(records)
    return validate_records(jsontext.loads(text), DAY)


def test_every_reason_code_has_a_way_and_every_way_a_distinct_name() -> None:
    assert {b.reason for b in BREAKAGES} == set(REASON_ORDER)
    assert len({b.name for b in BREAKAGES}) == len(BREAKAGES)
    assert all(b.weight > 0 for b in BREAKAGES)


@pytest.mark.parametrize("variety", [Variety(), VARIED], ids=["plain", "varied"])
@pytest.mark.parametrize("as_text", [True, False], ids=["orjson", "json"])
def test_rendered_sales_are_valid_in_every_spelling(variety: Variety, as_text: bool) -> None:
    records = rendered(2000, variety)
    result = validated(records, as_text)
    assert len(result.clean) == 2000, result.rejected[["reason", "detail"]].head()
    assert {r["currency"] for r in records} == set(CURRENCIES)
    assert {r["sale_date"][19:].lstrip(".0123456789") for r in records} == {z for _, z in OFFSETS}
    extras = sum(EXTRA_FIELD in r for r in records)
    assert (extras > 0) == variety.odd_spellings


@pytest.mark.parametrize("as_text", [True, False], ids=["orjson", "json"])
def test_each_breakage_gives_its_reason(as_text: bool) -> None:
    ways = [w for w in range(len(BREAKAGES)) for _ in range(PER_WAY)]
    records = rendered(len(ways), VARIED, ways)
    result = validated(records, as_text)
    assert result.clean.empty
    rejected = result.rejected.sort_values("record_index")
    assert rejected["record_index"].tolist() == list(range(len(ways)))
    assert rejected["reason"].tolist() == [BREAKAGES[w].reason for w in ways]
    valid = rendered(len(ways), VARIED)
    kept = [i for i, w in enumerate(ways) if BREAKAGES[w].keeps_sale_id]
    assert [rejected["sale_id"].iloc[i] for i in kept] == [valid[i]["sale_id"] for i in kept]


def test_broken_copies_the_record() -> None:
    (record,) = rendered(1, Variety())
    before = dict(record)
    assert broken(record, "missing_store_id") == {
        k: v for k, v in before.items() if k != "store_id"
    }
    assert broken(record, "array") == [before["sale_id"], before["amount"]]
    assert record == before
    with pytest.raises(ValueError, match="unknown breakage"):
        broken(record, "no_such_way")


def test_the_same_slot_always_draws_the_same_sale() -> None:
    assert rendered(50, VARIED) == rendered(50, VARIED)
    assert rendered(50, VARIED) != rendered(50, Variety(seed=4, odd_spellings=True))
