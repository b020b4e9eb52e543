"""The part workers: Prefect-free processes that write a part exactly as the flow's process does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path

import pytest

from devharness.raw_days import write_realistic_day
from sales_etl import part_workers
from sales_etl.lake import LocalLake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import SnapshotRef
from sales_etl.transform import RawPart, plan_parts, transform_part
from tests.utils import REPO

DAY = date(2026, 11, 23)


def lake_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture
def shared_pool() -> Iterator[None]:
    part_workers.close_shared_part_workers()
    yield
    part_workers.close_shared_part_workers()


def two_copies(tmp_path: Path) -> tuple[Path, Path, SnapshotRef, list[RawPart]]:
    """A realistic raw day of several parts in ``here`` and a copy of it in ``there``."""
    here, there = tmp_path / "here", tmp_path / "there"
    raw = write_realistic_day(LocalLake(here), DAY, 3_000, page_size=500, part_bytes=250_000)
    shutil.copytree(here, there)
    parts = plan_parts(LocalLake(here), raw)
    assert len(parts) > 2
    return here, there, raw, parts


def test_a_part_transformed_by_a_worker_is_the_part_transformed_here(
    tmp_path: Path, shared_pool: None
) -> None:
    here, there, _, parts = two_copies(tmp_path)
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


def test_parts_handed_over_as_they_land_are_the_parts_the_tasks_would_write(
    tmp_path: Path, shared_pool: None
) -> None:
    here, there, raw, parts = two_copies(tmp_path)
    lake = LakeConfig(url=str(there))
    workers = part_workers.shared_part_workers(2)
    assert part_workers.running_part_workers() is workers
    handoff = part_workers.LandedParts(workers, lake, DAY, raw.snapshot_id)
    keys, counts = list(raw.manifest["parts"]), list(raw.manifest["part_records"])
    handoff.landed(keys[:1], counts[:1])  # as the extract flushes them, then all at the commit
    handoff.landed(keys, counts)
    handoff.landed(keys, counts)  # nothing new: nothing submitted twice
    assert part_workers.take_landed(lake, parts[0], 97) is None  # another chunk size
    assert part_workers.take_landed(LakeConfig(url=str(here)), parts[0], 50_000) is None
    for part in parts:
        expected = transform_part(LocalLake(here), part)
        assert part_workers.take_landed(lake, part, 50_000) == expected
        assert part_workers.take_landed(lake, part, 50_000) is None  # taken once
    assert lake_bytes(there) == lake_bytes(here)


def test_discarded_parts_are_not_taken(tmp_path: Path, shared_pool: None) -> None:
    raw = write_realistic_day(LocalLake(tmp_path), DAY, 2_000, page_size=500, part_bytes=300_000)
    parts = plan_parts(LocalLake(tmp_path), raw)
    lake = LakeConfig(url=str(tmp_path))
    assert part_workers.running_part_workers() is None
    handoff = part_workers.LandedParts(
        part_workers.shared_part_workers(1), lake, DAY, raw.snapshot_id
    )
    handoff.landed(raw.manifest["parts"], raw.manifest["part_records"])
    handoff.discard()  # the extract failed: no task will take them
    assert all(part_workers.take_landed(lake, part, 50_000) is None for part in parts)
    # A new extract of the day forgets what an earlier one handed over and nobody took.
    again = part_workers.LandedParts(
        part_workers.shared_part_workers(1), lake, DAY, raw.snapshot_id
    )
    again.landed(raw.manifest["parts"], raw.manifest["part_records"])
    part_workers.LandedParts(part_workers.shared_part_workers(1), lake, DAY, "later")
    assert part_workers.take_landed(lake, parts[0], 50_000) is None


PROBE_MAIN = """
import os

with open(os.environ["IMPORTS_LOG"], "a") as log:
    log.write(f"imported as {__name__}\\n")

if __name__ == "__main__":
    from sales_etl.part_workers import PartWorkers

    workers = PartWorkers(2)
    workers.started()
    workers.close()
    with open(os.environ["IMPORTS_LOG"], "a") as log:
        log.write(f"main is {__spec__.name} at {os.path.basename(__file__)}\\n")
"""


def test_the_workers_never_run_the_parent_s_main_module_again(tmp_path: Path) -> None:
    """Spawned under ``python -m flows.daily_sales``, each worker ran that module again as
    ``__mp_main__``: Prefect and the whole flow imported, ~2.5 CPU-s and ~50 MB a worker."""
    (tmp_path / "probe_main.py").write_text(PROBE_MAIN)
    imports = tmp_path / "imports.log"
    env = {
        **os.environ,
        "IMPORTS_LOG": str(imports),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
    }
    subprocess.run([sys.executable, "-m", "probe_main"], env=env, check=True, timeout=120)
    # Imported once, as the main module; its spec and file are back after the workers started.
    assert imports.read_text().splitlines() == [
        "imported as __main__",
        "main is probe_main at probe_main.py",
    ]
