"""Validation of untrusted sales records into a typed frame, with pandas.

:func:`validate_records` is the single boundary between the API's JSON and trusted data. Every
input record leaves it in exactly one of two frames:

* ``clean``: one row per valid record, typed (UTC timestamps, exact decimal text, int quantity);
* ``rejected``: one row per invalid record with a reason code, a human detail and the raw JSON.

Deduplication of ``sale_id`` happens later, over the whole day, in the warehouse load
(:mod:`sales_etl.warehouse`), because a day arrives in several chunks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from sales_etl import jsontext
from sales_etl.contract import extra_fields
from sales_etl.currencies import ISO_4217
from sales_etl.jsontext import JsonNumber

FIELDS: tuple[str, ...] = (
    "sale_id",
    "sale_date",
    "store_id",
    "product_id",
    "customer_id",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "updated_at",
)

# Reason codes, in the order they are checked: a record gets the first that applies.
NOT_AN_OBJECT = "not_an_object"
INVALID = {field: f"invalid_{field}" for field in FIELDS}
SALE_DATE_NOT_IN_DAY = "sale_date_not_in_day"
NON_POSITIVE_AMOUNT = "non_positive_amount"
REASON_ORDER: tuple[str, ...] = (
    NOT_AN_OBJECT,
    INVALID["sale_id"],
    INVALID["sale_date"],
    SALE_DATE_NOT_IN_DAY,
    INVALID["updated_at"],
    INVALID["store_id"],
    INVALID["product_id"],
    INVALID["customer_id"],
    INVALID["quantity"],
    INVALID["unit_price"],
    INVALID["amount"],
    INVALID["currency"],
    NON_POSITIVE_AMOUNT,
)

MAX_ID_CHARS = {"sale_id": 64, "store_id": 128, "product_id": 128, "customer_id": 128}
MAX_QUANTITY = 1_000_000
MAX_RAW_RECORD_CHARS = 1_000_000
_DECIMAL = r"-?\d{1,14}(?:\.\d{1,4})?"
_INTEGER = r"-?\d{1,10}"
_TIMESTAMP = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}:?\d{2})"
_CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UPDATED_MIN = pd.Timestamp("1970-01-01", tz="UTC")
_UPDATED_MAX = pd.Timestamp("2100-01-01", tz="UTC")

CLEAN_COLUMNS: tuple[str, ...] = ("record_index", *FIELDS, "extra")
REJECTED_COLUMNS: tuple[str, ...] = (
    "record_index",
    "sale_id",
    "updated_at",
    "reason",
    "detail",
    "raw_record",
)


@dataclass(frozen=True)
class ValidationResult:
    """The two frames a chunk of records splits into."""

    clean: pd.DataFrame
    rejected: pd.DataFrame


def validate_records(records: Sequence[Any], day: date, first_index: int = 0) -> ValidationResult:
    """Split raw records (as parsed by :func:`sales_etl.jsontext.loads`) into clean and rejected.

    Args:
        records: the ``data`` items of one or more pages, in arrival order.
        day: the business date (UTC) the records were requested for.
        first_index: position of ``records[0]`` in the day's raw stream; becomes ``record_index``.

    Returns:
        A :class:`ValidationResult`; ``len(clean) + len(rejected) == len(records)``.
    """
    n = len(records)
    index = pd.RangeIndex(first_index, first_index + n)
    is_obj = pd.Series([type(r) is dict for r in records], index=index, dtype=bool)
    objects = [r if type(r) is dict else {} for r in records]
    # Missing keys become NaN; JSON itself never yields a float, so NaN means "missing".
    frame = pd.DataFrame(objects, columns=list(FIELDS), dtype=object, index=index)

    sale_id, sale_id_ok = _text(frame["sale_id"], MAX_ID_CHARS["sale_id"], nullable=False)
    store_id, store_ok = _text(frame["store_id"], MAX_ID_CHARS["store_id"], nullable=False)
    product_id, product_ok = _text(frame["product_id"], MAX_ID_CHARS["product_id"], nullable=False)
    customer_id, customer_ok = _text(
        frame["customer_id"], MAX_ID_CHARS["customer_id"], nullable=True
    )
    sale_date, sale_date_ok = _timestamps(frame["sale_date"])
    updated_at, updated_ok = _timestamps(frame["updated_at"])
    updated_ok &= _flag((updated_at >= _UPDATED_MIN) & (updated_at < _UPDATED_MAX))
    day_start = pd.Timestamp(day, tz="UTC")
    in_day = _flag((sale_date >= day_start) & (sale_date < day_start + pd.Timedelta(days=1)))
    quantity_text, quantity_ok = _numbers(frame["quantity"], _INTEGER, allow_strings=False)
    quantity = pd.to_numeric(quantity_text, errors="coerce")
    quantity_ok &= _flag(quantity.between(1, MAX_QUANTITY))
    unit_price, unit_price_ok = _numbers(frame["unit_price"], _DECIMAL, allow_strings=True)
    unit_price_ok &= ~_flag(unit_price.str.startswith("-"))
    amount, amount_ok = _numbers(frame["amount"], _DECIMAL, allow_strings=True)
    amount_positive = _flag(pd.to_numeric(amount, errors="coerce") > 0)
    currency = _strings(frame["currency"]).str.upper()
    currency_ok = _flag(currency.isin(ISO_4217))

    failed: dict[str, pd.Series] = {
        NOT_AN_OBJECT: ~is_obj,
        INVALID["sale_id"]: ~sale_id_ok,
        INVALID["sale_date"]: ~sale_date_ok,
        SALE_DATE_NOT_IN_DAY: sale_date_ok & ~in_day,
        INVALID["updated_at"]: ~updated_ok,
        INVALID["store_id"]: ~store_ok,
        INVALID["product_id"]: ~product_ok,
        INVALID["customer_id"]: ~customer_ok,
        INVALID["quantity"]: ~quantity_ok,
        INVALID["unit_price"]: ~unit_price_ok,
        INVALID["amount"]: ~amount_ok,
        INVALID["currency"]: ~currency_ok,
        NON_POSITIVE_AMOUNT: amount_ok & ~amount_positive,
    }
    reason = pd.Series(None, index=index, dtype=object)
    for code in reversed(REASON_ORDER):  # the earliest check in REASON_ORDER wins
        reason = reason.mask(failed[code], code)
    bad = reason.notna()
    good = ~bad

    clean = pd.DataFrame(
        {
            "record_index": index.to_series(index=index)[good].astype("int64"),
            "sale_id": sale_id[good],
            "sale_date": sale_date[good],
            "store_id": store_id[good],
            "product_id": product_id[good],
            "customer_id": customer_id[good],
            "quantity": quantity[good].astype("int32"),
            "unit_price": unit_price[good],
            "amount": amount[good],
            "currency": currency[good],
            "updated_at": updated_at[good],
            # The fields outside the contract, one record at a time (the reference way).
            "extra": pd.Series(
                [extra_fields(r) for r in objects], index=index, dtype=sale_id.dtype
            )[good],
        }
    ).reset_index(drop=True)

    bad_positions = np.flatnonzero(bad.to_numpy())
    rejected = pd.DataFrame(
        {
            "record_index": index.to_series(index=index)[bad].astype("int64"),
            "sale_id": sale_id[bad].where(sale_id_ok[bad]),
            "updated_at": updated_at[bad].where(updated_ok[bad]),
            "reason": reason[bad].astype(_STRING),
            "detail": pd.Series(
                [describe_problem(records[p], str(reason.iloc[p])) for p in bad_positions],
                index=index[bad_positions],
                dtype=_STRING,
            ),
            "raw_record": pd.Series(
                [raw_json(records[p]) for p in bad_positions],
                index=index[bad_positions],
                dtype=_STRING,
            ),
        }
    ).reset_index(drop=True)
    return ValidationResult(clean=clean, rejected=rejected)


_STRING = "string[pyarrow]"


def _flag(mask: pd.Series) -> pd.Series:
    """A nullable comparison result as a plain bool mask (unknown counts as False)."""
    return mask.fillna(False).astype(bool)


def valid_id(value: Any, max_chars: int) -> bool:
    """One JSON value as the id rules take it: a string of 1..max_chars, no control or
    bidirectional-control character, no lone surrogate (what :func:`_text` passes)."""
    return (
        type(value) is str  # a JSON number (JsonNumber) is no id
        and 1 <= len(value) <= max_chars
        and not _CONTROL.search(value)
        and _utf8_ok(value)
    )


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored anywhere downstream
        return False
    return True


def _strings(col: pd.Series, *, numbers: bool = False, strings: bool = True) -> pd.Series:
    """The values that are JSON strings (and/or numbers) as an Arrow string series, else null."""
    kinds = col.map(type)
    keep = pd.Series(False, index=col.index)
    if strings:
        keep |= kinds.map(lambda k: k is str)
    if numbers:
        keep |= kinds.map(lambda k: k is JsonNumber)
    values = col.where(keep, None)
    try:
        return pd.Series(values, dtype=_STRING)
    except (UnicodeEncodeError, ValueError, TypeError):
        cleaned = [v if isinstance(v, str) and _utf8_ok(v) else None for v in values]
        return pd.Series(cleaned, index=col.index, dtype=_STRING)


def _text(col: pd.Series, max_chars: int, *, nullable: bool) -> tuple[pd.Series, pd.Series]:
    """A clean string of 1..max_chars without control characters (or null, when nullable)."""
    text = _strings(col)
    ok = _flag(text.str.len().between(1, max_chars) & ~text.str.contains(_CONTROL.pattern))
    if nullable:
        ok |= col.isna().to_numpy()
    return text.where(ok), ok


def _timestamps(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse ISO-8601 timestamps that carry an offset; returns (UTC values, ok mask)."""
    text = _strings(col)
    shaped = _flag(text.str.fullmatch(_TIMESTAMP))
    parsed = pd.to_datetime(text.where(shaped), format="ISO8601", utc=True, errors="coerce")
    ok = parsed.notna() & shaped
    return parsed.where(ok), ok


def _numbers(col: pd.Series, pattern: str, *, allow_strings: bool) -> tuple[pd.Series, pd.Series]:
    """JSON numbers (and, if allowed, numeric strings) matching pattern; returns (text, ok)."""
    text = _strings(col, numbers=True, strings=allow_strings).str.strip()
    ok = _flag(text.str.fullmatch(pattern))
    return text.where(ok), ok


def raw_json(record: Any) -> str:
    """The record as compact JSON text, cut at MAX_RAW_RECORD_CHARS (the lake keeps it whole)."""
    try:
        text = jsontext.dumps(record)
    except RecursionError:
        return '"<record nested too deeply to serialise; see the raw snapshot>"'
    if len(text) > MAX_RAW_RECORD_CHARS:
        return jsontext.dumps(
            {"_truncated": True, "_length": len(text), "_head": text[:MAX_RAW_RECORD_CHARS]}
        )
    return text


def describe_problem(record: Any, reason: str) -> str:
    """A short, human explanation of why a record got its reason code."""
    if reason == NOT_AN_OBJECT:
        return f"record is a JSON {_json_kind(record)}, not an object"
    if reason == SALE_DATE_NOT_IN_DAY:
        return f"sale_date {_preview(record.get('sale_date'))} is not on the requested day (UTC)"
    if reason == NON_POSITIVE_AMOUNT:
        return f"amount {_preview(record.get('amount'))} <= 0 is a refund or void, not a sale"
    field = reason.removeprefix("invalid_")
    if field not in record:
        return f"{field} is missing"
    value = record[field]
    kind = _json_kind(value)
    if type(value) is str and len(value) > 64:
        return f"{field} is a string of {len(value)} characters"
    if type(value) is str and (_CONTROL.search(value) or not _utf8_ok(value)):
        return f"{field} contains control or bidirectional-control characters, or invalid unicode"
    return f"{field} {_preview(value)} ({kind}) is not valid"


def _json_kind(value: Any) -> str:
    if isinstance(value, JsonNumber):
        return "number"
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _preview(value: Any, limit: int = 40) -> str:
    text = raw_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
