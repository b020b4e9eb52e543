"""Raw snapshot -> clean snapshot, one raw part at a time, in bounded chunks.

Each raw Parquet part is transformed on its own (:func:`transform_part`): its pages are parsed
losslessly, validated in chunks of ``chunk_records`` with :func:`sales_etl.validate.validate_chunk`
and written as typed Parquet parts (``sales-*`` and ``rejected-*``) by a
:class:`~sales_etl.snapshots.CleanSnapshotWriter`. A part's records are numbered from the number
of records in the parts before it (:func:`plan_parts`), so parts can be transformed in any order,
in parallel, on any machine, and give exactly the rows of one sequential pass; one commit
(:func:`commit_clean_snapshot`) then publishes the manifest. :func:`transform_snapshot` is the
sequential path. Memory stays bounded by the chunk size, not by the size of the day.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sales_etl import arrow_parse, jsontext
from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.schema import CLEAN_SCHEMA, MONEY_ARROW, REJECTED_SCHEMA
from sales_etl.snapshots import (
    CleanParts,
    CleanSnapshotWriter,
    SnapshotRef,
    find_snapshot,
    iter_part_pages,
    raw_part_records,
)
from sales_etl.validate import MAX_RECORD_BYTES, ValidatedChunk, strict_clean, validate_chunk

# Bump when validation rules change, so cached clean snapshots are rebuilt from raw.
# 4: the clean rows carry the fields outside the contract (``extra``, sales_etl.contract).
TRANSFORM_VERSION = 4
DEFAULT_CHUNK_RECORDS = 50_000
REFUSALS_BEFORE_PROBING = 2
PROBE_EVERY = 8


_GC_LOCK = threading.Lock()
_gc_pausers = 0


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (refcounting still frees memory) for the block.

    A chunk of parsed JSON is ~1.2 million small dicts and strings without reference cycles;
    with the collector on, every few hundred allocations trigger a generation scan that walks
    them all again (parse + validate of 100k records: 1.5 s -> 0.93 s with it paused, measured
    side by side). Cycles made meanwhile (pandas internals) are collected after each chunk and
    when the last concurrent user (a backfill runs days in threads) leaves.
    """
    global _gc_pausers
    with _GC_LOCK:
        if _gc_pausers == 0:
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()


@dataclass(frozen=True)
class RawPart:
    """One raw Parquet part to transform: where it is and how its records are numbered."""

    day: date
    snapshot_id: str
    number: int
    key: str
    first_index: int  # record_index of its first record: records in the parts before it
    records: int


def plan_parts(lake: Lake, raw: SnapshotRef) -> list[RawPart]:
    """The parts of raw snapshot ``raw``, each with the stream position of its first record."""
    parts = []
    first_index = 0
    for number, (key, count) in enumerate(
        zip(raw.manifest["parts"], raw_part_records(lake, raw), strict=True)
    ):
        parts.append(RawPart(raw.day, raw.snapshot_id, number, key, first_index, count))
        first_index += count
    return parts


def reusable_clean_snapshot(lake: Lake, raw: SnapshotRef) -> SnapshotRef | None:
    """The clean snapshot already built from ``raw`` by this transform version, if any."""
    existing = find_snapshot(lake, "clean", raw.day, raw.snapshot_id)
    if existing is not None and existing.manifest.get("transform_version") == TRANSFORM_VERSION:
        return existing
    return None


def transform_part(
    lake: Lake,
    part: RawPart,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    *,
    strict: bool = True,
) -> CleanParts:
    """Validate one raw part into clean and rejected Parquet parts (not yet committed).

    Each page goes the strict Arrow way when it can (``strict``; :func:`judge_page`), else
    record by record; both give the same rows. Deterministic: a retry (or a second worker after
    a lost one) writes the same keys with the same content.
    """
    writer = CleanSnapshotWriter(lake, part.day, part.snapshot_id, name=f"{part.number:05d}-")
    with cyclic_gc_paused():
        for records, chunk in _chunks(lake, part, chunk_records, strict):
            writer.add(records, clean_table(chunk.clean), rejected_table(chunk.rejected))
            del chunk
            gc.collect(1)  # the chunk's own cycles; the old generation is not walked
    # Arrow's pool (mimalloc) keeps freed chunk buffers resident otherwise: a process that
    # transforms part after part would creep up by tens of MB per part.
    pa.default_memory_pool().release_unused()
    if writer.written.records != part.records:
        raise LakeError(
            f"raw part {part.key} holds {writer.written.records} records, "
            f"its snapshot says {part.records}"
        )
    return writer.written


def _chunks(
    lake: Lake, part: RawPart, chunk_records: int, strict: bool
) -> Iterator[tuple[int, ValidatedChunk]]:
    """(records, their validated rows) in chunks of at least ``chunk_records`` records.

    A refused strict parse costs a parse: after :data:`REFUSALS_BEFORE_PROBING` refused pages in
    a row, the strict parse is tried on one page in :data:`PROBE_EVERY` until it is accepted
    again (either path gives the same rows, so this changes the speed only).
    """
    judged: list[PageResult] = []
    records = refused = 0
    first_index = part.first_index
    for number, body in iter_part_pages(lake, part.key):
        probe = refused < REFUSALS_BEFORE_PROBING or number % PROBE_EVERY == 0
        try:
            result = judge_page(body, part.day, first_index, strict=strict and probe)
        except ValueError as exc:
            raise LakeError(
                f"raw snapshot {part.snapshot_id} page {number} is not valid JSON: {exc}"
            ) from None
        if strict and probe:
            refused = 0 if result.strict else refused + 1
        first_index += result.records
        records += result.records
        judged.append(result)
        if records >= chunk_records:
            yield records, _combine(judged)
            judged, records = [], 0
    if judged:
        yield records, _combine(judged)


@dataclass(frozen=True)
class PageResult:
    """One page's records judged: how many, and their clean and rejected rows."""

    records: int
    chunk: ValidatedChunk
    strict: bool  # whether the strict parse read the page


def judge_page(body: bytes, day: date, first_index: int, *, strict: bool = True) -> PageResult:
    """Validate the records of one raw page, numbered from ``first_index``.

    The strict parse (:func:`sales_etl.arrow_parse.read_strict`) types the columns of the
    page's records without a Python object per record; the records it sets aside and the rows it
    cannot vouch for (a rule fails) are judged by :func:`sales_etl.validate.validate_chunk` from
    their text. A page the strict parse refuses is judged record by record. Either way a
    record's size is the bytes of its text as sent. Raises ``ValueError`` when the page is not
    JSON.
    """
    page = arrow_parse.read_strict(body) if strict else None
    if page is None:
        data = jsontext.loads_page(body)["data"]
        sizes, shallow = arrow_parse.record_limits(body, len(data))
        judged = validate_chunk(data, day, first_index, record_sizes=sizes, known_shallow=shallow)
        return PageResult(len(data), judged, strict=False)
    index = np.arange(first_index, first_index + page.count, dtype=np.int64)
    spans = page.stops - page.starts
    kept = page.kept
    clean, flagged = strict_clean(
        page.records, day, index[kept], too_large=spans[kept] > MAX_RECORD_BYTES
    )
    others = np.sort(np.concatenate([kept[flagged], page.aside]))
    if len(others) == 0:
        return PageResult(page.count, ValidatedChunk(clean, _no_rejects(day)), strict=True)
    starts, stops = page.starts[others].tolist(), page.stops[others].tolist()
    # One parse for all of them: the page's nesting is within the limit (read_strict).
    records = jsontext.loads(
        b"[" + b",".join(body[a:b] for a, b in zip(starts, stops, strict=True)) + b"]"
    )
    sizes = {i: int(spans[p]) for i, p in enumerate(others.tolist())}
    judged = validate_chunk(
        records, day, record_index=index[others], record_sizes=sizes, known_shallow=True
    )
    both = _concat([clean, judged.clean]).sort_by("record_index")
    return PageResult(page.count, ValidatedChunk(both, judged.rejected), strict=True)


@functools.cache
def _no_rejects(day: date) -> pa.Table:
    return validate_chunk([], day).rejected


def _combine(results: Sequence[PageResult]) -> ValidatedChunk:
    return ValidatedChunk(
        clean=_concat([r.chunk.clean for r in results]),
        rejected=_concat([r.chunk.rejected for r in results]),
    )


_NANOS = pa.timestamp("ns", tz="UTC")


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate validated rows; timestamps at one resolution (pandas picks it per call).

    Only valid timestamps are kept (1970..2100), so nanoseconds hold them all.
    """
    same = [
        t.cast(
            pa.schema(
                [f.with_type(_NANOS) if pa.types.is_timestamp(f.type) else f for f in t.schema]
            )
        )
        for t in tables
    ]
    return pa.concat_tables(same)


def commit_clean_snapshot(lake: Lake, raw: SnapshotRef, parts: Sequence[CleanParts]) -> SnapshotRef:
    """Publish the clean snapshot of ``raw`` from its transformed parts, in raw part order."""
    writer = CleanSnapshotWriter(lake, raw.day, raw.snapshot_id)
    written = sum(part.records for part in parts)
    if written != int(raw.manifest["records"]):
        raise LakeError(
            f"clean snapshot {raw.snapshot_id} would hold {written} records, "
            f"the raw one has {raw.manifest['records']}"
        )
    segments = _clean_segments(raw, parts)
    meta = {"segments": segments} if segments else {}
    return writer.commit(*parts, transform_version=TRANSFORM_VERSION, **meta)


def _clean_segments(raw: SnapshotRef, parts: Sequence[CleanParts]) -> list[dict[str, Any]]:
    """The clean side of a compacted raw snapshot's segments (one ``CleanParts`` per raw part):
    per segment its id, mode, parts and counts, as a clean manifest states them."""
    segments = []
    for seg in raw.manifest.get("segments", ()):
        first = int(seg["first_part"])
        total = sum(parts[first : first + int(seg["parts"])], CleanParts())
        segments.append(
            {"snapshot_id": seg["snapshot_id"], "mode": seg["mode"], **total.manifest_fields()}
        )
    return segments


def transform_snapshot(
    lake: Lake,
    raw: SnapshotRef,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    *,
    strict: bool = True,
) -> SnapshotRef:
    """Validate a raw snapshot into the clean zone, part after part, in this process.

    Reuses a clean snapshot already built from ``raw``. The parallel path (the flow's
    ``transform-part`` tasks) runs the same :func:`transform_part` per part and gives the same
    snapshot.
    """
    existing = reusable_clean_snapshot(lake, raw)
    if existing is not None:
        return existing
    parts = [
        transform_part(lake, part, chunk_records, strict=strict) for part in plan_parts(lake, raw)
    ]
    return commit_clean_snapshot(lake, raw, parts)


def clean_table(data: pd.DataFrame | pa.Table) -> pa.Table:
    """Validated clean rows as an Arrow table of :data:`CLEAN_SCHEMA` (money as exact decimals).

    Money text becomes ``decimal128`` exactly; timestamps become microseconds, the warehouse's
    resolution (a sub-microsecond fraction is cut, as PostgreSQL cannot hold it either).
    """
    columns: dict[str, Any] = {}
    for name in CLEAN_SCHEMA.names:
        target = CLEAN_SCHEMA.field(name).type
        array = _column(data, name)
        if target == MONEY_ARROW:
            columns[name] = pc.cast(array, target)
        elif pa.types.is_timestamp(target):
            columns[name] = pc.cast(array, target, safe=False)
        else:
            columns[name] = array.cast(target)
    return pa.table(columns, schema=CLEAN_SCHEMA)


def rejected_table(data: pd.DataFrame | pa.Table) -> pa.Table:
    """Rejected records as an Arrow table; ``record_hash`` keys a reject across reruns."""
    reasons = _column(data, "reason").to_pylist()
    raws = _column(data, "raw_record").to_pylist()
    hashes = [
        hashlib.sha256(f"{reason}\x1f{raw}".encode()).hexdigest()[:32]
        for reason, raw in zip(reasons, raws, strict=True)
    ]
    columns = {
        name: _column(data, name).cast(REJECTED_SCHEMA.field(name).type)
        for name in REJECTED_SCHEMA.names
        if name != "record_hash"
    }
    columns["record_hash"] = pa.array(hashes, pa.string())
    return pa.table(columns, schema=REJECTED_SCHEMA)


def _column(data: pd.DataFrame | pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    if isinstance(data, pa.Table):
        return data.column(name)
    return pa.array(data[name], from_pandas=True)
