"""Snapshots of a day in the lake: raw pages as received, and the validated (clean) result.

Layout (every zone partitioned by business date)::

    raw/sales/date=2026-11-23/snapshot=20261124T010203123456Z-1a2b3c4d/part-00000.parquet
    raw/sales/date=2026-11-23/snapshot=.../_manifest.json        <- written last: the commit
    clean/sales/date=2026-11-23/snapshot=.../sales-00000.parquet
    clean/sales/date=2026-11-23/snapshot=.../rejected-00000.parquet
    clean/sales/date=2026-11-23/snapshot=.../_manifest.json

A snapshot exists only once its manifest does, so a run killed halfway leaves nothing a reader
would pick up. Raw parts keep each page's body byte for byte: the raw zone is the replayable
source of truth, and the fallback when the API is down.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.source import Page

MANIFEST = "_manifest.json"
RAW_SCHEMA = pa.schema(
    [
        ("page", pa.int32()),
        ("record_count", pa.int32()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("body", pa.large_binary()),
    ]
)


@dataclass(frozen=True)
class SnapshotRef:
    """A committed snapshot of one day in one zone, with its manifest."""

    zone: str
    day: date
    snapshot_id: str
    manifest: dict[str, Any]

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.zone, self.day, self.snapshot_id)


def day_prefix(zone: str, day: date) -> str:
    return f"{zone}/sales/date={day.isoformat()}/"


def snapshot_prefix(zone: str, day: date, snapshot_id: str) -> str:
    return f"{day_prefix(zone, day)}snapshot={snapshot_id}/"


def new_snapshot_id(now: datetime | None = None) -> str:
    """Sortable by time, unique across concurrent writers."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def write_parquet(lake: Lake, key: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    lake.put(key, buffer.getvalue())


def read_parquet(lake: Lake, key: str) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(lake.get(key)))
    except pa.ArrowInvalid as exc:
        raise LakeError(f"{lake.uri(key)} is not a readable Parquet file: {exc}") from None


class RawSnapshotWriter:
    """Streams pages into Parquet parts of bounded size; :meth:`commit` publishes the snapshot."""

    def __init__(
        self, lake: Lake, day: date, snapshot_id: str | None = None, part_bytes: int = 32 << 20
    ) -> None:
        self.lake = lake
        self.day = day
        self.snapshot_id = snapshot_id or new_snapshot_id()
        self.part_bytes = part_bytes
        self.parts: list[str] = []
        self.pages = 0
        self.records = 0
        self._buffer: list[tuple[int, int, datetime, bytes]] = []
        self._buffered_bytes = 0

    @property
    def prefix(self) -> str:
        return snapshot_prefix("raw", self.day, self.snapshot_id)

    def add(self, page: Page) -> None:
        self._buffer.append((page.number, len(page.records), datetime.now(UTC), page.body))
        self._buffered_bytes += len(page.body)
        self.pages += 1
        self.records += len(page.records)
        if self._buffered_bytes >= self.part_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        columns = list(zip(*self._buffer, strict=True))
        table = pa.Table.from_arrays([pa.array(c) for c in columns], schema=RAW_SCHEMA)
        key = f"{self.prefix}part-{len(self.parts):05d}.parquet"
        write_parquet(self.lake, key, table)
        self.parts.append(key)
        self._buffer.clear()
        self._buffered_bytes = 0

    def commit(self, **meta: Any) -> SnapshotRef:
        self._flush()
        manifest = {
            "zone": "raw",
            "day": self.day.isoformat(),
            "snapshot_id": self.snapshot_id,
            "parts": self.parts,
            "pages": self.pages,
            "records": self.records,
            "committed_at": datetime.now(UTC).isoformat(),
            **meta,
        }
        self.lake.put(f"{self.prefix}{MANIFEST}", json.dumps(manifest, indent=2).encode())
        return SnapshotRef("raw", self.day, self.snapshot_id, manifest)


def list_snapshots(lake: Lake, zone: str, day: date) -> list[SnapshotRef]:
    """Committed snapshots of ``day`` in ``zone``, newest first."""
    refs = []
    for key in lake.list(day_prefix(zone, day)):
        if not key.endswith("/" + MANIFEST):
            continue
        snapshot_id = key.rsplit("/", 2)[-2].removeprefix("snapshot=")
        refs.append(SnapshotRef(zone, day, snapshot_id, load_manifest(lake, key)))
    return sorted(refs, key=lambda r: r.snapshot_id, reverse=True)


def find_snapshot(lake: Lake, zone: str, day: date, snapshot_id: str) -> SnapshotRef | None:
    key = f"{snapshot_prefix(zone, day, snapshot_id)}{MANIFEST}"
    if not lake.exists(key):
        return None
    return SnapshotRef(zone, day, snapshot_id, load_manifest(lake, key))


def load_manifest(lake: Lake, key: str) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(lake.get(key))
    except ValueError as exc:
        raise LakeError(f"{lake.uri(key)} is not a valid manifest: {exc}") from None
    return manifest


def iter_raw_pages(lake: Lake, ref: SnapshotRef) -> Iterator[tuple[int, bytes]]:
    """(page number, body) of a raw snapshot, in order, one part in memory at a time."""
    for key in ref.manifest["parts"]:
        table = read_parquet(lake, key)
        pages = table.column("page").to_pylist()
        bodies = table.column("body")
        for i, number in enumerate(pages):
            yield number, bodies[i].as_py()
        del table, bodies


def iter_tables(lake: Lake, keys: list[str]) -> Iterator[pa.Table]:
    for key in keys:
        yield read_parquet(lake, key)
