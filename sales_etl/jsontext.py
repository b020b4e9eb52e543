"""Lossless JSON for untrusted input.

Numbers are kept as their literal text (:class:`JsonNumber`, a ``str`` subclass) so that money
stays exact, a 5,000-digit integer cannot crash the parser, and ``NaN``/``Infinity`` are plain
values that validation rejects. :func:`dumps` writes such values back unquoted, so a rejected
record is stored exactly as it was sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson


class JsonNumber(str):
    """A JSON number (or the non-standard NaN/Infinity constants) kept as its source text."""

    __slots__ = ()


# The class itself is the hook: the C scanner calls it with the literal text, no wrapper frame.
_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=JsonNumber)


def loads(text: str | bytes) -> Any:
    """Parse JSON, keeping numbers as :class:`JsonNumber`. Raises ``ValueError`` when broken."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    return _DECODER.decode(text)


def dumps(value: Any) -> str:
    """Serialise a value returned by :func:`loads` back to compact, ASCII-only JSON.

    orjson writes the text when its output is provably the same: compact separators, the same
    escapes for ``"``, ``\\`` and control characters, numbers as their source text (a
    :class:`JsonNumber` is inserted verbatim as a fragment). It differs only in what it leaves
    unescaped (non-ASCII text and DEL), in refusing lone surrogates, integers beyond 64 bits and
    deep nesting, and in how it spells floats (which :func:`loads` never returns): any of those
    goes to the plain writer.
    """
    kind = type(value)
    if kind is JsonNumber:
        return str.__str__(value)
    if kind is str:
        return json.dumps(value)
    if _fast_safe_or_false(value):
        try:
            fast = orjson.dumps(value, default=_fragment, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        else:
            if fast.isascii() and b"\x7f" not in fast:
                return fast.decode("ascii")
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


_SCALARS = frozenset({str, JsonNumber, bool, type(None)})
_CONTAINERS = frozenset({dict, list})
_FAST_TYPES = _SCALARS | _CONTAINERS


def _fast_safe_or_false(value: Any) -> bool:
    try:
        return _fast_safe(value)
    except RecursionError:  # nested deeper than the walk goes: the plain writer decides
        return False


def _fast_safe(value: Any) -> bool:
    """Whether orjson spells every scalar of ``value`` as :func:`_write` does (no floats, ints)."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return kind in _SCALARS
    kinds = set(map(type, items))
    if kinds <= _SCALARS:
        return True
    if not kinds <= _FAST_TYPES:
        return False
    return all(_fast_safe(item) for item in items if type(item) in _CONTAINERS)


def _fragment(value: Any) -> orjson.Fragment:
    if type(value) is JsonNumber:
        return orjson.Fragment(str.__str__(value))
    raise TypeError(f"not serialisable here: {type(value).__name__}")


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, JsonNumber):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:  # True, False, None
        out.append(json.dumps(value))


# --- pages holding a record nested deeper than the parser goes ----------------------------------

# Records of a page deeper than this are not parsed: they are kept as their text (DeepRecord).
# Well below Python's recursion limit (1000), so the rest of the page always parses.
MAX_PARSE_DEPTH = 256
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


@dataclass(frozen=True)
class DeepRecord:
    """A record nested deeper than :data:`MAX_PARSE_DEPTH`, kept as the text that was sent."""

    text: str
    depth: int


def loads_page(text: str | bytes) -> Any:
    """:func:`loads` for a page body: a record nested too deeply becomes a :class:`DeepRecord`.

    One hostile record must not make the whole page unreadable. Raises ``ValueError`` only when
    the page is not JSON (or is nested too deeply outside its ``data`` items).
    """
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        return _loads_with_deep_records(text)


def _loads_with_deep_records(text: str) -> Any:
    """Parse ``text`` with each too-deep item of the top-level ``data`` array set aside."""
    arrays = _data_arrays(text)
    deep = [item for items in arrays for item in items if item.depth > MAX_PARSE_DEPTH]
    if not deep:
        raise ValueError("page is nested too deeply outside its data items")
    pieces: list[str] = []
    position = 0
    for item in deep:
        pieces.extend((text[position : item.start], "null"))
        position = item.stop
    pieces.append(text[position:])
    try:
        page = _DECODER.decode("".join(pieces))
    except RecursionError:
        raise ValueError("page is nested too deeply outside its data items") from None
    items = page.get("data") if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise ValueError("page lacks a 'data' list")
    for item in arrays[-1]:  # the parser keeps the last "data" when the key repeats
        if item.depth > MAX_PARSE_DEPTH:
            items[item.index] = DeepRecord(text[item.start : item.stop], item.depth)
    return page


@dataclass(frozen=True)
class _Item:
    """One item of a page's ``data`` array, as sent: ``text[start:stop]`` (no whitespace around),
    and how deeply it nests (0: a scalar, 1: a flat object or array)."""

    index: int  # position in the data array
    start: int
    stop: int
    depth: int


def _data_arrays(text: str) -> list[list[_Item]]:
    """The items of each top-level ``data`` array of the page, in order (a repeated key gives
    more than one; the parser keeps the last).

    A scan of the tokens (strings, brackets, commas, colons) with a depth counter: no recursion,
    so any depth is fine; items are cut at the array's commas, so scalars count too.
    """
    arrays: list[list[_Item]] = []
    items: list[_Item] = []
    depth = deepest = start = 0
    in_data = False
    previous = key = ""
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        if lexeme[0] == '"':
            if depth == 1 and previous in ("{", ","):
                key = lexeme
        elif lexeme == "," and in_data and depth == 2:
            items.append(_item(text, len(items), start, match.start(), deepest))
            start, deepest = match.end(), 0
        elif lexeme in "[{":
            depth += 1
            if depth == 2 and lexeme == "[" and key == '"data"' and previous == ":":
                in_data, items, start, deepest = True, [], match.end(), 0
            elif in_data:
                deepest = max(deepest, depth - 2)
        elif lexeme in "]}":
            if in_data and depth == 2:
                if items or text[start : match.start()].strip(_WHITESPACE):
                    items.append(_item(text, len(items), start, match.start(), deepest))
                in_data = False
                arrays.append(items)
            depth -= 1
        previous = lexeme
    return arrays


_WHITESPACE = " \t\r\n"


def _item(text: str, index: int, start: int, stop: int, depth: int) -> _Item:
    while start < stop and text[start] in _WHITESPACE:
        start += 1
    while stop > start and text[stop - 1] in _WHITESPACE:
        stop -= 1
    return _Item(index, start, stop, depth)


def data_item_sizes(text: str | bytes, over: int) -> dict[int, int]:
    """Bytes of the text as sent of each item of the page's ``data`` array longer than ``over``.

    By item position; for any layout (``data`` anywhere in the page object, the last one when
    the key repeats, as the parser takes it), by the same scan of the tokens as for deep
    records (:func:`_data_arrays`).
    """
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    arrays = _data_arrays(text)
    sizes = {}
    for item in arrays[-1] if arrays else []:
        if 4 * (item.stop - item.start) > over:  # a character is at most 4 bytes
            size = len(text[item.start : item.stop].encode("utf-8", "surrogatepass"))
            if size > over:
                sizes[item.index] = size
    return sizes
