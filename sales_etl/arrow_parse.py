"""The strict parse of a raw page: typed Arrow columns straight from the JSON text.

``pyarrow.json`` reads a page body (``{"data": [...], "next_cursor": ...}``) with an explicit
schema into columns, with no Python object per record. Money is a ``decimal128(18, 4)``
converted from the number's literal text, so it is exact beyond float64. The reader is strict:
a value of another JSON type than the schema's (a number where a string belongs, a record that is
not an object), a money text that is not a number, duplicate keys, lone surrogates... make it
refuse the whole page, and the transform judges that page record by record
(:mod:`sales_etl.validate`), which knows every reason.

:func:`read_strict` also refuses pages with a money literal the reader would take but the contract's
rules refuse (``1e2``, ``+5``, ``.5``): those go the per-record way too, so both ways agree.
For a page it accepts, it also finds each record's text, for the rows a rule rejects (their
reason, detail and raw text come from the per-record rules), and refuses a page with a record
nested deeper than the limit (the per-record rules reject it).

Fields outside the contract are inferred as extra columns (a field of two JSON types across a
page makes the reader refuse it); their null counts say which records carry a non-null one, so
only those records' text is read again for the ``extra`` column (:mod:`sales_etl.contract`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from sales_etl import jsontext
from sales_etl.schema import FIELD_NAMES, MONEY_ARROW, SALE_FIELDS
from sales_etl.validate import MAX_RECORD_BYTES, MAX_RECORD_DEPTH

MONEY_FIELDS = tuple(c.name for c in SALE_FIELDS if c.arrow == MONEY_ARROW)


def _strict_type(column: pa.DataType) -> pa.DataType:
    """Text and timestamps are read as text (the rules parse them); numbers as numbers."""
    if column == MONEY_ARROW:
        return MONEY_ARROW
    if pa.types.is_integer(column):
        return pa.int64()
    return pa.string()


RECORD_TYPE = pa.struct([pa.field(c.name, _strict_type(c.arrow)) for c in SALE_FIELDS])
PAGE_SCHEMA = pa.schema([pa.field("data", pa.list_(RECORD_TYPE))])
_PARSE = pj.ParseOptions(explicit_schema=PAGE_SCHEMA, unexpected_field_behavior="infer")

# A money value the rules accept as it is written: a JSON number or a string of the contract's
# decimal form (no exponent, sign or whitespace the reader would accept and the rules refuse).
_MONEY_KEY = "|".join(MONEY_FIELDS)
_PLAIN_MONEY = re.compile(
    rb'"(?:' + _MONEY_KEY.encode() + rb')"\s*:\s*("?)-?\d{1,14}(?:\.\d{1,4})?\1\s*[,}]'
)
_OPEN, _CLOSE, _OPEN_LIST, _CLOSE_LIST, _QUOTE, _COMMA = (ord(c) for c in '{}[]",')
_BACKSLASH = ord("\\")
_DATA_KEY = re.compile(
    rb'^\s*\{\s*(?:"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-\w.+]+)\s*,\s*)*"data"\s*:\s*\[$'
)


@dataclass(frozen=True)
class StrictPage:
    """A page the strict parse read: its records' typed columns and each record's text span."""

    records: pa.Table  # RECORD_TYPE's fields, one row per record
    starts: np.ndarray  # byte offset of each record's text in the body
    stops: np.ndarray
    extra: np.ndarray | None = None  # which records carry a non-null field outside the contract


def read_strict(body: bytes) -> StrictPage | None:
    """The records of a page as typed columns, or None when the strict parse refuses the page."""
    # The layout and depth first: the reader infers extra fields' types by recursion, which a
    # hostile record nested 100,000 deep would crash; such a page goes the per-record way.
    spans = _record_spans(body)
    if spans is None:
        return None
    line = body.replace(b"\n", b" ").replace(b"\r", b" ")  # whitespace only, in valid JSON
    try:
        page = pj.read_json(
            io.BytesIO(line),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(line) + 1),
            parse_options=_PARSE,
        )
    except pa.ArrowException:
        return None
    if page.num_rows != 1 or page.column("data").null_count:
        return None
    records = page.column("data").chunk(0).values
    if records.null_count or len(spans[0]) != len(records):
        return None
    table = pa.Table.from_struct_array(records)
    if not _plain_money(body, table):
        return None
    return StrictPage(table.select(list(FIELD_NAMES)), *spans, extra=_extra_rows(table))


def _extra_rows(table: pa.Table) -> np.ndarray | None:
    """Which rows have a non-null value in a column outside the contract; None when none do."""
    extra = [n for n in table.column_names if n not in FIELD_NAMES]
    if not extra:
        return None
    carried = np.zeros(table.num_rows, dtype=bool)
    for name in extra:
        carried |= table.column(name).is_valid().to_numpy(zero_copy_only=False)
    return carried if carried.any() else None


def _record_spans(body: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(start, stop) of each record of the page's ``data`` array; None if the layout is not
    the plain one (``data`` the first array, each record an object no deeper than the limit).

    Brackets outside strings, with their depth, from a few vectorised passes over the bytes;
    escaped quotes are left out (:func:`_string_quotes`), so every quote kept opens or closes a
    string.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    quotes = _string_quotes(data)
    opens = np.flatnonzero((data == _OPEN) | (data == _OPEN_LIST))
    closes = np.flatnonzero((data == _CLOSE) | (data == _CLOSE_LIST))
    opens = opens[np.searchsorted(quotes, opens) % 2 == 0]
    closes = closes[np.searchsorted(quotes, closes) % 2 == 0]
    position = np.concatenate([opens, closes])
    order = np.argsort(position, kind="stable")
    position = position[order]
    step = np.concatenate([np.ones(len(opens), np.int64), -np.ones(len(closes), np.int64)])[order]
    depth = np.cumsum(step)  # after each bracket: the page's object is 1, data 2, a record 3
    if len(depth) < 2 or depth.max() - 2 > MAX_RECORD_DEPTH or depth[-1] != 0:
        return None
    if data[position[1]] != _OPEN_LIST or not _DATA_KEY.search(body[: position[1] + 1]):
        return None
    after = np.flatnonzero(depth[1:] == 1)  # the data array's close
    if len(after) == 0:
        return None
    inside = slice(2, after[0] + 1)
    starts = position[inside][(step[inside] == 1) & (depth[inside] == 3)]
    stops = position[inside][(step[inside] == -1) & (depth[inside] == 2)] + 1
    if len(starts) != len(stops):
        return None
    return starts, stops


def _string_quotes(data: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close a string: those not escaped, i.e. not after
    an odd run of backslashes (an escaped quote is the only escape that can hide structure)."""
    quotes = np.flatnonzero(data == _QUOTE)
    after = quotes[quotes > 0]
    after = after[data[after - 1] == _BACKSLASH]
    if len(after) == 0:
        return quotes
    escaped = [q for q in after.tolist() if _backslashes_before(data, q) % 2]
    return np.setdiff1d(quotes, np.array(escaped, dtype=quotes.dtype), assume_unique=True)


def _backslashes_before(data: np.ndarray, position: int) -> int:
    """How many backslashes run right before ``position`` (each run is counted once per page:
    the work is linear in the page)."""
    count = 0
    while position - count > 0 and data[position - count - 1] == _BACKSLASH:
        count += 1
    return count


def _plain_money(body: bytes, table: pa.Table) -> bool:
    """Whether every money value present is written in the contract's plain decimal form."""
    present = sum(len(table.column(name)) - table.column(name).null_count for name in MONEY_FIELDS)
    return present == 0 or _PLAIN_MONEY.subn(b"", body)[1] == present


def record_limits(body: bytes, count: int) -> tuple[dict[int, int], bool]:
    """Bytes as sent of the page's ``data`` items over :data:`MAX_RECORD_BYTES`, by position,
    and whether every item is known to nest no deeper than :data:`MAX_RECORD_DEPTH`.

    For the per-record path, which parses the page whole: the same measure as the strict path's
    byte spans (an item's text without the whitespace around it). A vectorised scan for the plain
    layout (which also gives the page's depth), the token scan of :mod:`sales_etl.jsontext` for
    any other (depth unknown).
    """
    if count == 0:
        return {}, True
    if len(body) <= MAX_RECORD_BYTES:
        return {}, False
    found = _item_bounds(body)
    if found is None or len(found[0]) != count + 1:
        return jsontext.data_item_sizes(body, MAX_RECORD_BYTES), False
    bounds, depth = found
    sizes = {}
    for index in np.flatnonzero(np.diff(bounds) - 1 > MAX_RECORD_BYTES).tolist():
        size = len(body[bounds[index] + 1 : bounds[index + 1]].strip(b" \t\r\n"))
        if size > MAX_RECORD_BYTES:
            sizes[index] = size
    return sizes, depth - 2 <= MAX_RECORD_DEPTH


def _item_bounds(body: bytes) -> tuple[np.ndarray, int] | None:
    """Offsets of the ``data`` array's brackets and of its commas between items, and the page's
    deepest nesting (the page's object is 1, a record 3); None when the layout is not the plain
    one (``data`` the first and last container of the page)."""
    data = np.frombuffer(body, dtype=np.uint8)
    quotes = _string_quotes(data)
    opens = (data == _OPEN) | (data == _OPEN_LIST)
    closes = (data == _CLOSE) | (data == _CLOSE_LIST)
    position = np.flatnonzero(opens | closes | (data == _COMMA))
    position = position[np.searchsorted(quotes, position) % 2 == 0]
    step = opens[position].astype(np.int64) - closes[position]
    depth = np.cumsum(step)  # after each: the page's object 1, data 2, a record 3
    containers = np.flatnonzero(step == 1)
    if len(containers) < 2 or depth[-1] != 0 or data[position[containers[1]]] != _OPEN_LIST:
        return None
    start = containers[1]  # the data array's open, if the regex agrees
    if not _DATA_KEY.search(body[: position[start] + 1]):
        return None
    after = np.flatnonzero(depth[start:] == 1)
    if len(after) == 0 or (step[start + after[0] :] == 1).any():
        return None
    close = start + after[0]  # the data array's close; no container follows it
    inside = np.arange(start + 1, close)
    commas = inside[(step[inside] == 0) & (depth[inside] == 2)]
    bounds = np.concatenate([[position[start]], position[commas], [position[close]]])
    return bounds, int(depth.max())
