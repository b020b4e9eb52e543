"""Lake housekeeping: compact a day's replay chain into one snapshot, remove old snapshots.

A day's *replay chain* is its newest full raw snapshot and every incremental one after it
(:func:`sales_etl.snapshots.replay_chain`): what a replay from the lake loads when the source is
down. When the chain is longer than ``keep`` (retention keeps a shorter one whole among the
newest anyway), :func:`compact_day` writes it as one raw snapshot ``<newest id>-c`` (the parts
copied byte for byte, mode ``full``) whose manifest lists each member as a *segment*, and builds
its clean snapshot; loading it loads each segment on its own, in order, under its own id and
mode (:meth:`~sales_etl.snapshots.CleanManifest.loads`): exactly the loads it replaces, so a
replay gives the same tables, and the ledger skips the segments already loaded.

:func:`plan_day` then keeps, per day:

- the newest ``keep`` raw snapshots (``LAKE_KEEP_SNAPSHOTS``);
- the replay chain of the newest one (after compaction: the compacted snapshot alone);
- the snapshot of the ledger's newest load of the day;
- snapshots a running load may still need: committed after the ledger's newest load, or not
  committed yet (no manifest), and written in the last :data:`IN_FLIGHT` (the id carries the
  time it was started);

and removes every other raw snapshot with its clean snapshot (a clean snapshot stays exactly
while its raw one does). :func:`remove` deletes the manifests first, then the data, so a crash
halfway leaves no manifest pointing at missing parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sales_etl.contract import Shape
from sales_etl.errors import LakeError
from sales_etl.lake import Lake
from sales_etl.snapshots import (
    MANIFEST,
    SnapshotRef,
    day_prefix,
    find_snapshot,
    list_snapshots,
    raw_part_records,
    replay_chain,
    snapshot_prefix,
)
from sales_etl.transform import transform_snapshot

IN_FLIGHT = timedelta(hours=6)
COMPACTED_SUFFIX = "-c"
ZONES = ("raw", "clean")
_ID_TIME = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class SnapshotFiles:
    """Every object of one snapshot folder (committed or not) and their bytes."""

    zone: str
    day: date
    snapshot_id: str
    keys: tuple[str, ...]
    bytes: int

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.zone, self.day, self.snapshot_id)

    @property
    def committed(self) -> bool:
        return f"{self.prefix}{MANIFEST}" in self.keys


@dataclass(frozen=True)
class DayPlan:
    """What housekeeping keeps and removes of one day."""

    day: date
    kept: tuple[str, ...]  # raw snapshot ids, newest first
    remove: tuple[SnapshotFiles, ...]

    @property
    def bytes_freed(self) -> int:
        return sum(files.bytes for files in self.remove)

    @property
    def files(self) -> int:
        return sum(len(files.keys) for files in self.remove)


@dataclass(frozen=True)
class DayHousekeeping:
    """What housekeeping did (or, ``dry_run``, would do) to one day of the lake."""

    day: date
    compacted: str | None  # the compacted snapshot written (or that would be)
    kept: tuple[str, ...]  # raw snapshot ids kept, newest first
    removed: tuple[str, ...]  # snapshot folders removed (or that would be)
    files: int
    bytes_freed: int
    dry_run: bool = False

    def as_row(self) -> dict[str, Any]:
        """The day as a row of the ``lake-housekeeping`` table artifact."""
        return {
            "day": self.day.isoformat(),
            "compacted": self.compacted or "",
            "kept": len(self.kept),
            "removed": len(self.removed),
            "files": self.files,
            "bytes freed": self.bytes_freed,
            "removed folders": list(self.removed),
            "dry run": self.dry_run,
        }

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        compacted = f"; compacted into {self.compacted}" if self.compacted else ""
        return (
            f"{self.day}: {verb} {len(self.removed)} snapshot folders ({self.files} files, "
            f"{self.bytes_freed} bytes); kept {len(self.kept)} raw snapshots{compacted}"
        )


def snapshot_time(snapshot_id: str) -> datetime | None:
    """When a snapshot was started, from its id (None for a folder this code did not name)."""
    try:
        return datetime.strptime(snapshot_id[:22], _ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def day_files(sizes: Mapping[str, int]) -> dict[date, list[SnapshotFiles]]:
    """The snapshot folders among ``sizes`` (key -> bytes, as :meth:`Lake.sizes` lists them),
    per day; keys outside ``<zone>/sales/date=D/snapshot=S/`` are left alone."""
    grouped: dict[tuple[str, date, str], dict[str, int]] = {}
    for key, size in sizes.items():
        parts = key.split("/")
        if len(parts) < 5 or parts[0] not in ZONES or parts[1] != "sales":
            continue
        if not (parts[2].startswith("date=") and parts[3].startswith("snapshot=")):
            continue
        try:
            day = date.fromisoformat(parts[2].removeprefix("date="))
        except ValueError:
            continue
        grouped.setdefault((parts[0], day, parts[3].removeprefix("snapshot=")), {})[key] = size
    days: dict[date, list[SnapshotFiles]] = {}
    for (zone, day, snapshot_id), files in sorted(grouped.items()):
        days.setdefault(day, []).append(
            SnapshotFiles(zone, day, snapshot_id, tuple(sorted(files)), sum(files.values()))
        )
    return days


def lake_days(lake: Lake) -> dict[date, list[SnapshotFiles]]:
    """Every day of the lake with its snapshot folders (both zones)."""
    sizes: dict[str, int] = {}
    for zone in ZONES:
        sizes.update(lake.sizes(f"{zone}/sales/"))
    return day_files(sizes)


def kept_snapshots(
    newest_first: list[SnapshotRef],
    uncommitted: Iterable[str],
    keep: int,
    ledger_newest: str | None,
    now: datetime,
) -> tuple[str, ...]:
    """The raw snapshot ids of a day that housekeeping keeps (see the module docstring)."""
    if keep < 1:
        raise ValueError(f"LAKE_KEEP_SNAPSHOTS must be at least 1, not {keep}")
    ids = [ref.snapshot_id for ref in newest_first]
    kept = set(ids[:keep]) | {ref.snapshot_id for ref in replay_chain(newest_first)}
    if ledger_newest is not None and ledger_newest in ids:
        kept.add(ledger_newest)
    waiting = [i for i in ids if ledger_newest is None or i > ledger_newest]
    kept |= {i for i in [*waiting, *uncommitted] if _in_flight(i, now)}
    return tuple(sorted(kept, reverse=True))


def _in_flight(snapshot_id: str, now: datetime) -> bool:
    started = snapshot_time(snapshot_id)
    return started is None or now - started < IN_FLIGHT  # an unknown folder is never removed


def plan_day(
    day: date,
    newest_first: list[SnapshotRef],
    files: list[SnapshotFiles],
    keep: int,
    ledger_newest: str | None,
    now: datetime,
) -> DayPlan:
    """Which snapshot folders of ``day`` to keep and remove (raw and clean alike)."""
    committed = {ref.snapshot_id for ref in newest_first}
    uncommitted = {f.snapshot_id for f in files if f.snapshot_id not in committed}
    kept = kept_snapshots(newest_first, uncommitted, keep, ledger_newest, now)
    remove = tuple(f for f in files if f.snapshot_id not in kept)
    return DayPlan(day, kept, remove)


def remove(lake: Lake, folders: Iterable[SnapshotFiles]) -> None:
    """Delete snapshot folders: every manifest first, then the data."""
    folders = list(folders)
    manifests = [f"{f.prefix}{MANIFEST}" for f in folders if f.committed]
    lake.delete(manifests)
    lake.delete([key for f in folders for key in f.keys if not key.endswith("/" + MANIFEST)])


def compaction_target(newest_first: list[SnapshotRef], keep: int) -> str | None:
    """The id of the snapshot compacting the day's replay chain; None when the chain is no
    longer than ``keep`` (retention keeps it whole among the newest anyway: compacting it would
    only copy the day again) or is one snapshot already."""
    chain = replay_chain(newest_first)
    if len(chain) < 2 or len(chain) <= keep:
        return None
    return chain[-1].snapshot_id + COMPACTED_SUFFIX


def compact_day(
    lake: Lake, day: date, keep: int = 1, now: datetime | None = None
) -> SnapshotRef | None:
    """Write the day's replay chain as one raw snapshot and build its clean snapshot; None when
    there is nothing to compact (a chain of at most ``keep`` snapshots is left as it is)."""
    newest_first = list_snapshots(lake, "raw", day)
    target = compaction_target(newest_first, keep)
    if target is None:
        return None
    chain = replay_chain(newest_first)
    prefix = snapshot_prefix("raw", day, target)
    parts: list[str] = []
    part_records: list[int] = []
    segments: list[dict[str, Any]] = []
    for ref in chain:
        counts = raw_part_records(lake, ref)
        for segment in _segments(ref, counts):
            segments.append({**segment, "first_part": len(parts) + segment["first_part"]})
        for key in ref.manifest["parts"]:
            parts.append(f"{prefix}part-{len(parts):05d}.parquet")
            lake.put(parts[-1], lake.get(key))
        part_records.extend(counts)
    manifest = _compacted_manifest(chain, target, parts, part_records, segments, now)
    lake.put(f"{prefix}{MANIFEST}", json.dumps(manifest, indent=2).encode())
    compacted = SnapshotRef("raw", day, target, manifest)
    transform_snapshot(lake, compacted)
    if find_snapshot(lake, "clean", day, target) is None:
        raise LakeError(f"the clean snapshot of compacted {target} of {day} was not written")
    return compacted


def _segments(ref: SnapshotRef, counts: list[int]) -> list[dict[str, Any]]:
    """The loads snapshot ``ref`` stands for (its own segments when it is compacted), with parts
    numbered from its first part."""
    own = ref.manifest.get("segments")
    if own:
        return [dict(segment) for segment in own]
    return [
        {
            "snapshot_id": ref.snapshot_id,
            "mode": str(ref.manifest.get("mode", "full")),
            "updated_since": ref.manifest.get("updated_since"),
            "first_part": 0,
            "parts": len(counts),
            "records": sum(counts),
        }
    ]


def _compacted_manifest(
    chain: list[SnapshotRef],
    snapshot_id: str,
    parts: list[str],
    part_records: list[int],
    segments: list[dict[str, Any]],
    now: datetime | None,
) -> dict[str, Any]:
    newest = chain[-1]
    manifest: dict[str, Any] = {
        "zone": "raw",
        "day": newest.day.isoformat(),
        "snapshot_id": snapshot_id,
        "parts": parts,
        "part_records": part_records,
        "pages": sum(int(ref.manifest.get("pages", 0)) for ref in chain),
        "records": sum(part_records),
        "committed_at": (now or datetime.now(UTC)).isoformat(),
        "mode": "full",
        "updated_since": None,
        "source_state": newest.manifest.get("source_state"),
        "source_record_count": newest.manifest.get("source_record_count"),
        "requests": sum(int(ref.manifest.get("requests", 0)) for ref in chain),
        "retries": sum(int(ref.manifest.get("retries", 0)) for ref in chain),
        "compacted_from": [ref.snapshot_id for ref in chain],
        "segments": segments,
    }
    shape = _merged_shape(chain)
    if shape is not None:
        manifest["shape"] = shape.as_manifest()
    return manifest


def _merged_shape(chain: list[SnapshotRef]) -> Shape | None:
    """The shape of every record of the chain (None when a member predates shapes)."""
    shapes = [Shape.from_manifest(ref.manifest) for ref in chain]
    if any(shape is None for shape in shapes):
        return None
    fields: dict[str, dict[str, int]] = {}
    for shape in shapes:
        assert shape is not None
        for name, types in shape.fields.items():
            for kind, count in types.items():
                fields.setdefault(name, {})[kind] = fields.get(name, {}).get(kind, 0) + count
    return Shape(sum(s.records for s in shapes if s is not None), fields)


def tidy_day(
    lake: Lake,
    day: date,
    keep: int,
    ledger_newest: str | None,
    *,
    files: list[SnapshotFiles] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> DayHousekeeping:
    """Compact ``day``'s replay chain, then remove what :func:`plan_day` does not keep.

    ``files``: the day's snapshot folders when already listed (the whole-lake pass lists them
    once). A dry run writes and removes nothing, and plans as if the compaction were done.
    """
    now = now or datetime.now(UTC)
    newest_first = list_snapshots(lake, "raw", day)
    compacted = compaction_target(newest_first, keep)
    if compacted is not None and not dry_run:
        compact_day(lake, day, keep, now)
        files = None  # the compaction added folders
    if compacted is not None:
        virtual = SnapshotRef("raw", day, compacted, {"mode": "full"})
        newest_first = sorted(
            {ref.snapshot_id: ref for ref in [*newest_first, virtual]}.values(),
            key=lambda ref: ref.snapshot_id,
            reverse=True,
        )
    if files is None:
        files = day_files(
            {k: v for zone in ZONES for k, v in lake.sizes(day_prefix(zone, day)).items()}
        ).get(day, [])
    plan = plan_day(day, newest_first, files, keep, ledger_newest, now)
    if not dry_run:
        remove(lake, plan.remove)
    return DayHousekeeping(
        day=day,
        compacted=compacted,
        kept=plan.kept,
        removed=tuple(f.prefix for f in plan.remove),
        files=plan.files,
        bytes_freed=plan.bytes_freed,
        dry_run=dry_run,
    )
