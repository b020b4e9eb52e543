"""The realistic generated days: exact reasons, duplicates, skew, long ids, revisions, the clock."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pandas as pd
import pytest

from devharness.demo_days import (
    KIND_NAMES,
    STALE,
    DayMix,
    day_plan,
    day_records,
    revision_time,
)
from devharness.records import BREAKAGES
from sales_etl import jsontext
from sales_etl.validate import REASON_ORDER, ValidationResult, validate_records
from tests.utils import DAY_TEXT

MIX = DayMix(rows=3000, reject_rate=0.3, duplicate_rate=0.05, skew=1.1, long_id_rate=0.1, seed=7)


def validated(records: list[Any]) -> ValidationResult:
    return validate_records(jsontext.loads(orjson.dumps(records)), date.fromisoformat(DAY_TEXT))


def reasons_by_position(result: ValidationResult, n: int) -> list[str | None]:
    reasons: list[str | None] = [None] * n
    for index, reason in zip(
        result.rejected["record_index"], result.rejected["reason"], strict=True
    ):
        reasons[int(index)] = str(reason)
    return reasons


def test_deterministic_per_day_and_seed() -> None:
    assert day_records(MIX, DAY_TEXT) == day_records(DayMix(**{**MIX.__dict__}), DAY_TEXT)
    assert day_records(MIX, DAY_TEXT) != day_records(
        DayMix(**{**MIX.__dict__, "seed": 8}), DAY_TEXT
    )
    assert day_records(MIX, DAY_TEXT) != day_records(MIX, "2026-11-24")


def test_rejects_cover_every_reason_exactly_as_planned() -> None:
    records = day_records(MIX, DAY_TEXT)
    result = validated(records)
    plan = day_plan(MIX, DAY_TEXT)
    planned = [
        None if plan.breakage[s] < 0 else BREAKAGES[plan.breakage[s]].reason
        for s in plan.stream.tolist()
    ]
    assert reasons_by_position(result, len(records)) == planned
    assert set(result.rejected["reason"]) == set(REASON_ORDER)
    distinct_rejects = int((plan.breakage >= 0).sum())
    assert 0.27 * MIX.rows < distinct_rejects < 0.33 * MIX.rows
    # the realistic ones dominate: missing store/product/time and zero amounts
    ways = Counter(BREAKAGES[c].name for c in plan.breakage.tolist() if c >= 0)
    assert ways["missing_store_id"] > ways["sql_store_id"]
    assert ways["zero_amount"] > ways["negative_amount"]


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_reject_rate(rate: float) -> None:
    mix = DayMix(rows=5000, reject_rate=rate)
    result = validated(day_records(mix, DAY_TEXT))
    assert len(result.clean) + len(result.rejected) == 5000
    assert abs(len(result.rejected) - rate * 5000) <= 0.02 * 5000
    if rate == 0:
        assert result.rejected.empty


def test_duplicates_are_the_same_record_again_later() -> None:
    records = day_records(MIX, DAY_TEXT)
    first_seen: dict[int, int] = {}
    repeats = 0
    for position, slot in enumerate(day_plan(MIX, DAY_TEXT).stream.tolist()):
        if slot in first_seen:
            repeats += 1
            assert records[first_seen[slot]] == records[position]
        else:
            first_seen[slot] = position
    assert repeats == len(records) - MIX.rows
    assert 0.03 * MIX.rows < repeats < 0.07 * MIX.rows
    ids = Counter(r["sale_id"] for r in records if isinstance(r, dict) and "sale_id" in r)
    assert sum(n - 1 for n in ids.values() if n > 1) >= 0.9 * repeats  # not all are ids


def test_long_ids_and_skew() -> None:
    mix = DayMix(rows=4000, long_id_rate=0.2, skew=1.1)
    records = day_records(mix, DAY_TEXT)
    lengths = Counter(len(r["sale_id"]) for r in records)
    assert max(lengths) == 64 and 0.15 * 4000 < lengths[64] < 0.25 * 4000
    assert len({r["sale_id"] for r in records}) == 4000
    assert len(validated(records).clean) == 4000
    stores = Counter(r["store_id"] for r in records)
    top = stores.most_common(1)[0][1]
    assert top > 10 * 4000 / mix.stores  # uniform would give ~20 per store
    uniform = Counter(r["store_id"] for r in day_records(DayMix(rows=4000), DAY_TEXT))
    assert uniform.most_common(1)[0][1] < 3 * 4000 / mix.stores


def clean_by_id(records: list[Any]) -> dict[str, Any]:
    clean = validated(records).clean
    return {row.sale_id: row for row in clean.itertuples()}


def rejected_by_id(records: list[Any]) -> dict[str, Any]:
    rejected = validated(records).rejected
    return {row.sale_id: row for row in rejected.itertuples() if isinstance(row.sale_id, str)}


def test_revision_changes_each_kind_of_sale() -> None:
    mix = DayMix(
        rows=3000,
        reject_rate=0.1,
        update_rate=0.02,
        void_rate=0.01,
        fix_rate=0.01,
        new_rate=0.01,
        stale_rate=0.01,
        malformed_update_rate=0.01,
    )
    before, after = day_records(mix, DAY_TEXT, 0), day_records(mix, DAY_TEXT, 1)
    plan = day_plan(mix, DAY_TEXT, 1)
    clean0, clean1 = clean_by_id(before), clean_by_id(after)
    rejected0, rejected1 = rejected_by_id(before), rejected_by_id(after)
    served = plan.kinds_served()
    assert all(served[k] > 0 for k in KIND_NAMES), served
    start = pd.Timestamp(revision_time(DAY_TEXT, 1))
    for slot in range(len(plan.kind)):
        kind = KIND_NAMES[plan.kind[slot]]
        sale_id = f"20261123-{slot:09d}"
        if kind == "updated":
            assert clean1[sale_id].updated_at >= start > clean0[sale_id].updated_at
            assert clean1[sale_id].quantity == clean0[sale_id].quantity + 1
            assert clean1[sale_id].amount != clean0[sale_id].amount
        elif kind == "void":
            assert rejected1[sale_id].reason == "non_positive_amount"
            assert rejected1[sale_id].updated_at >= start > clean0[sale_id].updated_at
        elif kind == "fixed":
            assert sale_id in rejected0 and sale_id not in clean0
            assert clean1[sale_id].updated_at >= start
        elif kind == "new":
            assert sale_id not in clean0 and sale_id not in rejected0
            assert clean1[sale_id].updated_at >= start
        elif kind == "stale":
            assert clean1[sale_id].updated_at < clean0[sale_id].updated_at
            assert clean1[sale_id].quantity != clean0[sale_id].quantity
        elif kind == "bad_update":
            assert sale_id in clean0 and sale_id not in clean1
            assert rejected1[sale_id].reason not in ("non_positive_amount", "invalid_updated_at")
            assert rejected1[sale_id].updated_at >= start


def test_updated_since_selects_exactly_the_changes_of_a_revision() -> None:
    for revision in (1, 2, 3):
        plan = day_plan(MIX, DAY_TEXT, revision)
        since = revision_time(DAY_TEXT, revision)
        delta = day_records(MIX, DAY_TEXT, revision, since)
        # stale versions change in this revision too, but to an older updated_at
        changed = (plan.rev[plan.stream] == revision) & (plan.kind[plan.stream] != STALE)
        assert len(delta) == int(changed.sum()) > 0
        full = day_records(MIX, DAY_TEXT, revision)
        assert delta == [r for r, c in zip(full, changed.tolist(), strict=True) if c]
        stamps = [datetime.fromisoformat(r["updated_at"]) for r in delta]
        assert min(stamps) >= since and max(stamps) < since + timedelta(hours=1)
        # every record not changed by this revision is older than its start
        previous = validated(full).clean
        older = previous[~previous["sale_id"].isin([r["sale_id"] for r in delta])]
        assert (older["updated_at"] < pd.Timestamp(since)).all()
    # a revision keeps the records of the one before (plus the new sales at the end)
    assert day_plan(MIX, DAY_TEXT, 2).count == day_plan(MIX, DAY_TEXT, 1).count + round(
        MIX.rows * MIX.new_rate
    )


def test_change_rate_scales_the_revision() -> None:
    mix = DayMix(rows=20_000).with_change_rate(0.01)
    delta = day_records(mix, DAY_TEXT, 1, revision_time(DAY_TEXT, 1))
    assert 0.009 * 20_000 <= len(delta) <= 0.011 * 20_000
