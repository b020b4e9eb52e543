from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sales_etl import jsontext, validate
from sales_etl.validate import REASON_ORDER, validate_records
from tests.utils import DAY, mangled_records, sale_record


def reasons(*records: Any) -> list[str]:
    result = validate_records(list(records), DAY)
    return list(result.rejected["reason"])


def test_valid_record_is_typed_and_normalised_to_utc() -> None:
    result = validate_records([sale_record(currency="eur")], DAY, first_index=7)
    assert result.rejected.empty
    row = result.clean.iloc[0]
    assert row["record_index"] == 7
    assert row["sale_date"] == pd.Timestamp("2026-11-23T13:05:09Z")
    assert row["updated_at"] == pd.Timestamp("2026-11-23T15:00:00Z")
    assert row["quantity"] == 2 and result.clean["quantity"].dtype == "int32"
    assert Decimal(row["unit_price"]) == Decimal("9.99")
    assert Decimal(row["amount"]) == Decimal("19.98")
    assert row["currency"] == "EUR"


def test_money_stays_exact() -> None:
    result = validate_records([sale_record(amount="12345678901234.1234", unit_price=0.1)], DAY)
    assert result.clean["amount"].iloc[0] == "12345678901234.1234"
    assert result.clean["unit_price"].iloc[0] == "0.1"


def test_null_and_missing_customer_are_allowed() -> None:
    result = validate_records([sale_record(customer_id=None), sale_record(customer_id=...)], DAY)
    assert len(result.clean) == 2
    assert result.clean["customer_id"].isna().all()


def test_unknown_fields_are_ignored() -> None:
    assert reasons(sale_record(extra={"nested": [1, 2]}, another="x")) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sale_id": ...}, "invalid_sale_id"),
        ({"sale_id": ""}, "invalid_sale_id"),
        ({"sale_id": "x" * 65}, "invalid_sale_id"),
        ({"sale_id": 12}, "invalid_sale_id"),
        ({"sale_id": "a\u0000b"}, "invalid_sale_id"),
        ({"sale_date": "2026-11-23T14:05:09"}, "invalid_sale_date"),  # no offset
        ({"sale_date": "not-a-date"}, "invalid_sale_date"),
        ({"sale_date": "2026-11-24T00:00:00Z"}, "sale_date_not_in_day"),
        ({"sale_date": "2026-11-23T00:30:00+01:00"}, "sale_date_not_in_day"),  # 22nd in UTC
        ({"updated_at": "9999-12-31T00:00:00Z"}, "invalid_updated_at"),
        ({"updated_at": None}, "invalid_updated_at"),
        ({"store_id": ["s"]}, "invalid_store_id"),
        ({"product_id": None}, "invalid_product_id"),
        ({"customer_id": 5}, "invalid_customer_id"),
        ({"quantity": "2"}, "invalid_quantity"),
        ({"quantity": 2.5}, "invalid_quantity"),
        ({"quantity": 0}, "invalid_quantity"),
        ({"quantity": True}, "invalid_quantity"),
        ({"unit_price": "-1"}, "invalid_unit_price"),
        ({"unit_price": "1.23456"}, "invalid_unit_price"),
        ({"amount": "12,50"}, "invalid_amount"),
        ({"amount": "1e3"}, "invalid_amount"),
        ({"amount": "NaN"}, "invalid_amount"),
        ({"amount": "123456789012345"}, "invalid_amount"),
        ({"currency": "XXY"}, "invalid_currency"),
        ({"currency": "EURO"}, "invalid_currency"),
        ({"amount": 0}, "non_positive_amount"),
        ({"amount": "-19.98"}, "non_positive_amount"),
    ],
)
def test_invalid_records_get_their_reason(changes: dict[str, Any], reason: str) -> None:
    assert reasons(sale_record(**changes)) == [reason]


def test_not_an_object() -> None:
    assert reasons([1, 2], "text", None) == ["not_an_object"] * 3


def test_nan_and_infinity_literals_are_rejected() -> None:
    (parsed,) = jsontext.loads(
        '[{"sale_id":"x","sale_date":"2026-11-23T10:00:00Z","store_id":"s","product_id":"p",'
        '"customer_id":null,"quantity":1,"unit_price":Infinity,"amount":NaN,"currency":"EUR",'
        '"updated_at":"2026-11-23T10:00:00Z"}]'
    )
    assert reasons(parsed) == ["invalid_unit_price"]


def test_rejects_keep_raw_json_sale_id_and_detail() -> None:
    bad = jsontext.loads(jsontext.dumps(sale_record(amount="12,50"))[:-1] + ',"extra":1.50}')
    result = validate_records([sale_record(), bad], DAY, first_index=100)
    rejected = result.rejected.iloc[0]
    assert rejected["record_index"] == 101
    assert rejected["sale_id"] == "S-1"
    assert "amount" in rejected["detail"]
    assert json.loads(rejected["raw_record"]) == json.loads(jsontext.dumps(bad))
    assert '"extra":1.50' in rejected["raw_record"]


def test_sql_looking_text_is_just_text() -> None:
    result = validate_records([sale_record(store_id="x'); DROP TABLE sales; --")], DAY)
    assert result.clean["store_id"].iloc[0] == "x'); DROP TABLE sales; --"


# --- property-based: arbitrary JSON never crashes validation and never loses a record -------


def _through_json(value: Any) -> Any:
    # Exactly what the pipeline sees: text from the wire, parsed losslessly.
    return jsontext.loads(json.dumps(value, allow_nan=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(mangled_records(), min_size=1, max_size=25))
def test_every_record_lands_in_exactly_one_frame(records: list[Any]) -> None:
    parsed = [_through_json(r) for r in records]
    result = validate_records(parsed, DAY, first_index=1000)
    indexes = list(result.clean["record_index"]) + list(result.rejected["record_index"])
    assert sorted(indexes) == list(range(1000, 1000 + len(parsed)))
    assert set(result.rejected["reason"]) <= set(REASON_ORDER)
    assert result.rejected["raw_record"].notna().all()
    for raw in result.rejected["raw_record"]:
        json.loads(raw)  # always valid JSON text
    assert result.clean["sale_id"].str.len().between(1, 64).all()
    assert (result.clean["amount"].map(Decimal) > 0).all()
    assert result.clean["sale_date"].dt.date.eq(DAY).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sale_id", "S-1\u202e1-S"),  # RIGHT-TO-LEFT OVERRIDE: shows as another id
        ("store_id", "S0\u202d01"),  # LEFT-TO-RIGHT OVERRIDE
        ("product_id", "\u2066P0001\u2069"),  # isolates
        ("customer_id", "C\u200f1"),  # RIGHT-TO-LEFT MARK
        ("store_id", "S\u061c1"),  # ARABIC LETTER MARK
        ("product_id", "P\x85001"),  # C1 control (NEXT LINE)
        ("customer_id", "C\x1b[31m"),  # C0 control (terminal escape)
    ],
)
def test_control_and_bidirectional_characters_in_ids_are_rejected(field: str, value: str) -> None:
    result = validate_records([_through_json(sale_record(**{field: value}))], DAY)
    assert result.clean.empty
    assert result.rejected["reason"].tolist() == [f"invalid_{field}"]
    assert result.rejected["detail"].tolist() == [
        f"{field} contains control or bidirectional-control characters, or invalid unicode"
    ]
    assert json.loads(result.rejected["raw_record"][0])[field] == value  # kept as sent


def test_bidirectional_text_in_a_currency_code_is_rejected() -> None:
    assert reasons(sale_record(currency="\u202eRUE")) == ["invalid_currency"]


def test_other_unicode_in_ids_is_kept() -> None:
    result = validate_records([sale_record(store_id="Zürich-東京-👍")], DAY)
    assert result.clean["store_id"].tolist() == ["Zürich-東京-👍"]


_DIGITS = st.sampled_from("0123456789")


@st.composite
def _shaped_timestamps(draw: st.DrawFn) -> str:
    """Texts of the timestamp shape the rules accept, with any digits: Feb 30, hour 24, offsets
    of a day, years before 1677 and after 2262 (beyond nanoseconds), 1-9 decimals, z and Z."""

    def digits(n: int) -> str:
        return "".join(draw(st.lists(_DIGITS, min_size=n, max_size=n)))

    year = draw(
        st.sampled_from(["2026", "1970", "2100", "1677", "2262", "0001", "9999"])
        | st.just(digits(4))
    )
    text = f"{year}-{digits(2)}-{digits(2)}{draw(st.sampled_from('T '))}{digits(2)}:{digits(2)}"
    if draw(st.booleans()):
        text += ":" + digits(2)
        if draw(st.booleans()):
            text += "." + digits(draw(st.integers(1, 9)))
    zone = draw(st.sampled_from(["Z", "z", "+", "-"]))
    if zone in "+-":
        zone += digits(2) + draw(st.sampled_from([":", ""])) + digits(2)
    return text + zone


@settings(max_examples=200, deadline=None)
@given(st.lists(_shaped_timestamps() | st.none() | st.just("not-a-date"), max_size=20))
# pandas reads a year beyond 2262 only when no other text of the call needs nanoseconds
@example(["9999-01-01T00:00:00Z", "2026-11-23T00:00:00.123456789Z"])
@example(["9999-01-01T00:00:00Z", "2026-11-23T00:00:00.123Z"])
def test_timestamps_are_the_instants_pandas_reads(texts: list[str | None]) -> None:
    """The Arrow cast (the usual way) and pandas' ISO-8601 parser (when the cast refuses a text)
    give the same instants and the same refusals."""
    parsed, ok = validate._timestamps(pa.array(texts, pa.string()))
    shaped = [t is not None and re.fullmatch(validate._TIMESTAMP, t) is not None for t in texts]
    expected = pd.to_datetime(
        pd.Series([t if s else None for t, s in zip(texts, shaped, strict=True)], dtype=object),
        format="ISO8601",
        utc=True,
        errors="coerce",
    )
    assert ok.tolist() == (expected.notna() & pd.Series(shaped)).tolist()
    assert list(parsed[ok]) == list(expected[ok])
