from __future__ import annotations

from pathlib import Path

import pytest

from sales_etl.errors import LakeError
from sales_etl.lake import Lake, LocalLake, open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import (
    RawSnapshotWriter,
    iter_raw_pages,
    list_snapshots,
    new_snapshot_id,
)
from sales_etl.source import Page
from tests.utils import DAY


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest) -> Lake:
    config: LakeConfig = request.getfixturevalue(
        "local_lake" if request.param == "local" else "s3_lake"
    )
    store = open_lake(config)
    yield store
    store.close()


def test_put_get_list_exists(lake: Lake) -> None:
    lake.put("a/b/one.bin", b"1")
    lake.put("a/two.bin", b"22")
    lake.put("a/two.bin", b"222")  # overwrite
    assert lake.get("a/two.bin") == b"222"
    assert lake.exists("a/b/one.bin")
    assert not lake.exists("a/missing.bin")
    assert lake.list("a/") == ["a/b/one.bin", "a/two.bin"]
    with pytest.raises(LakeError, match=r"missing\.bin"):
        lake.get("a/missing.bin")


def test_raw_snapshot_round_trip_in_parts(lake: Lake) -> None:
    writer = RawSnapshotWriter(lake, DAY, part_bytes=10)  # one part per page
    bodies = [b'{"data":[1],"next_cursor":"x"}', b'{"data":[2,3],"next_cursor":null}']
    for number, body in enumerate(bodies):
        writer.add(Page(number=number, body=body, records=[None] * (number + 1), next_cursor=None))
    ref = writer.commit(source_state="test")
    assert len(ref.manifest["parts"]) == 2
    assert ref.manifest["records"] == 3
    assert list(iter_raw_pages(lake, ref)) == list(enumerate(bodies))
    (listed,) = list_snapshots(lake, "raw", DAY)
    assert listed.snapshot_id == ref.snapshot_id
    assert listed.manifest["source_state"] == "test"


def test_a_day_of_known_size_ends_in_smaller_parts(tmp_path: Path) -> None:
    """Known the day's size, a part after the first full one also closes at half of what the
    day had left when it began, never below an eighth of a full part; unknown (a delta), every
    part but the last is full; a day smaller than a part stays one part."""
    body = b'{"data":[' + b",".join([b'{"sale_id":"x"}'] * 10) + b'],"next_cursor":null}'

    def part_records(expected: int | None, pages: int = 40) -> list[int]:
        lake = LocalLake(tmp_path / f"{expected}-{pages}")
        writer = RawSnapshotWriter(lake, DAY, part_bytes=16 * len(body), expected_records=expected)
        for number in range(pages):  # 10 records a page; a full part: 16 pages, 160 records
            writer.add(Page(number=number, body=body, records=[{}] * 10, next_cursor=None))
        return list(writer.commit().manifest["part_records"])

    assert part_records(None) == [160, 160, 80]
    # Left when each part began: 400 (full first), 240, 120, 60, 30 (2 pages: the smallest
    # part), 10 (under 2 pages: it runs to the day's end).
    assert part_records(400) == [160, 120, 60, 30, 20, 10]
    assert part_records(None, pages=15) == part_records(150, pages=15) == [150]


def test_uncommitted_snapshot_is_invisible_and_newest_comes_first(lake: Lake) -> None:
    older = RawSnapshotWriter(lake, DAY, snapshot_id="20261101T000000000000Z-aaaa")
    older.add(Page(0, b'{"data":[]}', [], None))
    older.commit()
    newer = RawSnapshotWriter(lake, DAY, snapshot_id="20261102T000000000000Z-bbbb")
    newer.add(Page(0, b'{"data":[]}', [], None))
    newer.commit()
    torn = RawSnapshotWriter(lake, DAY, snapshot_id="20261103T000000000000Z-cccc", part_bytes=1)
    torn.add(Page(0, b'{"data":[]}', [], None))  # a part is written, the manifest never is
    assert [r.snapshot_id for r in list_snapshots(lake, "raw", DAY)] == [
        newer.snapshot_id,
        older.snapshot_id,
    ]


def test_snapshot_ids_sort_by_time() -> None:
    first, second = new_snapshot_id(), new_snapshot_id()
    assert first[:22] <= second[:22]


def test_local_lake_refuses_keys_outside_its_root(tmp_path) -> None:
    with pytest.raises(LakeError, match="escapes"):
        LocalLake(tmp_path / "lake").put("../outside.bin", b"x")


def test_unsupported_url_is_a_clear_error() -> None:
    with pytest.raises(LakeError, match="unsupported data lake URL"):
        open_lake(LakeConfig(url="gs://bucket/x"))


def test_s3_lakes_share_a_client_per_endpoint_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sales_etl.lake import S3Lake

    first = S3Lake(LakeConfig(url="s3://a/x", endpoint_url="http://127.0.0.1:9"))
    same = S3Lake(LakeConfig(url="s3://b/y", endpoint_url="http://127.0.0.1:9"))
    other = S3Lake(LakeConfig(url="s3://a/x", endpoint_url="http://127.0.0.1:10"))
    assert first._client is same._client
    assert first._client is not other._client
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    changed = S3Lake(LakeConfig(url="s3://a/x", endpoint_url="http://127.0.0.1:9"))
    assert changed._client is not first._client
