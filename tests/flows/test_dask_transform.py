"""The transform's part tasks on a real ``dask.distributed`` cluster on loopback.

A scheduler and two single-threaded worker processes are started as subprocesses over TCP; the
flow's part tasks reach them through ``DaskTaskRunner(address=...)`` (``TASK_RUNNER``). The
tables loaded from the Dask-built clean snapshot must equal those of the default runner, also
when a worker is SIGKILLed in the middle of the transform.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect import flow
from pydantic import SecretStr

from devharness.raw_days import write_realistic_day
from flows.runners import parse_task_runner
from flows.transform import transform_day
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import CleanManifest
from tasks.extract import find_raw_snapshot
from tasks.load import load_sales
from tests import postgres
from tests.utils import DAY, REPO, contents

# 30k records in ~10 raw parts of ~1 MB: enough parts for both workers to be busy at once.
RECORDS = 30_000
PART_BYTES = 1 << 20
CHUNK_RECORDS = 1_000


# Part tasks report to the session's Prefect test API (the workers get it via context).
pytestmark = pytest.mark.usefixtures("prefect_harness")


@dataclass
class DaskCluster:
    address: str
    workers: list[subprocess.Popen[bytes]]


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A scheduler and two worker processes (one thread each) on 127.0.0.1, over TCP."""
    from distributed import Client

    port = postgres.free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    common = {"cwd": REPO, "env": env, "start_new_session": True}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, **common
        )
        processes.append(process)
        return process

    try:
        start(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
        )
        workers = [
            start(
                f"worker-{n}",
                "distributed.cli.dask_worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--name",
                f"w{n}",
                "--dashboard-address",
                ":0",
                "--death-timeout",
                "120",
            )
            for n in (1, 2)
        ]
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)
        yield DaskCluster(address=address, workers=workers)
    finally:
        for process in processes:  # a throwaway cluster: no graceful shutdown needed
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@flow(name="Transform and load (test)")
def transform_and_load(
    lake: LakeConfig, warehouse: WarehouseConfig, snapshot_id: str, runner: str
) -> CleanManifest:
    raw = find_raw_snapshot(lake, DAY, snapshot_id)
    assert raw is not None
    clean = transform_day(lake, raw, runner=parse_task_runner(runner), chunk_records=CHUNK_RECORDS)
    load_sales(warehouse, lake, clean, "test-run")
    return clean


@pytest.fixture(scope="module")
def written_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A lake holding a realistic raw day (every reason code, duplicates), written once."""
    root = tmp_path_factory.mktemp("written-day") / "lake"
    store = open_lake(LakeConfig(url=str(root)))
    raw = write_realistic_day(store, DAY, RECORDS, page_size=500, part_bytes=PART_BYTES)
    store.close()
    assert len(raw.manifest["parts"]) >= 6
    return root, raw.snapshot_id


def raw_day(written: tuple[Path, str], tmp_path: Path, name: str) -> tuple[LakeConfig, str]:
    """A lake of its own holding a copy of the written day."""
    root, snapshot_id = written
    shutil.copytree(root, tmp_path / name)
    return LakeConfig(url=str(tmp_path / name)), snapshot_id


def warehouse(url: str, table: str) -> WarehouseConfig:
    return WarehouseConfig(url=SecretStr(url), table_name=table)


def test_dask_cluster_loads_the_tables_of_the_default_runner(
    dask_cluster: DaskCluster, written_day: tuple[Path, str], tmp_path: Path, pg_url: str
) -> None:
    default_lake, default_snapshot = raw_day(written_day, tmp_path, "default")
    dask_lake, dask_snapshot = raw_day(written_day, tmp_path, "dask")

    expected = transform_and_load(
        default_lake, warehouse(pg_url, "sales"), default_snapshot, "auto"
    )
    got = transform_and_load(
        dask_lake, warehouse(pg_url, "sales_dask"), dask_snapshot, dask_cluster.address
    )

    assert (got.records, got.clean, got.rejected) == (RECORDS, expected.clean, expected.rejected)
    assert got.by_reason == expected.by_reason and len(got.by_reason) == 13
    assert got.clean_amount_total == expected.clean_amount_total
    loaded = contents(pg_url)
    assert len(loaded.sales) > 20_000 and len(loaded.rejected) > 2_000
    assert contents(pg_url, "sales_dask") == loaded


def test_a_worker_killed_mid_transform_is_survived(
    dask_cluster: DaskCluster, written_day: tuple[Path, str], tmp_path: Path, pg_url: str
) -> None:
    clean_lake, clean_snapshot = raw_day(written_day, tmp_path, "clean-run")
    killed_lake, killed_snapshot = raw_day(written_day, tmp_path, "killed-run")
    transform_and_load(clean_lake, warehouse(pg_url, "sales"), clean_snapshot, "auto")

    clean_zone = Path(killed_lake.url) / "clean"
    victim = dask_cluster.workers[0]
    killed_at: dict[str, int] = {}

    def kill_when_parts_appear() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            written = list(clean_zone.rglob("*.parquet")) if clean_zone.exists() else []
            if written:
                killed_at["parts_written"] = len(written)
                killed_at["manifests"] = len(list(clean_zone.rglob("_manifest.json")))
                os.killpg(victim.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_parts_appear, daemon=True)
    killer.start()
    got = transform_and_load(
        killed_lake, warehouse(pg_url, "sales_killed"), killed_snapshot, dask_cluster.address
    )
    killer.join(timeout=10)

    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert killed_at["manifests"] == 0  # killed before the transform had finished
    assert got.records == RECORDS
    assert contents(pg_url, "sales_killed") == contents(pg_url)
