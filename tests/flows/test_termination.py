"""SIGTERM to ``python -m flows.daily_sales``: prompt exit, SQL cancelled, no process left behind;
the pieces of :mod:`flows.termination` on their own (the stage-by-stage signals, SIGKILL and the
lost API server: ``tests/reliability/test_stop_during_*.py`` and ``test_api_lost.py``).

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from devharness.demo_api import DemoData, serve_demo_api
from flows.termination import (
    ApiWatch,
    OrchestratorLost,
    StopReport,
    api_answers,
    api_lost_after,
    graceful_termination,
    line_tracked_stderr,
    orchestrator_guard,
    status_line,
    stop_reason,
)
from sales_etl.errors import ConfigError
from tests.utils import DAY_TEXT, REPO, create_tables, marked_processes, run_env, wait_for

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


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_cancels_the_statement_in_flight_and_leaves_no_process(
    tmp_path: Path, pg_url: str, pg_admin_url: str
) -> None:
    marker = f"ETL_TERMINATION_TEST_{uuid.uuid4().hex}"
    env = run_env(
        ETL_TERMINATION_TEST_MARKER=marker,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        WAREHOUSE_URL=pg_url,
        DATA_LAKE_URL=str(tmp_path / "lake"),
        PYTHONPATH=str(REPO),
    )
    database = sa.make_url(pg_url).database
    assert database
    with serve_demo_api(DemoData(rows_per_day=200)) as api:
        env["SALES_API_URL"] = api.url
        command = [sys.executable, "-m", "flows.daily_sales", "--date", DAY_TEXT]
        create_tables(pg_url)  # so that the run can be made to wait on one

        blocker = sa.create_engine(pg_url).connect()
        try:
            blocker.execute(sa.text("LOCK TABLE sales IN ACCESS EXCLUSIVE MODE"))
            process = subprocess.Popen(
                [*command, "--refresh"], env=env, cwd=tmp_path, start_new_session=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                wait_for(
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

    assert process.returncode == 143, stderr.decode()[-2000:]
    [line] = [line for line in stderr.decode().splitlines() if " stopped: " in line]
    assert line.startswith(f"Daily Sales ETL {DAY_TEXT} stopped: SIGTERM during the load; 1 SQL")
    # It stopped without waiting for the lock, which was held until after it exited.
    assert stopped_after < 10, stopped_after
    assert blocked_statements(pg_admin_url, database) == []
    # Prefect's ephemeral API server (a child process, in a session of its own) went with it.
    wait_for(lambda: not marked_processes(marker), 10, "no process of the run left")


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


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_shielded_child_misses_ctrl_c_and_dies_with_its_parent() -> None:
    """How Prefect's temporary API server is started: a terminal's Ctrl-C (SIGINT to the CLI's
    process group) does not reach it, and a SIGKILL of its parent (the CLI) takes it down too."""
    marker = f"ETL_SHIELD_TEST_{uuid.uuid4().hex}"
    parent_code = (
        "import os, signal, sys, time\n"
        "from flows.termination import shielded_popen\n"
        "signal.signal(signal.SIGINT, lambda *_: None)  # the parent outlives the Ctrl-C\n"
        "child = shielded_popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
        "dict(os.environ))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "ETL_SHIELD_TEST_MARKER": marker}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert os.getsid(child) == child != os.getsid(parent.pid)  # a session of its own
        os.killpg(parent.pid, signal.SIGINT)
        time.sleep(1)
        assert sorted(marked_processes(marker)) == sorted([parent.pid, child])
        parent.kill()
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    wait_for(lambda: not marked_processes(marker), 10, "the child to die with its parent")


def test_the_stop_line_and_the_ledger_message_name_the_cause_and_the_stage() -> None:
    report = StopReport(signum=signal.SIGTERM, stage="transform", workers_stopped=2)
    assert report.exit_code() == 143
    assert report.line("Daily Sales ETL 2026-11-23") == (
        "Daily Sales ETL 2026-11-23 stopped: SIGTERM during the transform; 0 SQL statement(s) "
        "cancelled, 2 pool worker(s) stopped; nothing was committed for the stopped stage (an "
        "open load is rolled back), so a rerun is safe"
    )
    lost = StopReport(stage="load", api_lost="http://127.0.0.1:8123/api")
    assert lost.exit_code() == 1
    assert lost.line("X").startswith(
        "X failed: Prefect's API server (http://127.0.0.1:8123/api) died during the load;"
    )
    assert StopReport(signum=signal.SIGINT).exit_code() == 130
    # Outside a CLI run: the exception alone tells.
    assert stop_reason(KeyboardInterrupt()) == "stopped: Ctrl-C (SIGINT) during the run"
    assert stop_reason(SystemExit(143)) == "stopped: SIGTERM during the run"
    assert stop_reason(ValueError("no")) is None


URL = "http://127.0.0.1:8123/api"


def api_down_between(start: float, end: float) -> ApiWatch:
    """An API that does not answer from ``start`` to ``end`` seconds from now; lost after 1 s."""
    began = time.monotonic()

    def alive() -> bool:
        return not start <= time.monotonic() - began < end

    return ApiWatch(URL, alive, lost_after=1.0, lost_as="stopped answering for 1 s", interval=0.05)


def test_a_configured_api_that_blips_shorter_than_its_grace_does_not_stop_the_run() -> None:
    report = StopReport(stage="load")
    with graceful_termination(report), orchestrator_guard(api_down_between(0.2, 0.5), report):
        time.sleep(2.0)
    assert report.api_lost is None


def test_a_configured_api_silent_past_its_grace_stops_the_run_with_its_url() -> None:
    report = StopReport(stage="load")
    lost = api_down_between(0, 999)
    with (  # noqa: PT012
        pytest.raises(OrchestratorLost),
        graceful_termination(report),
        orchestrator_guard(lost, report),
    ):
        for _ in range(600):  # the guard interrupts this sleep after ~1 s
            time.sleep(0.1)
    assert report.api_lost == URL and report.exit_code() == 1
    assert report.line("X").startswith(
        f"X failed: Prefect's API server ({URL}) stopped answering for 1 s during the load; "
    )
    assert stop_reason(ValueError()) is None  # outside stoppable_run: only the exception tells


@contextmanager
def answering(status: int) -> Iterator[str]:
    """A loopback HTTP server answering every GET with ``status``; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_a_configured_api_answers_when_its_health_route_answers_below_500() -> None:
    with answering(200) as url:
        assert api_answers(url, timeout=5)
    with answering(401) as url:  # a live server that wants a key
        assert api_answers(url, timeout=5)
    with answering(503) as url:  # a proxy whose server is gone
        assert not api_answers(url, timeout=5)
    assert not api_answers(url, timeout=5)  # nothing listens any more


def test_the_grace_of_a_configured_api_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_LOST_AFTER_SECONDS", raising=False)
    assert api_lost_after() == 30.0
    monkeypatch.setenv("PREFECT_API_LOST_AFTER_SECONDS", "7.5")
    assert api_lost_after() == 7.5
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("PREFECT_API_LOST_AFTER_SECONDS", bad)
        with pytest.raises(ConfigError, match="PREFECT_API_LOST_AFTER_SECONDS"):
            api_lost_after()


def committed(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM gated")).scalar_one())


def commit_in_a_thread(engine: sa.Engine) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO gated VALUES (1)"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=commit)
    thread.start()
    return thread, errors


@pytest.fixture
def gated(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS gated; CREATE TABLE gated (x int)"))
    yield engine
    engine.dispose()


def test_a_commit_waits_while_the_api_is_silent_and_goes_on_when_it_answers(
    gated: sa.Engine,
) -> None:
    report = StopReport(stage="load")
    silent = ApiWatch(URL, api_down_between(0, 1.5).alive, 30.0, "stopped answering", 0.05)
    with graceful_termination(report), orchestrator_guard(silent, report):
        time.sleep(0.5)  # the guard has seen the API silent
        thread, errors = commit_in_a_thread(gated)
        time.sleep(0.5)
        assert committed(gated) == 0  # held while the API does not answer
        thread.join(timeout=10)
    assert errors == [] and committed(gated) == 1 and report.api_lost is None


def test_a_commit_waiting_for_a_lost_api_is_refused_and_rolled_back(gated: sa.Engine) -> None:
    report = StopReport(stage="load")
    silent = ApiWatch(URL, lambda: False, 1.0, "stopped answering for 1 s", 0.05)
    with graceful_termination(report), orchestrator_guard(silent, report):
        time.sleep(0.3)
        thread, errors = commit_in_a_thread(gated)
        with pytest.raises(OrchestratorLost):  # noqa: PT012
            for _ in range(600):  # the guard interrupts this sleep after ~1 s
                time.sleep(0.1)
        thread.join(timeout=5)
        assert [type(error) for error in errors] == [OrchestratorLost]
        assert committed(gated) == 0 and report.api_lost == URL
        with gated.begin() as conn:  # once lost, the run still records its stop (the ledger)
            conn.execute(sa.text("INSERT INTO gated VALUES (2)"))
    assert committed(gated) == 1


def test_the_final_line_starts_its_own_line_after_a_partial_write(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prefect's API log handler writes an error's text with no newline once its API is gone.
    with line_tracked_stderr():
        sys.stderr.write("All connection attempts failed")
        status_line("Daily Sales ETL 2026-11-23 failed: the API server died")
        status_line("a second line")
    assert capsys.readouterr().err.splitlines() == [
        "All connection attempts failed",
        "Daily Sales ETL 2026-11-23 failed: the API server died",
        "a second line",
    ]


def test_flow_runs_on_the_temporary_server_send_no_heartbeats(tmp_path: Path) -> None:
    """Heartbeats tell a lasting server that a run is still alive; the temporary server dies
    with the run, and Prefect's sync engine waits for the heartbeat thread (it sleeps in 1 s
    steps) at the end of every flow run. A flow run on the temporary server starts none; the
    setting is Prefect's own again once the server's context is left."""
    probe = (
        "from prefect import flow\n"
        "from prefect.settings import get_current_settings\n"
        "from flows.termination import shielded_api\n"
        "def heartbeat():\n"
        "    return get_current_settings().flows.heartbeat_frequency\n"
        "before = heartbeat()\n"
        "with shielded_api() as server:\n"
        "    during = flow(heartbeat)()\n"
        "print('PROBE', server is not None, before, during, heartbeat(), flush=True)\n"
    )
    env = run_env(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("PROBE")]
    assert lines, result.stderr[-3000:]
    started, before, during, after = lines[0]
    assert started == "True"  # no PREFECT_API_URL: the temporary server ran the flow
    assert during == "None"
    assert before == after != "None"
