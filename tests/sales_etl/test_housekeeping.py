"""Lake housekeeping without Prefect: deletion on both lakes, compaction, the retention plan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from devharness.demo_api import generate_record
from sales_etl.housekeeping import (
    IN_FLIGHT,
    compact_day,
    kept_snapshots,
    lake_days,
    tidy_day,
)
from sales_etl.lake import Lake, LocalLake, open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import (
    CleanManifest,
    RawSnapshotWriter,
    SnapshotRef,
    find_snapshot,
    iter_tables,
    list_snapshots,
)
from sales_etl.source import Page
from sales_etl.transform import transform_snapshot
from tests.utils import DAY

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest) -> Iterator[Lake]:
    config: LakeConfig = request.getfixturevalue(
        "local_lake" if request.param == "local" else "s3_lake"
    )
    store = open_lake(config)
    yield store
    store.close()


def snapshot_id(hours_before_now: float, tag: str) -> str:
    return f"{NOW - timedelta(hours=hours_before_now):%Y%m%dT%H%M%S%fZ}-{tag}"


def land(
    lake: Lake, snapshot: str, first: int, count: int, mode: str = "full", version: int = 1
) -> SnapshotRef:
    """A raw snapshot of demo records ``first``.. (two pages, one part each) and its clean one."""
    writer = RawSnapshotWriter(lake, DAY, snapshot_id=snapshot, part_bytes=1)
    records = [generate_record(DAY.isoformat(), i, version) for i in range(first, first + count)]
    half = count // 2
    for number, page in enumerate((records[:half], records[half:])):
        body = json.dumps({"data": page, "next_cursor": None}).encode()
        writer.add(Page(number, body, page, None))
    ref = writer.commit(mode=mode)
    transform_snapshot(lake, ref)
    return ref


def raw_ids(lake: Lake) -> list[str]:
    return [ref.snapshot_id for ref in list_snapshots(lake, "raw", DAY)]


def clean_ids(lake: Lake) -> list[str]:
    return [ref.snapshot_id for ref in list_snapshots(lake, "clean", DAY)]


def test_sizes_and_delete(lake: Lake) -> None:
    lake.put("a/b/one.bin", b"1")
    lake.put("a/two.bin", b"22")
    lake.put("c/three.bin", b"333")
    assert lake.sizes("a/") == {"a/b/one.bin": 1, "a/two.bin": 2}
    lake.delete(["a/b/one.bin", "a/two.bin", "a/never-written.bin"])
    assert lake.sizes("a/") == {}
    assert lake.list("") == ["c/three.bin"]
    lake.delete([])
    if isinstance(lake, LocalLake):
        assert not (lake.root / "a").exists()  # emptied folders go too


def test_the_plan_keeps_the_newest_the_replay_chain_the_ledger_and_what_is_in_flight() -> None:
    full = SnapshotRef("raw", DAY, snapshot_id(30, "f"), {"mode": "full"})
    older = [SnapshotRef("raw", DAY, snapshot_id(40 + h, "o"), {"mode": "full"}) for h in (0, 1)]
    incs = [SnapshotRef("raw", DAY, snapshot_id(h, "i"), {"mode": "incremental"}) for h in (20, 10)]
    newest_first = [*reversed(incs), full, *older]
    ledger = older[1].snapshot_id  # e.g. the newer loads failed
    abandoned, running = snapshot_id(7, "x"), snapshot_id(1, "y")
    kept = kept_snapshots(newest_first, [abandoned, running], 1, ledger, NOW)
    # newest 1 (incs[1]); its chain (full, incs); the ledger's; the uncommitted one in flight.
    # Committed after the ledger's newest load but older than IN_FLIGHT: not kept for that.
    expected = [incs[1], incs[0], full, older[1]]
    assert set(kept) == {ref.snapshot_id for ref in expected} | {running}
    # A snapshot committed after the ledger's newest load and in flight is kept.
    fresh = SnapshotRef("raw", DAY, snapshot_id(IN_FLIGHT.total_seconds() / 3600 - 1, "n"), {})
    assert fresh.snapshot_id in kept_snapshots([fresh, *newest_first], [], 1, ledger, NOW)
    with pytest.raises(ValueError, match="at least 1"):
        kept_snapshots(newest_first, [], 0, ledger, NOW)


def test_four_full_snapshots_keep_two_and_the_dry_run_removes_nothing(lake: Lake) -> None:
    refs = [land(lake, snapshot_id(10 - h, f"r{h}"), 0, 20) for h in range(4)]
    before = dict(lake.sizes(""))
    old = {refs[0].snapshot_id, refs[1].snapshot_id}
    gone = {k: n for k, n in before.items() if k.split("/")[3].removeprefix("snapshot=") in old}
    removed_bytes = sum(gone.values())
    dry = tidy_day(lake, DAY, 2, refs[3].snapshot_id, dry_run=True, now=NOW)
    assert lake.sizes("") == before
    assert (dry.compacted, dry.bytes_freed, dry.files) == (None, removed_bytes, len(gone))
    assert len(dry.removed) == 4  # two raw and two clean folders
    assert dry.kept == (refs[3].snapshot_id, refs[2].snapshot_id)
    done = tidy_day(lake, DAY, 2, refs[3].snapshot_id, now=NOW)
    assert (done.bytes_freed, done.removed) == (dry.bytes_freed, dry.removed)
    assert raw_ids(lake) == clean_ids(lake) == [refs[3].snapshot_id, refs[2].snapshot_id]
    assert sorted(lake_days(lake)) == [DAY]
    assert sum(lake.sizes("").values()) == sum(before.values()) - removed_bytes


def test_the_ledgers_newest_snapshot_is_never_removed(lake: Lake) -> None:
    refs = [land(lake, snapshot_id(10 - h, f"r{h}"), 0, 20) for h in range(3)]
    done = tidy_day(lake, DAY, 1, refs[0].snapshot_id, now=NOW)
    assert raw_ids(lake) == [refs[2].snapshot_id, refs[0].snapshot_id]
    assert done.removed == (
        f"clean/sales/date={DAY}/snapshot={refs[1].snapshot_id}/",
        f"raw/sales/date={DAY}/snapshot={refs[1].snapshot_id}/",
    )


def test_compaction_keeps_every_load_of_the_chain_as_a_segment(lake: Lake) -> None:
    full = land(lake, snapshot_id(9, "f"), 0, 20)
    inc1 = land(lake, snapshot_id(8, "a"), 10, 6, mode="incremental", version=2)
    assert compact_day(lake, DAY, 2, NOW) is None  # a chain retention keeps whole anyway
    compacted = compact_day(lake, DAY, 1, NOW)
    assert compacted is not None and compacted.snapshot_id == inc1.snapshot_id + "-c"
    inc2 = land(lake, snapshot_id(7, "b"), 30, 4, mode="incremental")
    again = compact_day(lake, DAY, 1, NOW)  # a compacted snapshot's segments carry over
    assert again is not None and again.snapshot_id == inc2.snapshot_id + "-c"
    assert compact_day(lake, DAY, 1, NOW) is None  # one full snapshot now: nothing to compact
    assert again.manifest["mode"] == "full"
    assert again.manifest["records"] == 30
    clean_ref = find_snapshot(lake, "clean", DAY, again.snapshot_id)
    assert clean_ref is not None
    loads = CleanManifest.from_ref(clean_ref).loads("full")
    members = [full, inc1, inc2]
    assert [(c.snapshot_id, mode) for c, mode in loads] == [
        (full.snapshot_id, "full"),
        (inc1.snapshot_id, "incremental"),
        (inc2.snapshot_id, "incremental"),
    ]
    for (segment, _), member in zip(loads, members, strict=True):
        original = find_snapshot(lake, "clean", DAY, member.snapshot_id)
        assert original is not None
        assert segment.records == member.manifest["records"]
        assert rows(lake, list(segment.sales_parts)) == rows(
            lake, list(original.manifest["sales_parts"])
        )


def rows(lake: Lake, keys: list[str]) -> list[dict[str, object]]:
    """Clean rows without their position in the snapshot's record stream."""
    table = pa.concat_tables(iter_tables(lake, keys))
    table = table.drop_columns(["record_index"]).sort_by("sale_id")
    assert pc.count(table.column("sale_id")).as_py() == table.num_rows
    return table.to_pylist()
