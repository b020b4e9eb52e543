"""The schema contract: the shape of what the source sent, and how it differs from the contract.

The contract is the sale record of ``docs/sales-api.md``: the fields of
:data:`sales_etl.schema.SALE_FIELDS` with their JSON types. Each raw snapshot's manifest holds the
:class:`Shape` of its records (every top-level field seen, and per JSON type how many records carry
it), counted while the extract lands the pages (:class:`ShapeCounter`). :func:`compare` judges a
shape against the contract and against the previous snapshot of the day:

* **added**: a field the contract does not define, carried by at least one record;
* **missing**: a contract field, or a field every record of the previous snapshot carried, that
  no record carries now (judged only when the snapshot has records);
* **retyped**: a field whose values (nulls aside) have none of the JSON types it had: the
  contract's, or those of the previous snapshot. A few records of another type are rejects with
  their reason, not a change of the field's type.

What a change does is the setting ``SCHEMA_CONTRACT`` (:data:`CONTRACT_MODES`, modelled on dlt's
contract modes): ``evolve`` keeps unknown fields (the clean lake's and the warehouse's ``extra``
column), ``freeze`` fails the day before anything is loaded, ``discard`` loads without them.
The clean lake always keeps them, so a replay under any mode reproduces the warehouse.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Literal, get_args

from sales_etl import jsontext, schema
from sales_etl.errors import SchemaContractError
from sales_etl.jsontext import JsonNumber

ContractMode = Literal["evolve", "freeze", "discard"]
CONTRACT_MODES: tuple[str, ...] = get_args(ContractMode)
DEFAULT_MODE: ContractMode = "evolve"

CONTRACT_FIELDS: frozenset[str] = frozenset(schema.FIELD_NAMES)
CONTRACT_TYPES: Mapping[str, frozenset[str]] = {
    c.name: frozenset(c.json) for c in schema.SALE_FIELDS
}
NULL = "null"
_JSON_TYPES: Mapping[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    JsonNumber: "number",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): NULL,
}


def json_type(kind: type) -> str:
    """The JSON type name of a value of Python type ``kind`` as the parsers return it."""
    return _JSON_TYPES.get(kind, kind.__name__)


@dataclass(frozen=True)
class Shape:
    """What a snapshot's records looked like: per field, per JSON type, the records carrying it.

    ``records`` counts the records that are JSON objects (others have no fields).
    """

    records: int
    fields: Mapping[str, Mapping[str, int]]

    def carried(self, name: str) -> int:
        """How many records carry ``name`` (with any value, null included)."""
        return sum(self.fields.get(name, {}).values())

    def types(self, name: str) -> frozenset[str]:
        """The JSON types of ``name``'s values, null aside."""
        return frozenset(t for t, n in self.fields.get(name, {}).items() if n and t != NULL)

    def as_manifest(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "fields": {n: dict(sorted(t.items())) for n, t in sorted(self.fields.items())},
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Shape | None:
        """The shape a raw manifest holds; None for a snapshot written before shapes existed."""
        shape = manifest.get("shape")
        if not isinstance(shape, Mapping):
            return None
        fields = {
            str(n): {str(t): int(c) for t, c in types.items()}
            for n, types in shape["fields"].items()
        }
        return cls(int(shape["records"]), fields)


class ShapeCounter:
    """Counts the shape of records page by page (C-level iteration: no Python loop per record).

    Per record its keys and the types of its values, as two tuples: the records of a day share
    a few such signatures (~1.2 -> 0.9 us a record against counting every field). Records with
    many optional fields may each have their own: past :data:`MAX_SIGNATURES` they are folded
    into counts per (field, type), so memory stays bounded by the fields, not the records.
    """

    def __init__(self) -> None:
        self.records = 0
        self._signatures: Counter[tuple[tuple[str, ...], tuple[type, ...]]] = Counter()
        self._pairs: Counter[tuple[str, type]] = Counter()

    def add(self, records: Sequence[Any]) -> None:
        objects = (
            records
            if all(map(dict.__instancecheck__, records))
            else [r for r in records if type(r) is dict]
        )
        self.records += len(objects)
        keys = map(tuple, map(dict.keys, objects))
        kinds = map(tuple, map(map, repeat(type), map(dict.values, objects)))
        self._signatures.update(zip(keys, kinds, strict=True))
        if len(self._signatures) > MAX_SIGNATURES:
            self._fold()

    def _fold(self) -> None:
        for (names, kinds), count in self._signatures.items():
            for pair in zip(names, kinds, strict=True):
                self._pairs[pair] += count
        self._signatures.clear()

    def shape(self) -> Shape:
        self._fold()
        fields: dict[str, Counter[str]] = {}
        for (name, kind), count in self._pairs.items():
            fields.setdefault(str(name), Counter())[json_type(kind)] += count
        return Shape(self.records, {n: dict(t) for n, t in fields.items()})


MAX_SIGNATURES = 10_000


@dataclass(frozen=True)
class SchemaChange:
    """How a snapshot's shape differs from the contract and from the previous snapshot."""

    snapshot_id: str
    previous_snapshot_id: str | None = None
    added: Mapping[str, int] = field(default_factory=dict)  # field -> records carrying it
    missing: Mapping[str, int] = field(default_factory=dict)  # field -> records carrying it before
    retyped: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.missing or self.retyped)

    def describe(self) -> str:
        """One line: ``added channel (500 records); missing customer_id; retyped ...``."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(f"{n} ({c} records)" for n, c in self.added.items()))
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        for name, change in self.retyped.items():
            now = ", ".join(f"{t} ({c} records)" for t, c in change["to"].items())
            parts.append(f"retyped {name} {'|'.join(change['from'])} -> {now}")
        return "; ".join(parts)

    def as_payload(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "previous_snapshot_id": self.previous_snapshot_id,
            "added": dict(self.added),
            "missing": dict(self.missing),
            "retyped": {n: dict(c) for n, c in self.retyped.items()},
        }


def compare(
    shape: Shape, snapshot_id: str, previous: Shape | None = None, previous_id: str | None = None
) -> SchemaChange:
    """How ``shape`` differs from the contract and from the ``previous`` snapshot's shape."""
    added = {n: shape.carried(n) for n in sorted(shape.fields) if n not in CONTRACT_FIELDS}
    return SchemaChange(
        snapshot_id=snapshot_id,
        previous_snapshot_id=previous_id if previous is not None else None,
        added={n: c for n, c in added.items() if c},
        missing=_missing(shape, previous),
        retyped=_retyped(shape, previous),
    )


def _missing(shape: Shape, previous: Shape | None) -> dict[str, int]:
    if not shape.records:
        return {}
    expected = {name: 0 for name in schema.FIELD_NAMES}
    if previous is not None:
        expected |= {n: previous.carried(n) for n in schema.FIELD_NAMES}
        expected |= {
            n: previous.records
            for n in previous.fields
            if previous.records and previous.carried(n) == previous.records
        }
    return {n: c for n, c in expected.items() if shape.carried(n) == 0}


def _retyped(shape: Shape, previous: Shape | None) -> dict[str, dict[str, Any]]:
    retyped: dict[str, dict[str, Any]] = {}
    for name in sorted(shape.fields):
        seen = shape.types(name)
        baselines = [CONTRACT_TYPES.get(name, frozenset()) - {NULL}]
        if previous is not None:
            baselines.append(previous.types(name))
        for expected in baselines:
            if seen and expected and seen.isdisjoint(expected):
                now = {t: c for t, c in sorted(shape.fields[name].items()) if t in seen}
                retyped[name] = {"from": sorted(expected), "to": now}
                break
    return retyped


def enforce(change: SchemaChange, mode: str, day: str) -> None:
    """Under ``freeze`` a change fails the day (before anything is loaded)."""
    if mode == "freeze" and change:
        raise SchemaContractError(
            f"the source changed the shape of {day}'s records under SCHEMA_CONTRACT=freeze "
            f"(snapshot {change.snapshot_id}): {change.describe()}; nothing was loaded"
        )


# --- the unknown fields of one record, as the warehouse keeps them --------------------------

# What PostgreSQL's jsonb refuses: NUL characters, lone surrogates, NaN/Infinity, numbers whose
# exponent overflows numeric. Such a field is named under "_unstorable" (the raw lake has it).
_JSONB_NUMBER = re.compile(r"-?\d{1,1000}(?:\.\d{1,1000})?(?:[eE][+-]?\d{1,3})?")
UNSTORABLE = "_unstorable"
# In the compact JSON text of values, whatever _jsonb_safe may refuse shows as one of these: a
# NUL or a surrogate (\u0000, \ud800: ``dumps`` escapes non-ASCII text), NaN or Infinity, a
# run of 1,001 digits, an exponent of 4 digits. (A string holding such text matches too: then
# each value is checked.)
_MAYBE_UNSTORABLE = re.compile(r"\\u0000|\\ud[89a-f]|NaN|Infinity|\d{1001}|[eE][+-]?\d{4}", re.I)


def extra_fields(record: Mapping[str, Any]) -> str | None:
    """The record's fields outside the contract with a non-null value, as compact JSON text in
    arrival order (:func:`sales_etl.jsontext.dumps`); None when it has none."""
    extra = {k: v for k, v in record.items() if k not in CONTRACT_FIELDS and v is not None}
    if not extra:
        return None
    text = jsontext.dumps(extra)
    if not _MAYBE_UNSTORABLE.search(text):
        return text  # what follows would keep every field: one pass over the text, not the values
    unstorable = [k for k, v in extra.items() if not (_jsonb_safe(k) and _jsonb_safe(v))]
    if unstorable:
        extra = {k: v for k, v in extra.items() if k not in unstorable}
        extra[UNSTORABLE] = [k if _jsonb_safe(k) else "<unstorable name>" for k in unstorable]
    return jsontext.dumps(extra)


def _jsonb_safe(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return all(_jsonb_safe(k) and _jsonb_safe(v) for k, v in value.items())
    if kind is list:
        return all(map(_jsonb_safe, value))
    if kind is JsonNumber:
        return _JSONB_NUMBER.fullmatch(value) is not None
    if kind is str:
        return "\x00" not in value and _utf8(value)
    return True


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
