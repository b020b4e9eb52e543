"""SIGTERM to ``python -m flows.daily_sales``: prompt exit, SQL cancelled, no process left behind.

Before ``flows.termination``, a SIGTERM left Prefect's ephemeral API server running as an orphan
and was not even noticed while a statement was running in PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.termination import graceful_termination
from sales_etl.demo_api import DemoData, serve_demo_api
from tests.conftest import run_env

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-11-23"

pytestmark = pytest.mark.e2e


def session_members(session_id: int) -> list[int]:
    """Live processes of a session (the CLI and whatever it started, orphaned or not)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def blocked_statements(admin_url: str, database: str) -> list[str]:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT query FROM pg_stat_activity WHERE datname = :db "
                    "AND state = 'active' AND wait_event_type = 'Lock'"
                ),
                {"db": database},
            ).all()
    finally:
        engine.dispose()
    return [row[0] for row in rows]


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_cancels_the_statement_in_flight_and_leaves_no_process(
    tmp_path: Path, pg_url: str, pg_admin_url: str
) -> None:
    env = run_env(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        WAREHOUSE_URL=pg_url,
        DATA_LAKE_URL=str(tmp_path / "lake"),
        PYTHONPATH=str(REPO),
    )
    database = sa.make_url(pg_url).database
    assert database
    with serve_demo_api(DemoData(rows_per_day=200)) as api:
        env["SALES_API_URL"] = api.url
        command = [sys.executable, "-m", "flows.daily_sales", "--date", DAY]
        # A first run creates the tables, so the second can be made to wait on one.
        first = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=240)
        assert first.returncode == 0, first.stderr.decode()[-2000:]

        blocker = sa.create_engine(pg_url).connect()
        try:
            blocker.execute(sa.text("LOCK TABLE sales IN ACCESS EXCLUSIVE MODE"))
            process = subprocess.Popen(
                [*command, "--refresh"], env=env, cwd=tmp_path, start_new_session=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                wait_until(
                    lambda: (
                        blocked_statements(pg_admin_url, database) or process.poll() is not None
                    ),
                    180,
                    "the run's load to wait on the locked table",
                )
                assert process.poll() is None, process.communicate()[1].decode()[-2000:]
                assert session_members(process.pid), "the CLI has no process?"
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=20)
                stopped_after = time.monotonic() - started
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
        finally:
            blocker.rollback()
            blocker.close()

    assert process.returncode != 0, stderr.decode()[-2000:]
    # It stopped without waiting for the lock, which was held until after it exited.
    assert stopped_after < 10, stopped_after
    assert blocked_statements(pg_admin_url, database) == []
    # Prefect's ephemeral API server (a child process) went with it.
    wait_until(lambda: not session_members(process.pid), 10, "no process left in its session")


def test_graceful_termination_cancels_a_statement_in_the_main_thread(pg_url: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set in the main thread")
    engine = sa.create_engine(pg_url)

    def long_statement() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_sleep(60)"))

    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    try:
        with graceful_termination():
            timer.start()
            with pytest.raises(SystemExit) as exited:
                long_statement()
    finally:
        timer.cancel()
        engine.dispose()
    assert exited.value.code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    # The previous (default) handler is back.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
