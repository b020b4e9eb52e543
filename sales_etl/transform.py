"""Raw snapshot -> clean snapshot, in bounded chunks.

Reads the raw pages of a day one Parquet part at a time, validates records in chunks of
``chunk_records`` with :func:`sales_etl.validate.validate_records`, and writes typed Parquet
parts (``sales-*`` and ``rejected-*``) to the clean zone. Memory stays bounded by the chunk size,
not by the size of the day.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sales_etl import jsontext
from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.schema import CLEAN_SCHEMA, MONEY_ARROW, REJECTED_SCHEMA
from sales_etl.snapshots import (
    MANIFEST,
    SnapshotRef,
    find_snapshot,
    iter_raw_pages,
    snapshot_prefix,
    write_parquet,
)
from sales_etl.validate import ValidationResult, validate_records

# Bump when validation rules change, so cached clean snapshots are rebuilt from raw.
TRANSFORM_VERSION = 1
DEFAULT_CHUNK_RECORDS = 100_000


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


@dataclass
class TransformStats:
    """Counts of one transform, stored in the clean manifest."""

    records: int = 0
    clean: int = 0
    rejected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    amount_total: str = "0"


def clean_table(frame: pd.DataFrame) -> pa.Table:
    """The clean frame as an Arrow table of :data:`CLEAN_SCHEMA` (money as exact decimals)."""
    columns: dict[str, Any] = {}
    for name in CLEAN_SCHEMA.names:
        target = CLEAN_SCHEMA.field(name).type
        array = pa.array(frame[name], from_pandas=True)
        columns[name] = pc.cast(array, target) if target == MONEY_ARROW else array.cast(target)
    return pa.table(columns, schema=CLEAN_SCHEMA)


def rejected_table(frame: pd.DataFrame) -> pa.Table:
    """The rejected frame as an Arrow table; ``record_hash`` keys a reject across reruns."""
    hashes = [
        hashlib.sha256(f"{reason}\x1f{raw}".encode()).hexdigest()[:32]
        for reason, raw in zip(frame["reason"], frame["raw_record"], strict=True)
    ]
    columns = {
        name: pa.array(frame[name], from_pandas=True).cast(REJECTED_SCHEMA.field(name).type)
        for name in REJECTED_SCHEMA.names
        if name != "record_hash"
    }
    columns["record_hash"] = pa.array(hashes, pa.string())
    return pa.table(columns, schema=REJECTED_SCHEMA)


def transform_snapshot(
    lake: Lake, raw: SnapshotRef, chunk_records: int = DEFAULT_CHUNK_RECORDS
) -> SnapshotRef:
    """Validate a raw snapshot into the clean zone (reusing a clean snapshot already built)."""
    existing = find_snapshot(lake, "clean", raw.day, raw.snapshot_id)
    if existing is not None and existing.manifest.get("transform_version") == TRANSFORM_VERSION:
        return existing

    prefix = snapshot_prefix("clean", raw.day, raw.snapshot_id)
    stats = TransformStats()
    sales_parts: list[str] = []
    rejected_parts: list[str] = []
    amount_total = Decimal(0)
    batch: list[Any] = []
    first_index = 0

    def flush() -> None:
        nonlocal batch, first_index, amount_total
        if not batch:
            return
        result: ValidationResult = validate_records(batch, raw.day, first_index)
        first_index += len(batch)
        stats.records += len(batch)
        batch = []
        if len(result.clean):
            table = clean_table(result.clean)
            key = f"{prefix}sales-{len(sales_parts):05d}.parquet"
            write_parquet(lake, key, table)
            sales_parts.append(key)
            stats.clean += table.num_rows
            amount_total += pc.sum(table.column("amount")).as_py() or Decimal(0)
        if len(result.rejected):
            table = rejected_table(result.rejected)
            key = f"{prefix}rejected-{len(rejected_parts):05d}.parquet"
            write_parquet(lake, key, table)
            rejected_parts.append(key)
            stats.rejected += table.num_rows
            stats.by_reason.update(result.rejected["reason"].tolist())

    with cyclic_gc_paused():
        for number, body in iter_raw_pages(lake, raw):
            try:
                page = jsontext.loads(body)
            except (ValueError, RecursionError) as exc:
                raise LakeError(
                    f"raw snapshot {raw.snapshot_id} page {number} is not valid JSON: {exc}"
                ) from None
            batch.extend(page["data"])
            if len(batch) >= chunk_records:
                flush()
                gc.collect(1)  # the chunk's own cycles; the old generation is not walked
        flush()

    stats.amount_total = str(amount_total)
    manifest = {
        "zone": "clean",
        "day": raw.day.isoformat(),
        "snapshot_id": raw.snapshot_id,
        "transform_version": TRANSFORM_VERSION,
        "sales_parts": sales_parts,
        "rejected_parts": rejected_parts,
        "records": stats.records,
        "clean": stats.clean,
        "rejected": stats.rejected,
        "by_reason": dict(sorted(stats.by_reason.items())),
        "clean_amount_total": stats.amount_total,
        "committed_at": datetime.now(UTC).isoformat(),
    }
    lake.put(f"{prefix}{MANIFEST}", json.dumps(manifest, indent=2).encode())
    return SnapshotRef("clean", raw.day, raw.snapshot_id, manifest)
