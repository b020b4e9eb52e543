"""Ctrl-C during the extract, Ctrl-C and SIGKILL of the CLI while its load waits for a table
(Prefect's temporary mode, :func:`tests.utils.terminal_cli`): nothing is committed for the
stopped stage (no raw snapshot, the load rolled back), no process the CLI started is left, and a
rerun ends exactly as one clean run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from devharness.demo_api import Faults, serve_demo_api
from tests.utils import (
    REFERENCE_DATA,
    START_WAIT,
    STOP_TIMEOUT,
    WarehouseContents,
    assert_nothing_left,
    assert_stopped,
    blocked_load,
    contents,
    database_name,
    etl_backends,
    manifests,
    pipeline_env,
    rerun,
    row_counts,
    terminal_cli,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


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
@pytest.mark.long
def test_ctrl_c_during_the_load_rolls_it_back(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    with serve_demo_api(REFERENCE_DATA) as api:
        with blocked_load(pg_url, pg_admin_url, tmp_path, api.url) as (run, admin, env):
            run.stop(signal.SIGINT)  # SIGTERM at this point: tests/flows/test_termination.py
            # Cancelled, not waiting for the lock (held until after the CLI exited).
            wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 10, "no backend")
        assert_stopped(run, signal.SIGINT, "load", pg_url)
        assert_nothing_left(run)
        rerun(monkeypatch, env)
    assert contents(pg_url) == reference


@STOP_TIMEOUT
def test_sigkill_of_the_cli_leaves_no_process_it_started(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    with serve_demo_api(REFERENCE_DATA) as api:
        with blocked_load(pg_url, pg_admin_url, tmp_path, api.url) as (run, admin, env):
            server = [pid for pid in run.started() if pid != run.proc.pid]
            assert server, "Prefect's temporary API server is not running?"
            run.proc.kill()
            run.proc.wait(timeout=30)
            # Prefect's temporary API server goes with the CLI (PR_SET_PDEATHSIG).
            assert_nothing_left(run)
        wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 60, "the backend to go")
        assert row_counts(pg_url) == (0, 0)
        rerun(monkeypatch, env)
    assert contents(pg_url) == reference
