"""Warehouse down or restarted, and concurrent runs of one day: the run fails clearly or
retries, a rerun converges, and the raw snapshot is never fetched from the API twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

import flows.daily_sales as flow_module
from devharness.demo_api import serve_demo_api
from flows.daily_sales import daily_sales
from tasks.load import load_sales
from tests import postgres
from tests.utils import (
    DAY,
    DAY_LOCK,
    REFERENCE_DATA,
    WarehouseContents,
    admin_engine,
    blocked_etl_backends,
    contents,
    create_tables,
    database_name,
    holding,
    manifests,
    pipeline_env,
    set_env,
    start_flow,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_warehouse_refusing_connections_fails_clearly_and_rerun_converges(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, reference: WarehouseContents
) -> None:
    monkeypatch.setattr(flow_module, "load_sales", load_sales.with_options(retry_delay_seconds=0))
    port = postgres.refused_port()
    down = f"postgresql://etl:pw-not-shown@127.0.0.1:{port}/warehouse"
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(lake), down))
        state = daily_sales(run_date=DAY, return_state=True)
        assert state.is_failed()
        # Refused before any work (a permanent configuration error: docs/errors.md).
        assert f"WAREHOUSE_URL (postgresql+psycopg2://etl:***@127.0.0.1:{port}/warehouse)" in (
            state.message
        ), state.message
        assert "Connection refused" in state.message
        assert "pw-not-shown" not in state.message
        assert api.sales_requests == [], "extracted although the warehouse refused"

        monkeypatch.setenv("WAREHOUSE_URL", pg_url)
        rerun = daily_sales(run_date=DAY, return_state=True)
        assert rerun.is_completed(), rerun.message
    assert len(manifests(lake)) == 1
    assert contents(pg_url) == reference


def test_postgres_restarted_under_a_load_retries_and_rerun_converges(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefect_api_url: str,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    with postgres.throwaway_server() as server:
        cluster = server.url
        url = postgres.create_database(cluster, "warehouse")
        create_tables(url)
        admin = admin_engine(cluster)
        with serve_demo_api(REFERENCE_DATA) as api:
            env = pipeline_env(api.url, str(lake), url)
            proc = start_flow(tmp_path, "restarted", env, prefect_api_url)
            locker = sa.create_engine(url, poolclass=sa.pool.NullPool)
            conn = locker.connect()
            conn.begin()
            conn.execute(sa.text(DAY_LOCK))
            wait_for(
                lambda: blocked_etl_backends(admin, "warehouse", f"%{DAY}%"),
                timeout=120,
                what="the load to be in flight",
                process=proc,
            )
            admin.dispose()
            postgres.restart(server)  # also ends the session holding the lock
            conn.invalidate()
            locker.dispose()
            code = proc.wait(timeout=120)
            # Either Prefect's retry of the load succeeded, or the run failed saying why.
            log = proc.stdout + proc.stderr
            assert "load-sales" in log
            if code != 0:
                assert "failed" in proc.stderr and "loading" in proc.stderr, proc.stderr
            else:
                assert "server closed the connection" in log and "Retry 1/2" in log, log[-3000:]
            fetched = len(api.sales_requests)

            set_env(monkeypatch, env)
            # The whole day again (not the hourly increment): served by the cached extract.
            rerun = daily_sales(run_date=DAY, full_extract=True, return_state=True)
            assert rerun.is_completed(), rerun.message
            assert len(api.sales_requests) == fetched, "the raw snapshot was fetched twice"
        assert contents(url) == reference
        assert database_name(url) == "warehouse"


@pytest.mark.long
def test_concurrent_runs_of_the_same_day_end_as_one_run(
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    prefect_api_url: str,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    db = database_name(pg_url)
    with serve_demo_api(REFERENCE_DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        # Both loads queue on the day lock together, then race the moment it is released.
        with holding(pg_url, DAY_LOCK):
            runs = [start_flow(tmp_path, f"run{i}", env, prefect_api_url) for i in (1, 2)]
            wait_for(
                lambda: len(blocked_etl_backends(admin, db, f"%{DAY}%")) == 2,
                timeout=180,
                what="both loads to be in flight at once",
            )
        admin.dispose()
        codes = [run.wait(timeout=120) for run in runs]
    assert codes == [0, 0], [run.stderr[-2000:] for run in runs]
    assert 1 <= len(manifests(lake)) <= 2
    assert contents(pg_url) == reference
