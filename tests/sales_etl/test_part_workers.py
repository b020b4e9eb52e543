"""The part workers: Prefect-free processes that write a part exactly as the flow's process does."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path

import pytest

from devharness.raw_days import write_realistic_day
from sales_etl import part_workers
from sales_etl.lake import LocalLake
from sales_etl.settings import LakeConfig
from sales_etl.transform import plan_parts, transform_part

DAY = date(2026, 11, 23)


def lake_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture
def shared_pool() -> Iterator[None]:
    part_workers.close_shared_part_workers()
    yield
    part_workers.close_shared_part_workers()


def test_a_part_transformed_by_a_worker_is_the_part_transformed_here(
    tmp_path: Path, shared_pool: None
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    raw = write_realistic_day(LocalLake(here), DAY, 3_000, page_size=500, part_bytes=400_000)
    shutil.copytree(here, there)
    parts = plan_parts(LocalLake(here), raw)
    assert len(parts) > 1
    workers = part_workers.shared_part_workers(2)
    assert part_workers.shared_part_workers(2) is workers  # one pool per process and size
    for part in parts:
        expected = transform_part(LocalLake(here), part)
        assert workers.transform(LakeConfig(url=str(there)), part, 50_000) == expected
    assert lake_bytes(there) == lake_bytes(here)


def test_a_dead_worker_breaks_its_pool_and_the_next_call_gets_a_new_one(
    tmp_path: Path, shared_pool: None
) -> None:
    raw = write_realistic_day(LocalLake(tmp_path), DAY, 1_000, page_size=500)
    part = plan_parts(LocalLake(tmp_path), raw)[0]
    lake = LakeConfig(url=str(tmp_path))
    workers = part_workers.shared_part_workers(1)
    workers.transform(lake, part, 50_000)
    (pid,) = workers._pool._processes  # the one worker, started and warm
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        workers.transform(lake, part, 50_000)
    again = part_workers.shared_part_workers(1)
    assert again is not workers
    assert again.transform(lake, part, 50_000).records == part.records
