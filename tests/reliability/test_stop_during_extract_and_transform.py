"""Ctrl-C during the extract, Ctrl-C or SIGTERM during the transform (on a pool of worker
processes), on the CLI in Prefect's temporary mode (:func:`tests.utils.cli`): the run stops
promptly with one stop line and a ``failed`` ledger row, leaves no process and no committed
snapshot behind, and a rerun ends exactly as one clean run."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from devharness.demo_api import Faults, serve_demo_api
from devharness.raw_days import write_realistic_day
from sales_etl.lake import LocalLake
from tests.utils import (
    DAY,
    REFERENCE_DATA,
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


@STOP_TIMEOUT
def test_ctrl_c_during_the_extract(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    # The 4th request (the 3rd page) answers only after a minute.
    with serve_demo_api(REFERENCE_DATA, Faults(slow_every=4, slow_seconds=60)) as api:
        env = pipeline_env(api.url, str(lake), pg_url, SALES_API_TIMEOUT_SECONDS="120")
        with terminal_cli(tmp_path, env) as run:
            wait_for(lambda: len(api.sales_requests) >= 3, START_WAIT, "the third page", run)
            run.stop(signal.SIGINT)
            assert_stopped(run, signal.SIGINT, "extract", pg_url)
            assert_nothing_left(run)
    assert manifests(lake) == []  # no raw snapshot was committed
    with serve_demo_api(REFERENCE_DATA) as api:
        rerun(monkeypatch, {**env, "SALES_API_URL": api.url})
    assert contents(pg_url) == reference


@STOP_TIMEOUT
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_during_the_transform_stops_the_pool_workers(
    signum: int, monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, new_database: Any
) -> None:
    lake = tmp_path / "lake"
    store = LocalLake(lake)
    write_realistic_day(
        store, DAY, TRANSFORM_RECORDS, page_size=500, part_bytes=TRANSFORM_PART_BYTES
    )
    clean_lake = tmp_path / "clean-lake"
    shutil.copytree(lake, clean_lake)  # the same raw day, for a run nothing stops
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
    threads = {"TASK_RUNNER": "threads:2"}  # the reruns in this process: no worker start-up
    rerun(monkeypatch, {**env, **threads})
    clean_url = new_database()
    rerun(monkeypatch, pipeline_env(closed_port_url(), str(clean_lake), clean_url, **threads))
    assert contents(pg_url) == contents(clean_url)
