"""Ctrl-C or SIGTERM during the transform, on a pool of worker processes, on the CLI in
Prefect's temporary mode (:func:`tests.utils.terminal_cli`): the run stops promptly with one stop
line and a ``failed`` ledger row, stops the pool's workers, commits no clean snapshot, and a
rerun ends exactly as one clean run of the same raw day."""

from __future__ import annotations

import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devharness.raw_days import write_realistic_day
from sales_etl.lake import LocalLake
from tests import postgres
from tests.utils import (
    DAY,
    START_WAIT,
    STOP_TIMEOUT,
    WarehouseContents,
    assert_nothing_left,
    assert_stopped,
    closed_port_url,
    contents,
    manifests,
    pipeline_env,
    pool_workers_of,
    rerun,
    terminal_cli,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

TRANSFORM_RECORDS = 12_000  # ~6 raw parts of ~512 KB: more parts than the pool's two workers
TRANSFORM_PART_BYTES = 512 << 10
THREADS = {"TASK_RUNNER": "threads:2"}  # the runs in this process: no worker start-up


@pytest.fixture(scope="module")
def raw_day(
    prefect_harness: None, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, WarehouseContents]]:
    """A lake holding a realistic raw day, and what one clean run of it (replayed from the lake,
    the source down) leaves in the warehouse."""
    lake = tmp_path_factory.mktemp("transform-day") / "lake"
    write_realistic_day(
        LocalLake(lake), DAY, TRANSFORM_RECORDS, page_size=500, part_bytes=TRANSFORM_PART_BYTES
    )
    clean_lake = lake.parent / "clean-run"
    shutil.copytree(lake, clean_lake)
    name = f"etl_clean_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_admin_url, name)
    try:
        with pytest.MonkeyPatch.context() as mp:
            rerun(mp, pipeline_env(closed_port_url(), str(clean_lake), url, **THREADS))
        yield lake, contents(url)
    finally:
        postgres.drop_database(pg_admin_url, name)


@STOP_TIMEOUT
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.long
def test_stop_during_the_transform_stops_the_pool_workers(
    signum: int,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    tmp_path: Path,
    raw_day: tuple[Path, WarehouseContents],
) -> None:
    written, clean_run = raw_day
    lake = tmp_path / "lake"
    shutil.copytree(written, lake)
    # The source is down: the run replays the raw snapshot from the lake, on a pool of two.
    env = pipeline_env(
        closed_port_url(), str(lake), pg_url, SALES_API_MAX_RETRIES="0", TASK_RUNNER="processes:2"
    )
    with terminal_cli(tmp_path, env) as run:
        wait_for(lambda: pool_workers_of(run.proc.pid), START_WAIT, "the pool workers", run)
        run.stop(signum)
        assert_stopped(run, signum, "transform", pg_url)
        assert_nothing_left(run)
    assert manifests(lake, "clean") == []
    rerun(monkeypatch, {**env, **THREADS})
    assert contents(pg_url) == clean_run
