"""Lossless JSON for untrusted input.

Numbers are kept as their literal text (:class:`JsonNumber`, a ``str`` subclass) so that money
stays exact, a 5,000-digit integer cannot crash the parser, and ``NaN``/``Infinity`` are plain
values that validation rejects. :func:`dumps` writes such values back unquoted, so a rejected
record is stored exactly as it was sent.
"""

from __future__ import annotations

import json
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
