"""Raw snapshot -> clean snapshot, one raw part at a time, in bounded chunks.

Each raw Parquet part is transformed on its own (:func:`transform_part`): its pages are read by
the strict Arrow parse (or record by record where it refuses), judged by the rules in chunks of
``chunk_records`` records (:func:`judge_pages`) and written as typed Parquet parts (``sales-*``
and ``rejected-*``) by a :class:`~sales_etl.snapshots.CleanSnapshotWriter`. A part's records
are numbered from the number of records in the parts before it (:func:`plan_parts`), so parts
can be transformed in any order, in parallel, on any machine, and give exactly the rows of one
sequential pass; one commit (:func:`commit_clean_snapshot`) then publishes the manifest.
:func:`transform_snapshot` is the sequential path. Memory stays bounded by the chunk size, not
by the size of the day.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sales_etl import arrow_parse, jsontext
from sales_etl.contract import extra_fields
from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.memory import cyclic_gc_paused
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

    Each page goes the strict Arrow way when it can (``strict``; :func:`judge_pages`), else
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

    The pages of a chunk are read one by one and judged together (:func:`judge_pages`): the
    rules run once per chunk, not once per page. A refused strict parse costs a parse: after
    :data:`REFUSALS_BEFORE_PROBING` refused pages in a row, the strict parse is tried on one page
    in :data:`PROBE_EVERY` until it is accepted again (either path gives the same rows, so this
    changes the speed only).
    """
    pages: list[ReadPage] = []
    records = refused = 0
    first_index = part.first_index
    for number, body in iter_part_pages(lake, part.key):
        probe = refused < REFUSALS_BEFORE_PROBING or number % PROBE_EVERY == 0
        try:
            page = read_page(body, part.day, first_index, strict=strict and probe)
        except ValueError as exc:
            raise LakeError(
                f"raw snapshot {part.snapshot_id} page {number} is not valid JSON: {exc}"
            ) from None
        if strict and probe:
            refused = 0 if page.strict is not None else refused + 1
        first_index += page.records
        records += page.records
        pages.append(page)
        if records >= chunk_records:
            yield records, judge_pages(pages, part.day)
            pages, records = [], 0
    if pages:
        yield records, judge_pages(pages, part.day)


@dataclass(frozen=True)
class ReadPage:
    """One raw page read: its records typed by the strict parse (``strict``), or, when the
    strict parse refused the page or was not tried, already judged record by record
    (``judged``: its parsed records are not kept while the rest of the chunk is read)."""

    body: bytes  # the page's text (empty once judged)
    first_index: int  # record_index of its first record
    records: int
    strict: arrow_parse.StrictPage | None = None
    judged: ValidatedChunk | None = None


def read_page(body: bytes, day: date, first_index: int, *, strict: bool = True) -> ReadPage:
    """Read one raw page for :func:`judge_pages`: the strict parse when ``strict`` and it
    accepts the page, else every record parsed losslessly and judged by the rules. Raises
    ``ValueError`` when the page is not JSON."""
    page = arrow_parse.read_strict(body) if strict else None
    if page is not None:
        return ReadPage(body, first_index, page.count, strict=page)
    data = jsontext.loads_page(body)["data"]
    sizes, shallow = arrow_parse.record_limits(body, len(data))
    judged = validate_chunk(data, day, first_index, record_sizes=sizes, known_shallow=shallow)
    return ReadPage(b"", first_index, len(data), judged=judged)


@dataclass(frozen=True)
class PageResult:
    """One page's records judged: how many, and their clean and rejected rows."""

    records: int
    chunk: ValidatedChunk
    strict: bool  # whether the strict parse read the page


def judge_page(body: bytes, day: date, first_index: int, *, strict: bool = True) -> PageResult:
    """Validate the records of one raw page, numbered from ``first_index`` (:func:`judge_pages`
    of that page alone). Raises ``ValueError`` when the page is not JSON."""
    page = read_page(body, day, first_index, strict=strict)
    return PageResult(page.records, judge_pages([page], day), strict=page.strict is not None)


def judge_pages(pages: Sequence[ReadPage], day: date) -> ValidatedChunk:
    """The clean and rejected rows of consecutive pages, in order.

    The pages the strict parse read (:func:`sales_etl.arrow_parse.read_strict`) have typed
    columns and no Python object per record: each run of them is judged at once
    (:func:`_judge_strict`), so the rules run once per chunk, not once per page. A record's
    size is the bytes of its text as sent, whichever way its page went.
    """
    results: list[ValidatedChunk] = []
    for strict, run in itertools.groupby(pages, key=lambda page: page.strict is not None):
        if strict:
            results.append(_judge_strict(list(run), day))
        else:
            results.extend(cast(ValidatedChunk, page.judged) for page in run)
    return _combine(results)


def _judge_strict(pages: Sequence[ReadPage], day: date) -> ValidatedChunk:
    """Pages the strict parse read: :func:`~sales_etl.validate.strict_clean` over all of their
    typed rows, then :func:`~sales_etl.validate.validate_chunk` over the records it could not
    vouch for and those the parse set aside, parsed from their text in one go."""
    strict = [cast(arrow_parse.StrictPage, page.strict) for page in pages]
    index = [
        np.arange(page.first_index, page.first_index + s.count, dtype=np.int64)
        for page, s in zip(pages, strict, strict=True)
    ]
    spans = [s.stops - s.starts for s in strict]
    clean, flagged = strict_clean(
        pa.concat_tables([s.records for s in strict]),
        day,
        np.concatenate([i[s.kept] for i, s in zip(index, strict, strict=True)]),
        too_large=np.concatenate(
            [n[s.kept] > MAX_RECORD_BYTES for n, s in zip(spans, strict, strict=True)]
        ),
        extra=_extra_texts(pages, strict),
    )
    texts: list[bytes] = []
    others_index: list[np.ndarray] = []
    sizes: dict[int, int] = {}
    kept_before = 0
    for page, s, i, n in zip(pages, strict, index, spans, strict=True):
        own = flagged[kept_before : kept_before + len(s.kept)]
        kept_before += len(s.kept)
        others = np.sort(np.concatenate([s.kept[own], s.aside]))
        body = page.body
        for position, start, stop in zip(
            others.tolist(), s.starts[others].tolist(), s.stops[others].tolist(), strict=True
        ):
            sizes[len(texts)] = int(n[position])
            texts.append(body[start:stop])
        others_index.append(i[others])
    if not texts:
        return ValidatedChunk(clean, _no_rejects(day))
    # One parse for all of them: each page's nesting is within the limit (read_strict).
    records = jsontext.loads(b"[" + b",".join(texts) + b"]")
    judged = validate_chunk(
        records,
        day,
        record_index=np.concatenate(others_index),
        record_sizes=sizes,
        known_shallow=True,
    )
    both = _concat([clean, judged.clean]).sort_by("record_index")
    return ValidatedChunk(both, judged.rejected)


def _extra_texts(
    pages: Sequence[ReadPage], strict: Sequence[arrow_parse.StrictPage]
) -> pa.Array | None:
    """Per kept row of the pages, its fields outside the contract as the per-record path
    writes them (:func:`~sales_etl.contract.extra_fields`), parsed from those fields' own text;
    None when no row carries any. Rows whose fields read the same (a field the source added to
    every record, with a few values) are parsed once."""
    fields: dict[int, list[bytes]] = {}
    before = 0
    for page, s in zip(pages, strict, strict=True):
        rows, starts, stops = s.extra
        for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist(), strict=True):
            fields.setdefault(before + row, []).append(page.body[start:stop])
        before += len(s.kept)
    if not fields:
        return None
    texts = {row: b"{" + b",".join(parts) + b"}" for row, parts in fields.items()}
    distinct = list(dict.fromkeys(texts.values()))
    objects = jsontext.loads(b"[" + b",".join(distinct) + b"]")
    extra = {text: extra_fields(o) for text, o in zip(distinct, objects, strict=True)}
    values: list[str | None] = [None] * before
    for row, text in texts.items():
        values[row] = extra[text]
    return pa.array(values, type=pa.string())


@functools.cache
def _no_rejects(day: date) -> pa.Table:
    return validate_chunk([], day).rejected


def _combine(results: Sequence[ValidatedChunk]) -> ValidatedChunk:
    return ValidatedChunk(
        clean=_concat([r.clean for r in results]),
        rejected=_concat([r.rejected for r in results]),
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
    resolution (a sub-microsecond fraction is cut, as PostgreSQL cannot hold it either). One
    chunk per column: the Parquet bytes written from it depend on the rows only, not on how many
    pieces they were gathered from (a strict run of pages or a page at a time).
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
    return pa.table(columns, schema=CLEAN_SCHEMA).combine_chunks()


def rejected_table(data: pd.DataFrame | pa.Table) -> pa.Table:
    """Rejected records as an Arrow table; ``record_hash`` keys a reject across reruns. One
    chunk per column, as :func:`clean_table`."""
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
    return pa.table(columns, schema=REJECTED_SCHEMA).combine_chunks()


def _column(data: pd.DataFrame | pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    if isinstance(data, pa.Table):
        return data.column(name)
    return pa.array(data[name], from_pandas=True)
