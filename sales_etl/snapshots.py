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
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sales_etl.contract import ShapeCounter
from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.schema import DICTIONARY_COLUMNS
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
    pq.write_table(table, buffer, compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS))
    lake.put(key, buffer.getvalue())


def read_parquet(lake: Lake, key: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(lake.get(key)), columns=columns)
    except pa.ArrowInvalid as exc:
        raise LakeError(f"{lake.uri(key)} is not a readable Parquet file: {exc}") from None


# Page bytes per raw part: the unit of the transform's parallelism (~130k records of the demo).
RAW_PART_BYTES = 32 << 20
# The smallest tapered part (RawSnapshotWriter.expected_records), as a share of a full one.
TAPERED_PART_SHARE = 8


class _RawPart:
    """One raw part being written: a Parquet file in memory, a row group per page."""

    def __init__(self) -> None:
        self._sink = io.BytesIO()
        # No statistics of a page's body: its min and max cost a third of the write, unused.
        self._writer = pq.ParquetWriter(
            self._sink,
            RAW_SCHEMA,
            compression="zstd",
            use_dictionary=False,
            write_statistics=[f.name for f in RAW_SCHEMA if f.name != "body"],
        )
        self.body_bytes = 0
        self.records = 0

    def add(self, number: int, records: int, fetched_at: datetime, body: bytes) -> None:
        row = [
            pa.array([v], type=f.type)
            for v, f in zip((number, records, fetched_at, body), RAW_SCHEMA, strict=True)
        ]
        self._writer.write_table(pa.Table.from_arrays(row, schema=RAW_SCHEMA))
        self.body_bytes += len(body)
        self.records += records

    def close(self) -> bytes:
        self._writer.close()
        return self._sink.getvalue()


class RawSnapshotWriter:
    """Streams pages into Parquet parts of bounded size; :meth:`commit` publishes the snapshot.

    Each page is compressed into its part as it arrives (one row group per page), so memory
    holds the part's compressed bytes and one page, not ``part_bytes`` of pages.

    When the day's size is known (``expected_records``) and it already filled a part, the
    parts taper off at its end: a part also closes once it holds half of the records the day
    had left when it began (and at least 1/:data:`TAPERED_PART_SHARE` of ``part_bytes``). The
    part workers transform each part as it lands, so the last parts are transformed while the
    extract ends, in a fraction of a full part's time, by both workers; a full last part kept
    one of them busy for a second after the extract, the other idle. A day smaller than a part
    stays one part (transformed in the flow's process, no workers to start).
    """

    def __init__(
        self,
        lake: Lake,
        day: date,
        snapshot_id: str | None = None,
        part_bytes: int | None = None,
        expected_records: int | None = None,
    ) -> None:
        self.lake = lake
        self.day = day
        self.snapshot_id = snapshot_id or new_snapshot_id()
        self.part_bytes = part_bytes or RAW_PART_BYTES
        self.expected_records = expected_records
        self.parts: list[str] = []
        self.part_records: list[int] = []
        self.pages = 0
        self.records = 0
        self._part: _RawPart | None = None
        self._shape = ShapeCounter()  # the shape of what the source sent (sales_etl.contract)

    @property
    def prefix(self) -> str:
        return snapshot_prefix("raw", self.day, self.snapshot_id)

    def add(self, page: Page) -> None:
        if self._part is None:
            self._part = _RawPart()
        # A reader decompresses one page at a time (iter_part_pages).
        self._part.add(page.number, len(page.records), datetime.now(UTC), page.body)
        self.pages += 1
        self.records += len(page.records)
        self._shape.add(page.records)
        if self._part.body_bytes >= self.part_bytes or self._tapered(self._part):
            self._flush()

    def _tapered(self, part: _RawPart) -> bool:
        """Whether ``part`` closes early as the day ends (the class's docstring)."""
        if self.expected_records is None or not self.parts:
            return False
        left = self.expected_records - (self.records - part.records)  # when the part began
        return 2 * part.records >= left and TAPERED_PART_SHARE * part.body_bytes >= self.part_bytes

    def _flush(self) -> None:
        if self._part is None:
            return
        key = f"{self.prefix}part-{len(self.parts):05d}.parquet"
        self.lake.put(key, self._part.close())
        self.parts.append(key)
        self.part_records.append(self._part.records)
        self._part = None

    def commit(self, **meta: Any) -> SnapshotRef:
        self._flush()
        manifest = {
            "zone": "raw",
            "day": self.day.isoformat(),
            "snapshot_id": self.snapshot_id,
            "parts": self.parts,
            # Records per part: a parallel transform numbers each part's records from these.
            "part_records": self.part_records,
            "pages": self.pages,
            "records": self.records,
            "committed_at": datetime.now(UTC).isoformat(),
            "shape": self._shape.shape().as_manifest(),
            **meta,
        }
        self.lake.put(f"{self.prefix}{MANIFEST}", json.dumps(manifest, indent=2).encode())
        return SnapshotRef("raw", self.day, self.snapshot_id, manifest)


@dataclass(frozen=True)
class RawManifest:
    """The manifest of a committed raw snapshot, typed (``_manifest.json`` holds the same).

    What the extract returns and the flow passes on: the transform and the replay read the
    snapshot through :meth:`ref` without looking its manifest up again.
    """

    day: date
    snapshot_id: str
    parts: tuple[str, ...]
    pages: int
    records: int
    mode: str = "full"  # full: the whole day | incremental: the records since updated_since
    updated_since: str | None = None
    committed_at: str = ""
    part_records: tuple[int, ...] | None = None  # absent from manifests written before it
    source_state: str | None = None
    source_record_count: int | None = None
    requests: int = 0
    retries: int = 0
    manifest: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_ref(cls, ref: SnapshotRef) -> RawManifest:
        m = ref.manifest
        counts = m.get("part_records")
        return cls(
            day=ref.day,
            snapshot_id=ref.snapshot_id,
            parts=tuple(m["parts"]),
            pages=int(m.get("pages", 0)),
            records=int(m["records"]),
            mode=str(m.get("mode", "full")),
            updated_since=m.get("updated_since"),
            committed_at=str(m.get("committed_at", "")),
            part_records=None if counts is None else tuple(int(c) for c in counts),
            source_state=m.get("source_state"),
            source_record_count=m.get("source_record_count"),
            requests=int(m.get("requests", 0)),
            retries=int(m.get("retries", 0)),
            manifest=dict(m),
        )

    def ref(self) -> SnapshotRef:
        """The snapshot, as the lake's readers take it (no lookup: the manifest is here)."""
        return SnapshotRef("raw", self.day, self.snapshot_id, dict(self.manifest))


def raw_part_records(lake: Lake, ref: SnapshotRef) -> list[int]:
    """The number of records in each part of raw snapshot ``ref``, in part order.

    Manifests written before ``part_records`` existed are answered from the parts' own
    ``record_count`` column (one read of each part).
    """
    counts = ref.manifest.get("part_records")
    if counts is not None:
        return [int(c) for c in counts]
    return [
        int(pc.sum(read_parquet(lake, key, ["record_count"]).column(0)).as_py() or 0)
        for key in ref.manifest["parts"]
    ]


@dataclass(frozen=True)
class CleanParts:
    """What one :class:`CleanSnapshotWriter` wrote: its Parquet parts and their counts.

    A parallel transform gets one per raw part; :meth:`CleanSnapshotWriter.commit` adds them up.
    """

    sales_parts: tuple[str, ...] = ()
    rejected_parts: tuple[str, ...] = ()
    records: int = 0
    clean: int = 0
    rejected: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    clean_amount_total: Decimal = Decimal(0)

    def __add__(self, other: CleanParts) -> CleanParts:
        return CleanParts(
            sales_parts=self.sales_parts + other.sales_parts,
            rejected_parts=self.rejected_parts + other.rejected_parts,
            records=self.records + other.records,
            clean=self.clean + other.clean,
            rejected=self.rejected + other.rejected,
            by_reason=dict(Counter(self.by_reason) + Counter(other.by_reason)),
            clean_amount_total=self.clean_amount_total + other.clean_amount_total,
        )

    def manifest_fields(self) -> dict[str, Any]:
        """The parts and counts as a clean manifest (or one of its segments) records them."""
        return {
            "sales_parts": list(self.sales_parts),
            "rejected_parts": list(self.rejected_parts),
            "records": self.records,
            "clean": self.clean,
            "rejected": self.rejected,
            "by_reason": dict(sorted(self.by_reason.items())),
            "clean_amount_total": str(self.clean_amount_total),
        }


@dataclass(frozen=True)
class Segment:
    """One snapshot inside a compacted one (:mod:`sales_etl.housekeeping`): loaded on its own,
    in order, under its own id and mode, as it was loaded before it was compacted."""

    snapshot_id: str
    mode: str
    clean: CleanManifest


@dataclass(frozen=True)
class CleanManifest:
    """The manifest of a committed clean snapshot, typed (``_manifest.json`` holds the same).

    A compacted snapshot lists its ``segments``: the loads that replay it (see :meth:`loads`).
    """

    day: date
    snapshot_id: str
    transform_version: int
    sales_parts: tuple[str, ...]
    rejected_parts: tuple[str, ...]
    records: int
    clean: int
    rejected: int
    by_reason: Mapping[str, int]
    clean_amount_total: str
    committed_at: str
    segments: tuple[Segment, ...] = ()

    @classmethod
    def from_ref(cls, ref: SnapshotRef) -> CleanManifest:
        m = ref.manifest
        segments = tuple(
            Segment(
                str(seg["snapshot_id"]),
                str(seg["mode"]),
                cls.from_ref(SnapshotRef(ref.zone, ref.day, str(seg["snapshot_id"]), seg)),
            )
            for seg in m.get("segments", ())
        )
        return cls(
            day=ref.day,
            snapshot_id=ref.snapshot_id,
            transform_version=int(m.get("transform_version", 0)),
            sales_parts=tuple(m["sales_parts"]),
            rejected_parts=tuple(m["rejected_parts"]),
            records=int(m["records"]),
            clean=int(m["clean"]),
            rejected=int(m["rejected"]),
            by_reason=dict(m["by_reason"]),
            clean_amount_total=str(m["clean_amount_total"]),
            committed_at=str(m.get("committed_at", "")),
            segments=segments,
        )

    def loads(self, mode: str) -> list[tuple[CleanManifest, str]]:
        """What loading this snapshot (extracted in ``mode``) takes: itself, or for a compacted
        one each segment under its own id and mode, oldest first (so a replay repeats the
        loads it replaces, and the ledger skips those already loaded)."""
        if not self.segments:
            return [(self, mode)]
        return [(segment.clean, segment.mode) for segment in self.segments]


class CleanSnapshotWriter:
    """Writes validated chunks as Parquet parts; :meth:`commit` publishes the clean snapshot.

    The clean counterpart of :class:`RawSnapshotWriter`. Part names carry ``name`` (e.g. the
    raw part number), so writers working on different raw parts of one snapshot at the same time
    never collide, and a retried writer overwrites exactly its own earlier parts.
    """

    def __init__(self, lake: Lake, day: date, snapshot_id: str, name: str = "") -> None:
        self.lake = lake
        self.day = day
        self.snapshot_id = snapshot_id
        self.name = name
        self._written = CleanParts()
        self._chunks = 0

    @property
    def prefix(self) -> str:
        return snapshot_prefix("clean", self.day, self.snapshot_id)

    def add(self, records: int, sales: pa.Table, rejected: pa.Table) -> None:
        """Write one validated chunk of ``records`` records: its clean rows and its rejects."""
        number = f"{self.name}{self._chunks:05d}"
        self._chunks += 1
        sales_parts: tuple[str, ...] = ()
        rejected_parts: tuple[str, ...] = ()
        amount = Decimal(0)
        if sales.num_rows:
            key = f"{self.prefix}sales-{number}.parquet"
            write_parquet(self.lake, key, sales)
            sales_parts = (key,)
            amount = pc.sum(sales.column("amount")).as_py() or Decimal(0)
        if rejected.num_rows:
            key = f"{self.prefix}rejected-{number}.parquet"
            write_parquet(self.lake, key, rejected)
            rejected_parts = (key,)
        reasons = Counter(rejected.column("reason").to_pylist())
        self._written += CleanParts(
            sales_parts=sales_parts,
            rejected_parts=rejected_parts,
            records=records,
            clean=sales.num_rows,
            rejected=rejected.num_rows,
            by_reason=dict(reasons),
            clean_amount_total=amount,
        )

    @property
    def written(self) -> CleanParts:
        return self._written

    def commit(self, *others: CleanParts, **meta: Any) -> SnapshotRef:
        """Publish the manifest of everything this writer and ``others`` wrote (in that order)."""
        total = self._written
        for other in others:
            total += other
        manifest = {
            "zone": "clean",
            "day": self.day.isoformat(),
            "snapshot_id": self.snapshot_id,
            **meta,
            **total.manifest_fields(),
            "committed_at": datetime.now(UTC).isoformat(),
        }
        self.lake.put(f"{self.prefix}{MANIFEST}", json.dumps(manifest, indent=2).encode())
        return SnapshotRef("clean", self.day, self.snapshot_id, manifest)


def list_snapshots(lake: Lake, zone: str, day: date) -> list[SnapshotRef]:
    """Committed snapshots of ``day`` in ``zone``, newest first."""
    refs = []
    for key in lake.list(day_prefix(zone, day)):
        if not key.endswith("/" + MANIFEST):
            continue
        snapshot_id = key.rsplit("/", 2)[-2].removeprefix("snapshot=")
        refs.append(SnapshotRef(zone, day, snapshot_id, load_manifest(lake, key)))
    return sorted(refs, key=lambda r: r.snapshot_id, reverse=True)


def replay_chain(newest_first: list[SnapshotRef]) -> list[SnapshotRef]:
    """The snapshots a replay of the day loads, oldest first: the newest full snapshot and every
    incremental one after it (all of them when there is no full one)."""
    chain: list[SnapshotRef] = []
    for ref in newest_first:
        chain.append(ref)
        if ref.manifest.get("mode", "full") == "full":
            break
    return chain[::-1]


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
        yield from iter_part_pages(lake, key)


def iter_part_pages(lake: Lake, key: str) -> Iterator[tuple[int, bytes]]:
    """(page number, body) of one raw part, in order, one row group decompressed at a time.

    Parts are written with one page per row group; reading a part as one table would hold all
    its bodies (~32 MB) plus the decompression buffers at once (peak RSS of a transform process
    ~450 MB -> ~300 MB, benchmarks/RESULTS.md). Older parts (one row group) still read whole.
    """
    try:
        part = pq.ParquetFile(io.BytesIO(lake.get(key)))
        for group in range(part.num_row_groups):
            pages = part.read_row_group(group, columns=["page", "body"])
            yield from zip(pages.column(0).to_pylist(), pages.column(1).to_pylist(), strict=True)
            del pages
    except pa.ArrowInvalid as exc:
        raise LakeError(f"{lake.uri(key)} is not a readable Parquet file: {exc}") from None


@dataclass(frozen=True)
class LakeTables:
    """The rows of the Parquet parts ``keys``, in order, as tables of at most ``batch_rows``;
    each ``iter()`` reads them again from the start (a load reads its sales twice).

    Decoded batch by batch: memory holds one part's compressed bytes and one batch, not a
    decoded part (a part of 45,000 sales decoded whole cost the load ~100 MB of peak RSS).
    """

    lake: Lake
    keys: tuple[str, ...]
    batch_rows: int = 16_384
    columns: tuple[str, ...] | None = None  # None: every column

    def select(self, columns: Iterable[str]) -> LakeTables:
        """The same parts, read with ``columns`` only (the others are not decoded)."""
        return replace(self, columns=tuple(columns))

    def __iter__(self) -> Iterator[pa.Table]:
        columns = list(self.columns) if self.columns is not None else None
        for key in self.keys:
            try:
                parquet = pq.ParquetFile(pa.BufferReader(self.lake.get(key)))
                for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=columns):
                    yield pa.Table.from_batches([batch])
            except pa.ArrowInvalid as exc:
                raise LakeError(
                    f"{self.lake.uri(key)} is not a readable Parquet file: {exc}"
                ) from None


def iter_tables(lake: Lake, keys: Iterable[str], batch_rows: int = 16_384) -> LakeTables:
    """:class:`LakeTables` of ``keys``: iterate it (again) to read their rows in batches."""
    return LakeTables(lake, tuple(keys), batch_rows)
