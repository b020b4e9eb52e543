"""The orchestrator lost mid-load: Prefect's temporary API server killed under the CLI, or a
configured ``prefect server start`` killed while the load waits for a table. The run fails at
once (or after PREFECT_API_LOST_AFTER_SECONDS) with its load rolled back; a rerun converges."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from devharness.demo_api import serve_demo_api
from tests.utils import (
    DAY,
    REFERENCE_DATA,
    STOP_TIMEOUT,
    WarehouseContents,
    assert_newest_ledger_row_is_the_stop,
    assert_nothing_left,
    blocked_load,
    contents,
    database_name,
    etl_backends,
    ledger_rows,
    pipeline_env,
    rerun,
    row_counts,
    running_prefect_server,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


@STOP_TIMEOUT
@pytest.mark.long
def test_losing_the_api_server_mid_load_fails_the_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    with serve_demo_api(REFERENCE_DATA) as api:
        with blocked_load(pg_url, pg_admin_url, tmp_path, api.url) as (run, admin, env):
            [server] = [pid for pid in run.started() if pid != run.proc.pid]
            os.kill(server, signal.SIGKILL)  # the orchestrator is gone
            run.proc.wait(timeout=60)
            wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 10, "no backend")
        stderr = run.stderr
        assert run.proc.returncode == 1, stderr[-3000:]
        [line] = [
            line for line in stderr.splitlines() if "API server" in line and " failed: " in line
        ]
        assert line.startswith(
            f"Daily Sales ETL {DAY} failed: Prefect's API server (http://127.0.0.1:"
        )
        assert "died during the load" in line and line.endswith("so a rerun is safe")
        rows = ledger_rows(pg_url)
        assert len(rows) <= 2 and all(status == "failed" for status, _ in rows), rows
        assert "API server" in rows[-1][1] and "died" in rows[-1][1], rows
        assert row_counts(pg_url) == (0, 0)
        assert_nothing_left(run)
        rerun(monkeypatch, env)
    assert contents(pg_url) == reference


API_LOST_AFTER = 10  # PREFECT_API_LOST_AFTER_SECONDS of the run below


@STOP_TIMEOUT
def test_losing_a_configured_api_mid_load_fails_the_run(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    """The CLI against a ``prefect server start`` elsewhere (PREFECT_API_URL): the server is
    killed while the load waits for a table; the run fails once the API has not answered for
    PREFECT_API_LOST_AFTER_SECONDS, its load rolled back, instead of retrying quietly."""
    db = database_name(pg_url)
    with (
        serve_demo_api(REFERENCE_DATA) as api,
        running_prefect_server(pg_admin_url) as (server, process),
    ):
        settings = {
            "PREFECT_API_URL": server.api_url,
            "PREFECT_API_LOST_AFTER_SECONDS": str(API_LOST_AFTER),
        }
        with blocked_load(pg_url, pg_admin_url, tmp_path, api.url, **settings) as (run, admin, _):
            killed = time.monotonic()
            os.killpg(process.pid, signal.SIGKILL)  # the server and its uvicorn child
            # Without the guard the load would wait for the lock, held until after the CLI.
            run.proc.wait(timeout=API_LOST_AFTER + 120)
            print(f"failed {time.monotonic() - killed:.1f} s after the API server was killed")
            wait_for(lambda: not etl_backends(admin, db), 10, "no backend")
        stderr = run.stderr
        assert run.proc.returncode == 1, stderr[-3000:]
        cause = f"Prefect's API server ({server.api_url}) stopped answering for {API_LOST_AFTER} s"
        [line] = [line for line in stderr.splitlines() if " failed: " in line]
        assert line.startswith(f"Daily Sales ETL {DAY} failed: {cause} during the load; ")
        assert line.endswith("so a rerun is safe")
        assert_newest_ledger_row_is_the_stop(pg_url, f"stopped: {cause} during the load")
        assert row_counts(pg_url) == (0, 0)
        assert_nothing_left(run)
    with serve_demo_api(REFERENCE_DATA) as api:  # the rerun, on the suite's Prefect API
        rerun(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
    assert contents(pg_url) == reference
