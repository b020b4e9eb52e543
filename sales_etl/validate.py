"""Validation of untrusted sales records into a typed frame, with pandas.

:func:`validate_records` is the single boundary between the API's JSON and trusted data. Every
input record leaves it in exactly one of two frames:

* ``clean``: one row per valid record, typed (UTC timestamps, exact decimal text, int quantity);
* ``rejected``: one row per invalid record with a reason code, a human detail and the raw JSON.

Deduplication of ``sale_id`` happens later, over the whole day, in the warehouse load
(:mod:`sales_etl.warehouse`), because a day arrives in several chunks.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import compress, repeat
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sales_etl import jsontext, schema
from sales_etl.contract import CONTRACT_FIELDS, extra_fields
from sales_etl.currencies import ISO_4217
from sales_etl.jsontext import DeepRecord, JsonNumber

FIELDS: tuple[str, ...] = schema.FIELD_NAMES

# Limits on a record's shape, checked before the rules: a hostile record costs one reject.
RECORD_TOO_DEEP = "record_too_deep"
RECORD_TOO_LARGE = "record_too_large"
LIMIT_REASONS: tuple[str, ...] = (RECORD_TOO_DEEP, RECORD_TOO_LARGE)
MAX_RECORD_DEPTH = 64  # a sale is one level deep; extra fields may nest, but not without end
# Bytes of a record's JSON text as sent (docs/transform.md): a valid sale is ~300 bytes, and its
# fields' own limits keep it under 1 KiB; 64 KiB leaves room for extra fields, not for blobs.
MAX_RECORD_BYTES = 65_536
# What sales_rejected keeps of a record over MAX_RECORD_BYTES: the head of its text, its length
# and a sha256 of the whole (the raw lake keeps it whole).
RAW_HEAD_CHARS = 4_096

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
# Control characters (C0, DEL, C1) and the invisible bidirectional controls (marks, embeddings,
# overrides, isolates) that make an id display as another one: rejected, not neutralised
# (docs/transform.md). One pattern for Python's re and RE2 (non-ASCII written as characters).
_CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f" + "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
_UPDATED_MIN = pd.Timestamp("1970-01-01", tz="UTC")
_MICROS_UTC = pa.timestamp("us", tz="UTC")
_UPDATED_MAX = pd.Timestamp("2100-01-01", tz="UTC")

CLEAN_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.CLEAN_COLUMNS)
# What validation produces of a reject; the transform adds record_hash.
REJECTED_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in schema.REJECTED_COLUMNS if c.name != "record_hash"
)


@dataclass(frozen=True)
class ValidationResult:
    """The two frames a chunk of records splits into."""

    clean: pd.DataFrame
    rejected: pd.DataFrame


@dataclass(frozen=True)
class ValidatedChunk:
    """A chunk of records split into two Arrow tables, as validation typed them.

    ``clean`` has :data:`CLEAN_COLUMNS` (money still as its exact decimal text, timestamps in the
    resolution pandas parsed them at); ``rejected`` has :data:`REJECTED_COLUMNS`.
    :func:`sales_etl.transform.clean_table` turns them into the lake's schemas.
    """

    clean: pa.Table
    rejected: pa.Table

    def to_frames(self) -> ValidationResult:
        """The same rows as pandas frames (Arrow-backed strings, UTC datetimes)."""
        return ValidationResult(clean=_frame(self.clean), rejected=_frame(self.rejected))


def validate_records(records: Sequence[Any], day: date, first_index: int = 0) -> ValidationResult:
    """Split raw records (as parsed by :func:`sales_etl.jsontext.loads`) into clean and rejected.

    Args:
        records: the ``data`` items of one or more pages, in arrival order.
        day: the business date (UTC) the records were requested for.
        first_index: position of ``records[0]`` in the day's raw stream; becomes ``record_index``.

    Returns:
        A :class:`ValidationResult`; ``len(clean) + len(rejected) == len(records)``.
    """
    return validate_chunk(records, day, first_index).to_frames()


def validate_chunk(
    records: Sequence[Any],
    day: date,
    first_index: int = 0,
    *,
    record_index: np.ndarray | None = None,
    record_sizes: Mapping[int, int] | None = None,
    known_shallow: bool = False,
) -> ValidatedChunk:
    """:func:`validate_records` without pandas frames: the per-record path of the transform.

    Every check runs as one Arrow kernel over a column (the same kernels pandas' string methods
    call; where pandas would fall back to Python's ``re`` or parse with its own code, this does
    the same), so the result is the reference implementation's, row for row. ``record_index``
    (one per record) replaces the numbering from ``first_index`` when the records are not
    consecutive in the day's stream. ``record_sizes`` gives the bytes of a record's text as sent,
    by position in ``records``, for the records that may be over :data:`MAX_RECORD_BYTES` (a
    record not listed is within it); without it, no size limit applies. ``known_shallow``: the
    caller knows no record nests deeper than :data:`MAX_RECORD_DEPTH` (from the page's text), so
    the depth is not measured record by record.
    """
    sizes: Mapping[int, int] = record_sizes or {}
    too_deep = np.zeros(len(records), dtype=bool) if known_shallow else _too_deep(records)
    shallow: Sequence[Any] = (
        [None if deep else r for r, deep in zip(records, too_deep.tolist(), strict=True)]
        if too_deep.any()
        else records
    )
    columns, is_obj = _columns(shallow)
    typed = _typed_json(columns, day)
    passed = {
        RECORD_TOO_DEEP: ~too_deep,
        RECORD_TOO_LARGE: ~_over_size(len(records), sizes),
        NOT_AN_OBJECT: is_obj,
        **typed.passed,
    }
    codes = _first_failure(passed)
    good = codes == 0
    if record_index is None:
        record_index = np.arange(first_index, first_index + len(records), dtype=np.int64)
    extra = _extras(compress(shallow, good.tolist()))
    return ValidatedChunk(
        clean=typed.clean_rows(good, record_index, extra),
        rejected=typed.rejected_rows(codes, record_index, records, sizes),
    )


def strict_clean(
    table: pa.Table,
    day: date,
    record_index: np.ndarray,
    *,
    too_large: np.ndarray | None = None,
    extra: pa.Array | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """The rows of a strictly parsed page (:mod:`sales_etl.arrow_parse`) that pass every rule.

    ``too_large`` marks the rows whose text is over :data:`MAX_RECORD_BYTES`: never clean.
    ``extra`` is each row's fields outside the contract as :func:`extra_fields` writes them
    (read from the records' text by the caller, :func:`sales_etl.transform.judge_pages`); None:
    no row carries any.

    Returns them as :func:`validate_chunk` types its clean rows, and a mask of the other rows:
    those are judged by :func:`validate_chunk` from their text, which gives their reasons. The
    test is conservative (a zero price goes the per-record way), never looser than the rules.
    """
    column = table.column
    ids, times, passed = _ids_and_times(lambda name: _array(column(name)), day)
    quantity = _array(column("quantity"))
    unit_price, amount = _array(column("unit_price")), _array(column("amount"))
    currency = pc.utf8_upper(_array(column("currency")))
    passed[INVALID["quantity"]] = _mask(
        pc.and_(pc.greater_equal(quantity, 1), pc.less_equal(quantity, MAX_QUANTITY))
    )
    passed[INVALID["unit_price"]] = _mask(pc.greater(unit_price, 0))
    passed[NON_POSITIVE_AMOUNT] = _mask(pc.greater(amount, 0))
    passed[INVALID["currency"]] = _mask(pc.is_in(currency, value_set=_CURRENCIES))
    good = np.logical_and.reduce(list(passed.values()))
    if too_large is not None:
        good &= ~too_large
    typed = _Typed(
        values={
            **ids,
            **times,
            "quantity": quantity,
            "unit_price": unit_price,
            "amount": amount,
            "currency": currency,
        },
        passed=passed,
    )
    kept_extra = (
        pa.nulls(int(good.sum()), pa.string()) if extra is None else extra.filter(pa.array(good))
    )
    return typed.clean_rows(good, record_index, kept_extra), ~good


@dataclass(frozen=True)
class _Typed:
    """A chunk's fields as the rules type them, and which rows passed each check.

    ``values`` holds an Arrow array per field (timestamps as pandas UTC series), null where the
    field's own check failed; ``passed`` a mask per check, keyed by its reason code.
    """

    values: dict[str, Any]
    passed: dict[str, np.ndarray]

    def clean_rows(self, good: np.ndarray, record_index: np.ndarray, extra: pa.Array) -> pa.Table:
        """The rows in ``good``, with :data:`CLEAN_COLUMNS` (money as its exact decimal text)."""
        keep = pa.array(good)
        v = self.values
        return pa.table(
            {
                "record_index": pa.array(record_index[good]),
                "sale_id": v["sale_id"].filter(keep),
                "sale_date": _timestamp_array(v["sale_date"]).filter(keep),
                "store_id": v["store_id"].filter(keep),
                "product_id": v["product_id"].filter(keep),
                "customer_id": v["customer_id"].filter(keep),
                "quantity": v["quantity"].filter(keep).cast(pa.int32()),
                "unit_price": v["unit_price"].filter(keep).cast(pa.string()),
                "amount": v["amount"].filter(keep).cast(pa.string()),
                "currency": v["currency"].filter(keep),
                "updated_at": _timestamp_array(v["updated_at"]).filter(keep),
                "extra": extra,
            }
        )

    def rejected_rows(
        self,
        codes: np.ndarray,
        record_index: np.ndarray,
        originals: Sequence[Any],
        sizes: Mapping[int, int],
    ) -> pa.Table:
        """The rows with a failure code, with :data:`REJECTED_COLUMNS`: reason, detail, raw text."""
        bad = np.flatnonzero(codes)
        take = pa.array(bad, type=pa.int64())
        labels = _REASON_LABELS[codes[bad]].tolist()
        updated_ok = pa.array(self.passed[INVALID["updated_at"]])
        updated = pc.if_else(updated_ok, _timestamp_array(self.values["updated_at"]), None)
        positions = bad.tolist()
        return pa.table(
            {
                "record_index": pa.array(record_index[bad]),
                "sale_id": self.values["sale_id"].take(take),
                "updated_at": updated.take(take),
                "reason": pa.array(labels, type=pa.string()),
                "detail": pa.array(
                    [
                        describe_problem(originals[p], reason, sizes.get(p))
                        for p, reason in zip(positions, labels, strict=True)
                    ],
                    type=pa.string(),
                ),
                "raw_record": pa.array(
                    [raw_json(originals[p], sizes.get(p)) for p in positions], type=pa.string()
                ),
            }
        )


def _ids_and_times(
    column: Callable[[str], Any], day: date
) -> tuple[dict[str, pa.Array], dict[str, pd.Series], dict[str, np.ndarray]]:
    """The id and timestamp fields, typed, and which rows passed their checks (by reason code).

    ``column(name)`` gives a field's JSON values (per-record path) or its Arrow array (strict
    parse). ``updated_at`` passes only within [1970, 2100); ``sale_date`` must fall in ``day``.
    """
    ids: dict[str, pa.Array] = {}
    passed: dict[str, np.ndarray] = {}
    for field, max_chars in MAX_ID_CHARS.items():
        nullable = field == "customer_id"
        ids[field], passed[INVALID[field]] = _text(column(field), max_chars, nullable=nullable)
    sale_date, passed[INVALID["sale_date"]] = _timestamps(column("sale_date"))
    updated_at, updated_ok = _timestamps(column("updated_at"))
    passed[INVALID["updated_at"]] = updated_ok & _flag(
        (updated_at >= _UPDATED_MIN) & (updated_at < _UPDATED_MAX)
    )
    day_start = pd.Timestamp(day, tz="UTC")
    passed[SALE_DATE_NOT_IN_DAY] = _flag(
        (sale_date >= day_start) & (sale_date < day_start + pd.Timedelta(days=1))
    )
    return ids, {"sale_date": sale_date, "updated_at": updated_at}, passed


def _typed_json(columns: Mapping[str, Sequence[Any]], day: date) -> _Typed:
    """The per-record path's fields from JSON values: every rule of :data:`REASON_ORDER`."""
    ids, times, passed = _ids_and_times(columns.__getitem__, day)
    quantity_text, quantity_ok = _numbers(columns["quantity"], _INTEGER, allow_strings=False)
    quantity = _to_integer(quantity_text)
    passed[INVALID["quantity"]] = quantity_ok & _mask(
        pc.and_(pc.greater_equal(quantity, 1), pc.less_equal(quantity, MAX_QUANTITY))
    )
    unit_price, unit_price_ok = _numbers(columns["unit_price"], _DECIMAL, allow_strings=True)
    passed[INVALID["unit_price"]] = unit_price_ok & ~_mask(pc.starts_with(unit_price, pattern="-"))
    amount, passed[INVALID["amount"]] = _numbers(columns["amount"], _DECIMAL, allow_strings=True)
    passed[NON_POSITIVE_AMOUNT] = _mask(pc.greater(_to_float(amount), 0))
    currency = pc.utf8_upper(_strings(columns["currency"]))
    passed[INVALID["currency"]] = _mask(pc.is_in(currency, value_set=_CURRENCIES))
    values = {**ids, **times, "quantity": quantity, "unit_price": unit_price, "amount": amount}
    return _Typed(values={**values, "currency": currency}, passed=passed)


def _over_size(n: int, sizes: Mapping[int, int]) -> np.ndarray:
    """Which of ``n`` records are over :data:`MAX_RECORD_BYTES` (``sizes`` by position)."""
    over = np.zeros(n, dtype=bool)
    over[[p for p, size in sizes.items() if size > MAX_RECORD_BYTES]] = True
    return over


def _first_failure(passed: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row, 1 + the position in :data:`_CHECKS` of the first check it failed; 0 if none.

    A row that fails several checks gets the earliest: a sale date that is not a timestamp is
    ``invalid_sale_date``, never also ``sale_date_not_in_day``.
    """
    codes = np.zeros(len(next(iter(passed.values()))), dtype=np.int8)
    for position in range(len(_CHECKS), 0, -1):
        codes[~passed[_CHECKS[position - 1]]] = position
    return codes


def _extras(objects: Iterable[dict[str, Any]]) -> pa.Array:
    """:func:`sales_etl.contract.extra_fields` of valid records (objects); a record with only
    contract fields is found by a C-level superset test, without a Python frame."""
    kept = list(objects)
    plain = list(map(CONTRACT_FIELDS.issuperset, kept))
    if all(plain):
        return pa.nulls(len(kept), pa.string())
    texts = [None if ok else extra_fields(r) for r, ok in zip(kept, plain, strict=True)]
    return pa.array(texts, type=pa.string())


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


_STRING: Final = pd.StringDtype("pyarrow")
_CHECKS: tuple[str, ...] = (*LIMIT_REASONS, *REASON_ORDER)
_REASON_LABELS = np.array([None, *_CHECKS], dtype=object)
_CURRENCIES = pa.array(sorted(ISO_4217), type=pa.string())


_CONTAINER_TYPES = (dict, list)


def _too_deep(records: Sequence[Any]) -> np.ndarray:
    """Which records nest deeper than :data:`MAX_RECORD_DEPTH` (a DeepRecord always does)."""
    return np.fromiter(
        (
            type(r) is DeepRecord
            or (
                type(r) in _CONTAINER_TYPES
                and not _FLAT_TYPES.issuperset(map(type, r.values() if type(r) is dict else r))
                and nesting_depth(r, MAX_RECORD_DEPTH) > MAX_RECORD_DEPTH
            )
            for r in records
        ),
        dtype=bool,
        count=len(records),
    )


def nesting_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar 0, a flat object 1); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children if type(child) in _CONTAINER_TYPES)
    return deepest if type(value) in _CONTAINER_TYPES else 0


def _columns(records: Sequence[Any]) -> tuple[dict[str, Sequence[Any]], np.ndarray]:
    """The FIELDS of the records as one list per field, and which records are objects.

    Missing keys and non-objects give None. One C-level ``map(dict.get, ...)`` pass per field:
    no Python-level loop over the records.
    """
    is_obj = np.fromiter(map(dict.__instancecheck__, records), dtype=bool, count=len(records))
    objects: Sequence[Any] = (
        records if is_obj.all() else [r if type(r) is dict else {} for r in records]
    )
    columns: dict[str, Sequence[Any]] = {
        name: list(map(dict.get, objects, repeat(name))) for name in FIELDS
    }
    return columns, np.asarray(is_obj, dtype=bool)


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper={pa.string(): _STRING, pa.large_string(): _STRING}.get)


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A nullable Arrow boolean result as a plain numpy mask (unknown counts as False)."""
    return np.asarray(pc.fill_null(values, False), dtype=bool)


def _flag(mask: pd.Series) -> np.ndarray:
    """A nullable pandas comparison result as a plain numpy mask (unknown counts as False)."""
    return mask.fillna(False).to_numpy(dtype=bool)


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored anywhere downstream
        return False
    return True


_STR_OR_NULL = frozenset({str, type(None)})
_FLAT_TYPES = frozenset({str, JsonNumber, bool, type(None), int, float})
_NUMBER_OR_NULL = frozenset({JsonNumber, type(None)})
_STR_NUMBER_OR_NULL = frozenset({str, JsonNumber, type(None)})


def _strings(values: Sequence[Any], *, numbers: bool = False, strings: bool = True) -> pa.Array:
    """The values that are JSON strings (and/or numbers) as an Arrow string array, else null."""
    if strings and numbers:
        allowed = _STR_NUMBER_OR_NULL
    elif numbers:
        allowed = _NUMBER_OR_NULL
    else:
        allowed = _STR_OR_NULL
    # Usually every value already has an allowed type: then no per-value filtering in Python.
    kept: Sequence[Any] = (
        values
        if set(map(type, values)) <= allowed
        else [v if type(v) in allowed else None for v in values]
    )
    try:
        return pa.array(kept, type=pa.string())
    except (UnicodeEncodeError, ValueError, TypeError, pa.ArrowException):
        cleaned = [v if isinstance(v, str) and _utf8_ok(v) else None for v in kept]
        return pa.array(cleaned, type=pa.string())


def _is_ascii(values: pa.Array) -> bool:
    return bool(pc.all(pc.fill_null(pc.string_is_ascii(values), True)).as_py() is not False)


def _fullmatch(values: pa.Array, pattern: str) -> np.ndarray:
    """``Series.str.fullmatch(pattern)`` of pandas' Arrow strings, unknown as False.

    pandas runs the match in RE2 (Arrow) unless ``\\d`` meets non-ASCII text, where Python's
    Unicode-aware ``re`` decides instead; so does this.
    """
    if _is_ascii(values):
        return _mask(pc.match_substring_regex(values, pattern=f"^({pattern})$"))
    compiled = re.compile(pattern)
    return np.fromiter(
        (v is not None and compiled.fullmatch(v) is not None for v in values.to_pylist()),
        dtype=bool,
        count=len(values),
    )


def _text(
    values: Sequence[Any] | pa.Array, max_chars: int, *, nullable: bool
) -> tuple[pa.Array, np.ndarray]:
    """A clean string of 1..max_chars without control characters (or null, when nullable).

    ``values`` are JSON values, or an Arrow string array of the strict parse (null: missing).
    """
    text = values if isinstance(values, pa.Array) else _strings(values)
    length = pc.utf8_length(text)
    ok = _mask(
        pc.and_kleene(
            pc.and_kleene(pc.greater_equal(length, 1), pc.less_equal(length, max_chars)),
            pc.invert(pc.match_substring_regex(text, pattern=_CONTROL.pattern)),
        )
    )
    if nullable and isinstance(values, pa.Array):
        ok |= _mask(values.is_null())
    elif nullable:
        ok |= np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=len(values))
    return pc.if_else(pa.array(ok), text, None), ok


def _timestamps(values: Sequence[Any] | pa.Array) -> tuple[pd.Series, np.ndarray]:
    """Parse ISO-8601 timestamps that carry an offset; returns (UTC values, ok mask)."""
    text = values if isinstance(values, pa.Array) else _strings(values)
    shaped = _fullmatch(text, _TIMESTAMP)
    candidates = pc.if_else(pa.array(shaped), text, None)
    parsed = _cast_timestamps(candidates)
    if parsed is None:
        series = pd.Series(pd.arrays.ArrowStringArray(candidates))
        parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    ok = parsed.notna().to_numpy() & shaped
    return parsed.where(ok), ok


def _cast_timestamps(candidates: pa.Array) -> pd.Series | None:
    """What ``pd.to_datetime(..., format="ISO8601", utc=True)`` makes of the texts, by Arrow's
    cast; None when the cast cannot say (then pandas reads them).

    pandas reads such texts at microseconds (nanoseconds when a text has 7 to 9 decimals,
    seconds when there is none), and Arrow's ISO-8601 cast to microseconds gives the same instant
    for every text it takes (tests/sales_etl/test_validate.py); it refuses the rest (more than 6
    decimals, Feb 30, a 24th hour, a day-long offset): one such text, and pandas reads them all.
    """
    if candidates.null_count == len(candidates):
        return None
    try:
        return pd.Series(pc.cast(candidates, _MICROS_UTC).to_pandas())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _timestamp_array(values: pd.Series) -> pa.Array:
    return pa.Array.from_pandas(values)


def _numbers(
    values: Sequence[Any], pattern: str, *, allow_strings: bool
) -> tuple[pa.Array, np.ndarray]:
    """JSON numbers (and, if allowed, numeric strings) matching pattern; returns (text, ok)."""
    text = pc.utf8_trim_whitespace(_strings(values, numbers=True, strings=allow_strings))
    ok = _fullmatch(text, pattern)
    return pc.if_else(pa.array(ok), text, None), ok


def _to_integer(text: pa.Array) -> pa.Array:
    """``pd.to_numeric(text, errors="coerce")`` for texts that matched :data:`_INTEGER`."""
    if _is_ascii(text):
        return pc.cast(text, pa.int64())
    numeric = pd.to_numeric(pd.Series(pd.arrays.ArrowStringArray(text)), errors="coerce")
    return pa.array(numeric.astype("Int64"), type=pa.int64())


def _to_float(text: pa.Array) -> pa.Array:
    """``pd.to_numeric(text, errors="coerce")`` for texts that matched :data:`_DECIMAL`."""
    if _is_ascii(text):
        return pc.cast(text, pa.float64())
    numeric = pd.to_numeric(pd.Series(pd.arrays.ArrowStringArray(text)), errors="coerce")
    return pa.array(numeric.astype("Float64"), type=pa.float64())


def raw_json(record: Any, size: int | None = None) -> str:
    """The record as compact JSON text, cut at MAX_RAW_RECORD_CHARS (the lake keeps it whole).

    A :class:`DeepRecord` is kept as the text that was sent. A record of ``size`` bytes as sent
    over :data:`MAX_RECORD_BYTES` keeps only its first :data:`RAW_HEAD_CHARS` characters, its
    length and a sha256 of its whole text (so its ``record_hash`` stays its own).
    """
    try:
        text = record.text if type(record) is DeepRecord else jsontext.dumps(record)
    except RecursionError:
        return '"<record nested too deeply to serialise; see the raw snapshot>"'
    if size is not None and size > MAX_RECORD_BYTES and len(text) > RAW_HEAD_CHARS:
        whole = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return jsontext.dumps(
            {
                "_truncated": True,
                "_bytes": JsonNumber(size),
                "_length": JsonNumber(len(text)),
                "_sha256": whole,
                "_head": text[:RAW_HEAD_CHARS],
            }
        )
    if len(text) > MAX_RAW_RECORD_CHARS:
        return jsontext.dumps(
            {"_truncated": True, "_length": len(text), "_head": text[:MAX_RAW_RECORD_CHARS]}
        )
    return text


def describe_problem(record: Any, reason: str, size: int | None = None) -> str:
    """A short, human explanation of why a record got its reason code (``size``: bytes sent)."""
    if reason == RECORD_TOO_LARGE:
        return f"record is {size:,} bytes as sent; the limit is {MAX_RECORD_BYTES:,}"
    if reason == RECORD_TOO_DEEP:
        depth = record.depth if type(record) is DeepRecord else nesting_depth(record, 1 << 30)
        return f"record nests {depth} levels deep; the limit is {MAX_RECORD_DEPTH}"
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
