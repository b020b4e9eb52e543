"""Lossless JSON for untrusted input.

Numbers are kept as their literal text (:class:`JsonNumber`, a ``str`` subclass) so that money
stays exact, a 5,000-digit integer cannot crash the parser, and ``NaN``/``Infinity`` are plain
values that validation rejects. :func:`dumps` writes such values back unquoted, so a rejected
record is stored exactly as it was sent.
"""

from __future__ import annotations

import json
from typing import Any


class JsonNumber(str):
    """A JSON number (or the non-standard NaN/Infinity constants) kept as its source text."""

    __slots__ = ()


def _number(text: str) -> JsonNumber:
    return JsonNumber(text)


_DECODER = json.JSONDecoder(parse_float=_number, parse_int=_number, parse_constant=_number)


def loads(text: str | bytes) -> Any:
    """Parse JSON, keeping numbers as :class:`JsonNumber`. Raises ``ValueError`` when broken."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    return _DECODER.decode(text)


def dumps(value: Any) -> str:
    """Serialise a value returned by :func:`loads` back to compact, ASCII-only JSON."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


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
