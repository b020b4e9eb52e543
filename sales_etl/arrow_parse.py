"""The strict parse of a raw page: typed Arrow columns straight from the JSON text.

``pyarrow.json`` reads a page's records with an explicit schema into columns, with no Python
object per record. Money is a ``decimal128(18, 4)`` converted from the number's literal text, so
it is exact beyond float64. The reader is strict: one value of another JSON type than the
schema's (a number where a string belongs, a record that is not an object) makes it refuse
everything it was given. So the records it cannot read as the per-record rules would are **set
aside** first, from a vectorised scan of the page's bytes (:meth:`_Scan.set_aside`), and the reader
reads the others; the transform judges the set-aside records record by record
(:mod:`sales_etl.validate`), which knows every reason. A record is set aside when it:

* is not an object;
* has a contract field twice, or a backslash anywhere (an escape: a key spelt with a ``u``
  escape, a lone surrogate...);
* has a contract field of another JSON type than the schema's: a text field that is not a string
  or null, a quantity that is not an integer literal, a money value that is not the contract's
  plain decimal (``1e2``, ``+5``, ``.5``, ``" 7 "``: the reader would take some of them, the
  rules refuse them), a container (an array, an object);
* carries a field outside the contract whose value the reader might refuse: NaN or Infinity
  (not JSON) or a number other than a plain one (``1e999999`` does not fit a double).

The reader skips the other fields outside the contract (keys are compared with the contract's
names byte for byte). The scan notes where each such field's text is (``StrictPage.extra``), and
the transform reads the record's ``extra`` from that text, as the per-record path reads it from
the whole record.

A page goes the per-record way whole when its layout is not the plain one (``data`` the page's
first container, no container after it) or a record nests deeper than the limit.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
from numpy.lib.stride_tricks import sliding_window_view

from sales_etl import jsontext
from sales_etl.schema import FIELD_NAMES, MONEY_ARROW, SALE_FIELDS
from sales_etl.validate import MAX_RECORD_BYTES, MAX_RECORD_DEPTH


def _strict_type(column: pa.DataType) -> pa.DataType:
    """Text and timestamps are read as text (the rules parse them); numbers as numbers."""
    if column == MONEY_ARROW:
        return MONEY_ARROW
    if pa.types.is_integer(column):
        return pa.int64()
    return pa.string()


RECORD_TYPE = pa.struct([pa.field(c.name, _strict_type(c.arrow)) for c in SALE_FIELDS])
PAGE_SCHEMA = pa.schema([pa.field("data", pa.list_(RECORD_TYPE))])
# Fields outside the contract are skipped: the scan compares every key with the contract's
# names byte for byte, and the caller reads such records' other fields from their text.
_PARSE = pj.ParseOptions(explicit_schema=PAGE_SCHEMA, unexpected_field_behavior="ignore")
_NO_RECORDS = pa.schema(list(RECORD_TYPE)).empty_table()

_OPEN, _CLOSE, _OPEN_LIST, _CLOSE_LIST, _QUOTE, _COMMA, _COLON = (ord(c) for c in '{}[]",:')
_BACKSLASH = ord("\\")
# bytes.translate table: 1 for a structural character or a quote, else 0 (read as bool).
_STRUCTURE_OR_QUOTE = bytes(int(chr(b) in '{}[],:"') for b in range(256))
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[ord(c) for c in " \t\r\n"]] = True
_DATA_KEY = re.compile(
    rb'^\s*\{\s*(?:"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-\w.+]+)\s*,\s*)*"data"\s*:\s*\[$'
)
# What may follow the data array in a plain page: more scalar fields (none named "data": the
# last of duplicate keys wins), then the page's close.
_TAIL = re.compile(
    rb'\s*(?:,\s*"(?!data")(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-\w.+]+)\s*)*\}\s*$'
)

# A field's kind as the strict schema reads it.
_TEXT, _INTEGER, _MONEY = 0, 1, 2
_KINDS = np.array(
    [
        _MONEY if c.arrow == MONEY_ARROW else _INTEGER if pa.types.is_integer(c.arrow) else _TEXT
        for c in SALE_FIELDS
    ],
    dtype=np.int8,
)


def _fields_by_shape() -> np.ndarray:
    """A contract field's number by its key's (length, first byte, last byte), else -1.

    The three tell the contract's names apart; :func:`_named` then checks the key byte for byte
    (another key of the same shape is a field outside the contract).
    """
    table = np.full((_LONGEST_KEY + 1, 256, 256), -1, dtype=np.int8)
    for number, name in enumerate(FIELD_NAMES):
        table[len(name), ord(name[0]), ord(name[-1])] = number
    return table


_LONGEST_KEY = max(len(n) for n in FIELD_NAMES)
_FIELD_BY_SHAPE = _fields_by_shape()
_NUMBER_BYTES = 24  # the longest plain decimal is 20 characters (-, 14 digits, ., 4 digits)
_SHORT_NUMBER_BYTES = 12  # most literals end within (_value_fits)
# Each contract name's first eight bytes as a little-endian word (with a mask of its bytes, for
# a name shorter than eight), and its last eight bytes and where they start (0: none past the
# first eight) (_named).
assert _LONGEST_KEY <= 16
_NAME_HEAD = np.array(
    [int.from_bytes(n.encode()[:8].ljust(8, b"\0"), "little") for n in FIELD_NAMES],
    dtype=np.uint64,
)
_NAME_HEAD_MASK = np.array([(1 << (8 * min(len(n), 8))) - 1 for n in FIELD_NAMES], dtype=np.uint64)
_NAME_TAIL = np.array(
    [int.from_bytes(n.encode()[-8:], "little") if len(n) > 8 else 0 for n in FIELD_NAMES],
    dtype=np.uint64,
)
_NAME_TAIL_AT = np.array([max(len(n) - 8, 0) for n in FIELD_NAMES], dtype=np.int64)
# How a value the reader skips (a field outside the contract) may start besides a plain
# number: a string, an object, an array, true, false, null. Not NaN or Infinity (not JSON), nor
# a number a double cannot hold (1e999999): the reader would refuse the page for them.
_SKIPPED_START = np.zeros(256, dtype=bool)
_SKIPPED_START[[ord(c) for c in '"{[tfn']] = True
_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << len(FIELD_NAMES))], dtype=np.int64)


@dataclass(frozen=True)
class StrictPage:
    """A page the strict parse read: the typed columns of the records it kept, and where every
    record's text is in the body (the set-aside ones are judged from it)."""

    records: pa.Table  # RECORD_TYPE's fields, one row per kept record
    kept: np.ndarray  # positions in the page's data array of the rows of ``records``
    aside: np.ndarray  # positions of the records set aside (for the per-record rules)
    starts: np.ndarray  # byte offset of each record's text in the body
    stops: np.ndarray
    # The fields outside the contract of the rows of ``records``: a row (index into ``records``)
    # and the byte span of the field's text (``"key": value``) in the body, in text order.
    extra: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def count(self) -> int:
        """How many records the page holds."""
        return len(self.starts)


def read_strict(body: bytes) -> StrictPage | None:
    """The records of a page as typed columns, those the strict parse cannot read set aside;
    None when the page is not of the plain layout (it then goes the per-record way whole)."""
    # The layout and depth first: a hostile record nested 100,000 deep goes the per-record way.
    scan = _Scan.of(body)
    if scan is None or scan.deepest - 2 > MAX_RECORD_DEPTH:
        return None
    starts, stops = scan.item_spans()
    aside, (owner, field_starts, field_stops) = scan.set_aside(starts)
    kept = np.flatnonzero(~aside)
    table = _read_records(body, starts, stops, kept)
    if table is None:
        return None
    row = np.full(len(starts), -1, dtype=np.int64)
    row[kept] = np.arange(len(kept))
    ours = row[owner] >= 0
    extra = (row[owner[ours]], field_starts[ours], field_stops[ours])
    return StrictPage(table, kept, np.flatnonzero(aside), starts, stops, extra)


def _read_records(
    body: bytes, starts: np.ndarray, stops: np.ndarray, kept: np.ndarray
) -> pa.Table | None:
    """The records at positions ``kept``, read by the strict reader; None when it refuses."""
    if len(kept) == 0:
        return _NO_RECORDS
    # Runs of consecutive kept records are one slice of the body, commas between them included.
    breaks = np.flatnonzero(np.diff(kept) != 1)
    firsts = kept[np.concatenate([[0], breaks + 1])].tolist()
    lasts = kept[np.concatenate([breaks, [len(kept) - 1]])].tolist()
    starts_list, stops_list = starts.tolist(), stops.tolist()
    text = (
        b'{"data":['
        + b",".join(
            body[starts_list[a] : stops_list[b]] for a, b in zip(firsts, lasts, strict=True)
        )
        + b"]}"
    )
    line = text.replace(b"\n", b" ").replace(b"\r", b" ")  # whitespace only, in valid JSON
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
    if records.null_count or len(records) != len(kept):
        return None
    return pa.Table.from_struct_array(records).select(list(FIELD_NAMES))


@dataclass(frozen=True)
class _Scan:
    """The structure of a plain page from a few vectorised passes over its bytes: the brackets,
    commas and colons outside strings, with the depth after each (the page's object is 1, its
    data array 2, a record 3), and the data array's items."""

    data: np.ndarray  # the body's bytes
    position: np.ndarray  # of each structural character outside strings
    chars: np.ndarray  # that character
    depth: np.ndarray
    start: int  # index in ``position`` of the data array's open
    close: int  # and of its close
    bounds: np.ndarray  # offsets of the data array's brackets and of its commas between items
    deepest: int  # the page's deepest nesting
    backslashes: np.ndarray  # offsets of the body's backslashes (escapes)

    @classmethod
    def of(cls, body: bytes) -> _Scan | None:
        data = np.frombuffer(body, dtype=np.uint8)
        backslashes = (
            np.flatnonzero(data == _BACKSLASH) if b"\\" in body else np.zeros(0, dtype=np.intp)
        )
        # The structural characters and the string quotes, in order (a fifth of the bytes): a
        # character is in a string after an odd number of quotes, a running count over these
        # only (over every byte it cost as much as the rest of the scan).
        candidate, quote = _candidates(body, data, backslashes)
        in_string = np.cumsum(quote.view(np.uint8), dtype=np.int8) & 1  # int8 wraps: parity kept
        position = candidate[(in_string == 0) & ~quote]
        chars = data[position]
        step = ((chars == _OPEN) | (chars == _OPEN_LIST)).astype(np.int64)
        step -= (chars == _CLOSE) | (chars == _CLOSE_LIST)
        depth = np.cumsum(step)
        containers = np.flatnonzero(step == 1)
        if len(containers) < 2 or depth[-1] != 0:
            return None
        start = int(containers[1])  # the data array's open, if the regex agrees
        if chars[start] != _OPEN_LIST or not _DATA_KEY.search(body[: position[start] + 1]):
            return None
        after = np.flatnonzero(depth[start:] == 1)
        if len(after) == 0:
            return None
        close = start + int(after[0])  # the data array's close
        if not _TAIL.match(body, position[close] + 1):
            return None
        inside = slice(start + 1, close)
        commas = np.flatnonzero((chars[inside] == _COMMA) & (depth[inside] == 2)) + start + 1
        bounds = np.concatenate([[position[start]], position[commas], [position[close]]])
        deepest = int(depth.max())
        return cls(data, position, chars, depth, start, close, bounds, deepest, backslashes)

    def item_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop) of each item of the data array, the whitespace around it left out."""
        starts = _skip_whitespace(self.data, self.bounds[:-1] + 1, 1)
        stops = _skip_whitespace(self.data, self.bounds[1:] - 1, -1) + 1
        if len(starts) == 1 and starts[0] >= stops[0]:  # an empty array
            return starts[:0], stops[:0]
        return starts, stops

    def set_aside(
        self, starts: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Which items the strict reader cannot read as the per-record rules would (module
        docstring); and the fields outside the contract, as (item, start, stop) of each field's
        text (``"key": value``)."""
        data = self.data
        inside = slice(self.start + 1, self.close)
        position, chars, depth = self.position[inside], self.chars[inside], self.depth[inside]
        item = np.cumsum((chars == _COMMA) & (depth == 2))  # of each character inside
        aside = data[starts] != _OPEN
        first, last = self.bounds[0], self.bounds[-1]
        slashes = self.backslashes[(self.backslashes > first) & (self.backslashes < last)]
        aside[np.searchsorted(self.bounds, slashes) - 1] = True
        colons = np.flatnonzero((chars == _COLON) & (depth == 3))
        if len(colons) == 0:
            return aside, (colons, colons, colons)
        # A key is the string between the character before its colon ({ or ,) and the colon.
        key_open = _skip_whitespace(data, position[colons - 1] + 1, 1)
        key_close = _skip_whitespace(data, position[colons] - 1, -1)
        length = np.minimum(key_close - key_open - 1, _LONGEST_KEY + 1)
        length[(length > _LONGEST_KEY) | (length < 0)] = 0  # no contract name is that long
        field = _FIELD_BY_SHAPE[length, data[key_open + 1], data[key_close - 1]].astype(np.int64)
        shaped = np.flatnonzero(field >= 0)
        padded = _padded(data)  # for the windows of bytes read from each key and value
        field[shaped[~_named(padded, key_open[shaped] + 1, field[shaped])]] = -1
        known = field >= 0
        value = _skip_whitespace(data, position[colons] + 1, 1)
        # A contract field's value must be what the schema reads as the rules do (a container
        # never is); the reader skips another field's value, which goes to ``extra``.
        kind = np.where(known, _KINDS[np.maximum(field, 0)], _INTEGER)
        fits = _value_fits(padded, value, kind)
        other = np.flatnonzero(~known)
        fits[other] |= _SKIPPED_START[data[value[other]]]
        fits[other] |= _value_fits(padded, value[other], np.full(len(other), _MONEY))
        owner = item[colons]
        aside[owner[~fits]] = True
        # A contract field twice (the reader would refuse the page): fewer fields than keys.
        firsts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
        bits = np.where(known, np.left_shift(1, np.maximum(field, 0)), 0)
        seen = np.bitwise_or.reduceat(bits, firsts)
        keys = np.add.reduceat(known.astype(np.int64), firsts)
        aside[owner[firsts][_POPCOUNT[seen] != keys]] = True
        # A field's value ends before the record's next comma, or its close.
        ends = np.flatnonzero(
            ((chars == _COMMA) & (depth == 3)) | ((chars == _CLOSE) & (depth == 2))
        )
        end = position[ends[np.searchsorted(ends, colons[other])]]
        stops = _skip_whitespace(data, end - 1, -1) + 1
        return aside, (owner[other], key_open[other], stops)


def _named(padded: np.ndarray, key: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Whether the key text at byte ``key`` is the name of ``field`` (its length and first and
    last bytes already are), byte for byte: its first and its last eight bytes, each read as
    one 64-bit word (every contract name is at most 16 bytes)."""
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    head = (words[key] & _NAME_HEAD_MASK[field]) == _NAME_HEAD[field]
    tail = words[key + _NAME_TAIL_AT[field]] == _NAME_TAIL[field]
    return head & (tail | (_NAME_TAIL_AT[field] == 0))


def _padded(data: np.ndarray) -> np.ndarray:
    """The body's bytes followed by :data:`_NUMBER_BYTES` copies of its last byte: every window
    of bytes read from a key or a value stays inside it."""
    return np.concatenate([data, np.full(_NUMBER_BYTES, data[-1], dtype=np.uint8)])


def _windows(padded: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes from each start, one row each (past the body, its last byte)."""
    return sliding_window_view(padded, width)[starts]


def _value_fits(padded: np.ndarray, value: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Whether each value (at byte ``value``) is one the strict schema reads as the rules do:
    null, or a string for text, an integer literal for a quantity, a plain decimal (a JSON
    number or a string) for money. ``padded``: the body's bytes, :func:`_padded`."""
    first = padded[value]
    fits = first == ord("n")  # null: the only JSON value starting with n
    fits |= (kind == _TEXT) & (first == _QUOTE)
    numeric = np.flatnonzero(((kind == _INTEGER) | (kind == _MONEY)) & ~fits)
    if len(numeric) == 0:
        return fits
    quoted = first[numeric] == _QUOTE
    token = value[numeric] + quoted
    money = kind[numeric] == _MONEY
    # Most literals are short: a narrow window first, the full one for those that fill it.
    plain, filled = _plain_literals(padded, token, quoted, money, _SHORT_NUMBER_BYTES)
    longer = np.flatnonzero(filled)
    if len(longer):
        plain[longer], _ = _plain_literals(
            padded, token[longer], quoted[longer], money[longer], _NUMBER_BYTES
        )
    fits[numeric] = plain
    return fits


def _plain_literals(
    padded: np.ndarray, token: np.ndarray, quoted: np.ndarray, money: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each number token (at byte ``token``, inside its quotes when ``quoted``) is, from
    the ``width`` bytes there, an integer literal (a quantity) or a plain decimal (``money``);
    and which tokens fill the window with number characters (their literal may run on)."""
    window = _windows(padded, token, width)
    digit = (window - np.uint8(ord("0"))) < 10  # bytes below "0" wrap around
    dot = window == ord(".")
    minus = window == ord("-")
    number = digit | dot | minus
    length = np.argmin(number, axis=1)  # the literal's length (0 if none, or if it fills)
    filled = (length == 0) & number[:, 0]
    within = np.arange(width) < length[:, None]
    ends = window[np.arange(len(token)), length]
    number_ended = _WHITESPACE[ends] | (ends == _COMMA) | (ends == _CLOSE)
    ended = np.where(quoted, ends == _QUOTE, number_ended)
    negative = minus[:, 0]
    dot_within = dot & within
    dots = np.count_nonzero(dot_within, axis=1)
    at = np.where(dots == 1, np.argmax(dot_within, axis=1), length)
    whole = at - negative  # digits before the point
    decimals = length - at - 1
    literal = (
        ended
        & (np.count_nonzero(minus & within, axis=1) == negative)  # a minus only in front
        & (whole >= 1)
    )
    plain = (
        literal & (whole <= 14) & ((dots == 0) | ((dots == 1) & (decimals >= 1) & (decimals <= 4)))
    )
    integer = literal & ~quoted & (dots == 0) & (whole <= 18)
    return np.where(money, plain, integer), filled


def _skip_whitespace(data: np.ndarray, positions: np.ndarray, direction: int) -> np.ndarray:
    """From each position, the first byte that is not JSON whitespace, walking ``direction``."""
    found = positions.copy()
    moving = np.flatnonzero(_WHITESPACE[data[found]])
    while len(moving):
        found[moving] += direction
        moving = moving[_WHITESPACE[data[found[moving]]]]
    return found


def _candidates(
    body: bytes, data: np.ndarray, backslashes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the structural characters and of the quotes that open or close a string,
    and which of them are such quotes. A quote after an odd run of backslashes (at
    ``backslashes``) is escaped (the only escape that can hide structure): it is neither."""
    candidate = np.flatnonzero(np.frombuffer(body.translate(_STRUCTURE_OR_QUOTE), dtype=bool))
    quote = data[candidate] == _QUOTE
    if len(backslashes):
        quoted = backslashes + 1  # a quote may follow a backslash
        quoted = quoted[quoted < len(data)]
        quoted = quoted[data[quoted] == _QUOTE].tolist()
        escaped = [q for q in quoted if _backslashes_before(data, q) % 2]
        if escaped:
            drop = np.searchsorted(candidate, escaped)
            candidate, quote = np.delete(candidate, drop), np.delete(quote, drop)
    return candidate, quote


def _backslashes_before(data: np.ndarray, position: int) -> int:
    """How many backslashes run right before ``position`` (each run is counted once per page:
    the work is linear in the page)."""
    count = 0
    while position - count > 0 and data[position - count - 1] == _BACKSLASH:
        count += 1
    return count


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
    scan = _Scan.of(body)
    if scan is None or len(scan.bounds) != count + 1:
        return jsontext.data_item_sizes(body, MAX_RECORD_BYTES), False
    bounds = scan.bounds
    sizes = {}
    for index in np.flatnonzero(np.diff(bounds) - 1 > MAX_RECORD_BYTES).tolist():
        size = len(body[bounds[index] + 1 : bounds[index + 1]].strip(b" \t\r\n"))
        if size > MAX_RECORD_BYTES:
            sizes[index] = size
    return sizes, scan.deepest - 2 <= MAX_RECORD_DEPTH
