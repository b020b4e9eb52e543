"""The schema contract: shapes, how they differ from the contract and the previous snapshot."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devharness.demo_api import generate_record
from sales_etl import contract, jsontext
from sales_etl.contract import (
    CONTRACT_FIELDS,
    UNSTORABLE,
    Shape,
    ShapeCounter,
    _jsonb_safe,
    compare,
    enforce,
    extra_fields,
    json_type,
)
from sales_etl.errors import SchemaContractError, is_permanent
from tests.utils import DAY_TEXT


def shape_of(*pages: list[Any]) -> Shape:
    counter = ShapeCounter()
    for page in pages:
        counter.add(page)
    return counter.shape()


def test_the_shape_is_the_same_when_records_have_more_signatures_than_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records with many optional fields each have their own keys: past MAX_SIGNATURES the
    counter folds them into counts per field, and the shape is the field-by-field count."""
    rng = random.Random(7)
    values = [None, 1, "x", [1], {"a": 1}, True, jsontext.JsonNumber("1.50")]
    pages = [
        [{f"f{k}": rng.choice(values) for k in range(12) if rng.random() < 0.5} for _ in range(200)]
        for _ in range(5)
    ]
    expected: dict[str, dict[str, int]] = {}
    for record in (r for page in pages for r in page):
        for name, value in record.items():
            kinds = expected.setdefault(name, {})
            kinds[json_type(type(value))] = kinds.get(json_type(type(value)), 0) + 1
    monkeypatch.setattr(contract, "MAX_SIGNATURES", 50)
    counter = ShapeCounter()
    for page in pages:
        counter.add(page)
        assert len(counter._signatures) <= 50
    assert counter.shape() == Shape(1000, expected)


def sales(n: int, **changes: Any) -> list[dict[str, Any]]:
    records = []
    for i in range(n):
        record = generate_record(DAY_TEXT, i)
        for name, value in changes.items():
            if value is None:
                record.pop(name, None)
            else:
                record[name] = value
        records.append(record)
    return records


def test_the_shape_counts_records_per_field_and_json_type() -> None:
    page = jsontext.loads(
        '[{"sale_id": "a", "quantity": 1, "customer_id": null},'
        ' {"sale_id": "b", "quantity": "2", "channel": {"k": [1]}}, [1, 2], "text"]'
    )
    shape = shape_of(page[:2], page[2:])
    assert shape.records == 2  # the array and the string have no fields
    assert shape.fields == {
        "sale_id": {"string": 2},
        "quantity": {"number": 1, "string": 1},
        "customer_id": {"null": 1},
        "channel": {"object": 1},
    }
    assert shape.carried("customer_id") == 1 and shape.types("customer_id") == frozenset()
    assert Shape.from_manifest({"shape": shape.as_manifest()}) == shape
    assert Shape.from_manifest({}) is None


def test_orjson_numbers_are_numbers_too() -> None:
    shape = shape_of([{"quantity": 1, "unit_price": 1.5, "flag": True, "tags": []}])
    assert shape.fields == {
        "quantity": {"number": 1},
        "unit_price": {"number": 1},
        "flag": {"boolean": 1},
        "tags": {"array": 1},
    }


def test_a_shape_as_the_contract_is_no_change() -> None:
    shape = shape_of(sales(50))
    assert not compare(shape, "s1")
    assert not compare(shape, "s2", shape, "s1")


def test_a_new_field_is_added_with_its_record_count() -> None:
    records = sales(10)
    for record in records[4:]:
        record["channel"] = "web"
    change = compare(shape_of(records), "s2", shape_of(sales(10)), "s1")
    assert change.added == {"channel": 6}
    assert not change.missing and not change.retyped
    assert change.describe() == "added channel (6 records)"
    assert change.as_payload() == {
        "snapshot_id": "s2",
        "previous_snapshot_id": "s1",
        "added": {"channel": 6},
        "missing": {},
        "retyped": {},
    }


def test_a_field_gone_from_every_record_is_missing() -> None:
    before = shape_of(sales(10))
    change = compare(shape_of(sales(5, customer_id=None)), "s2", before, "s1")
    assert change.missing == {"customer_id": 10}
    # Against the contract alone (the day's first snapshot): no record carries it.
    assert compare(shape_of(sales(5, store_id=None)), "s1").missing == {"store_id": 0}
    # A field still carried by one record is not missing.
    partly = sales(5, customer_id=None)
    partly[0]["customer_id"] = "C1"
    assert not compare(shape_of(partly), "s2", before, "s1").missing


def test_an_extra_field_every_record_carried_before_is_missing_when_gone() -> None:
    before = shape_of(sales(4, channel="web"))
    assert compare(shape_of(sales(3)), "s2", before, "s1").missing == {"channel": 4}
    sometimes = sales(4)
    sometimes[0]["channel"] = "web"
    assert not compare(shape_of(sales(3)), "s2", shape_of(sometimes), "s1").missing


def test_an_empty_snapshot_misses_nothing() -> None:
    assert not compare(shape_of([]), "s2", shape_of(sales(3)), "s1")


def test_a_field_of_another_type_than_the_contract_is_retyped() -> None:
    records = sales(6)
    for record in records:
        record["quantity"] = str(record["quantity"])
    change = compare(shape_of(records), "s1")
    assert change.retyped == {"quantity": {"from": ["number"], "to": {"string": 6}}}
    assert change.describe() == "retyped quantity number -> string (6 records)"


def test_a_field_of_another_type_than_the_previous_snapshot_is_retyped() -> None:
    before = sales(4)
    for record in before:
        record["amount"] = jsontext.JsonNumber(record["amount"])
    change = compare(shape_of(sales(4)), "s2", shape_of(before), "s1")
    # A string amount keeps the contract, but the day's amounts were numbers until now.
    assert change.retyped == {"amount": {"from": ["number"], "to": {"string": 4}}}


def test_a_few_records_of_another_type_are_rejects_not_a_retyped_field() -> None:
    records = sales(10)
    records[3]["quantity"] = "three"
    assert not compare(shape_of(records), "s2", shape_of(sales(10)), "s1")


def test_freeze_fails_with_a_permanent_error_naming_the_fields() -> None:
    records = sales(3, channel="web", customer_id=None)
    change = compare(shape_of(records), "s2", shape_of(sales(3)), "s1")
    with pytest.raises(SchemaContractError) as failed:
        enforce(change, "freeze", DAY_TEXT)
    message = str(failed.value)
    assert "added channel (3 records); missing customer_id" in message
    assert "SCHEMA_CONTRACT=freeze" in message and "nothing was loaded" in message
    assert is_permanent(failed.value)
    enforce(change, "evolve", DAY_TEXT)
    enforce(change, "discard", DAY_TEXT)
    enforce(compare(shape_of(sales(3)), "s3"), "freeze", DAY_TEXT)  # no change: nothing raised


def test_extra_fields_are_the_non_null_fields_outside_the_contract_in_arrival_order() -> None:
    record = jsontext.loads(
        '{"zeta": 1.50, "sale_id": "a", "gone": null, "alpha": {"tags": ["x", 2e3]}}'
    )
    assert extra_fields(record) == '{"zeta":1.50,"alpha":{"tags":["x",2e3]}}'
    assert extra_fields(generate_record(DAY_TEXT, 1)) is None
    assert extra_fields(jsontext.loads('{"sale_id": "a", "gone": null}')) is None


def test_extra_fields_jsonb_cannot_hold_are_named_not_stored() -> None:
    record = jsontext.loads(
        '{"ok": "fine", "nul": "a\\u0000b", "lone": "\\ud800", "nan": NaN, "big": 1e99999}'
    )
    assert extra_fields(record) == '{"ok":"fine","_unstorable":["nul","lone","nan","big"]}'


_NUMBERS = st.sampled_from(
    ["1.50", "-0", "2e3", "1E+999", "1e1000", "NaN", "-Infinity", "7" * 1000, "7" * 1001, "1e-45"]
).map(jsontext.JsonNumber)
_TEXTS = st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "é", "😀", "\\", "u"]))
_VALUES = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXTS, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(_TEXTS, st.just("sale_id")), _VALUES, max_size=4))
def test_extra_fields_names_exactly_the_fields_jsonb_cannot_hold(record: dict[str, Any]) -> None:
    """The quick way (one scan of the whole text) gives what checking every value gives."""
    extra = {k: v for k, v in record.items() if k not in CONTRACT_FIELDS and v is not None}
    expected = None
    if extra:
        bad = [k for k, v in extra.items() if not (_jsonb_safe(k) and _jsonb_safe(v))]
        kept = {k: v for k, v in extra.items() if k not in bad}
        if bad:
            kept[UNSTORABLE] = [k if _jsonb_safe(k) else "<unstorable name>" for k in bad]
        expected = jsontext.dumps(kept)
    assert extra_fields(record) == expected
