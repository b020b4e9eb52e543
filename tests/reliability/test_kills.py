"""Killed with SIGKILL mid-load (at several points of the warehouse transaction) and mid lake
write: a rerun ends exactly as one clean run; nothing partial or torn is ever read back.

The flow runs as the real CLI in a subprocess. To stop it at a known point without any hook in
the product, the test holds a PostgreSQL lock the load needs next and waits until
``pg_stat_activity`` shows the pipeline's backend blocked on exactly that statement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from devharness.demo_api import DemoData, Faults, generate_record, serve_demo_api
from devharness.raw_days import write_realistic_day
from flows.daily_sales import daily_sales
from sales_etl.lake import LocalLake
from sales_etl.settings import WarehouseConfig
from sales_etl.snapshots import list_snapshots, read_parquet
from sales_etl.warehouse import create_warehouse_engine, ensure_tables, tables_for
from tests import postgres
from tests.conftest import run_env
from tests.deployments.conftest import running_prefect_server
from tests.flows.test_termination import marked_processes
from tests.reliability.conftest import (
    DATA,
    DAY,
    REPO,
    WarehouseContents,
    admin_engine,
    blocked_etl_backends,
    contents,
    database_name,
    etl_backends,
    holding,
    manifests,
    pipeline_env,
    row_counts,
    set_env,
    start_flow,
    wait_for,
)

DAY_LOCK = f"SELECT pg_advisory_xact_lock(hashtext('daily_sales_etl:public.sales:{DAY}'))"
# point -> (what the test holds, the statement the load is then blocked in)
KILL_POINTS = {
    "waiting_for_the_day_lock": (DAY_LOCK, f"%daily_sales_etl:public.sales:{DAY}%"),
    # The day is staged in the transaction; the upsert into sales (the first statement that
    # touches sales) waits for the table.
    "staged_upserting_sales": (
        "LOCK TABLE sales IN EXCLUSIVE MODE",
        "%INSERT INTO public.sales (%",
    ),
    "sales_upserted_replacing_rejects": (
        "LOCK TABLE sales_rejected IN EXCLUSIVE MODE",
        "%DELETE FROM public.sales_rejected%",
    ),
}


def create_tables(url: str) -> None:
    config = WarehouseConfig(url=SecretStr(url))
    engine = create_warehouse_engine(config)
    try:
        ensure_tables(engine, tables_for(config))
    finally:
        engine.dispose()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_mid_load_then_rerun_equals_one_clean_run(
    point: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    prefect_api_url: str,
    reference: WarehouseContents,
) -> None:
    lock, blocked_in = KILL_POINTS[point]
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    db = database_name(pg_url)
    with serve_demo_api(DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        with holding(pg_url, lock):
            proc = start_flow(tmp_path, "killed", env, prefect_api_url)
            try:
                wait_for(
                    lambda: blocked_etl_backends(admin, db, blocked_in),
                    timeout=120,
                    what=f"the load to block at {point}",
                    proc=proc,
                )
            finally:
                proc.kill()
        assert proc.proc.returncode == -9
        # The orphaned backend finishes its statement, finds its client gone and rolls back.
        wait_for(lambda: not etl_backends(admin, db), timeout=60, what="the backend to go")
        admin.dispose()
        assert row_counts(pg_url) == (0, 0), "a killed load left part of the day behind"
        assert len(manifests(lake)) == 1  # the extract had committed its raw snapshot

        fetched = len(api.sales_requests)
        set_env(monkeypatch, env)
        state = daily_sales(run_date=DAY, return_state=True)
        assert state.is_completed(), state.message
        assert len(api.sales_requests) == fetched, "the rerun fetched the day from the API again"

    got = contents(pg_url)
    assert got == reference


BLOB = 9 * 1024 * 1024  # one record of ~9 MB per page: four pages fill a 32 MB raw part


def test_sigkill_mid_lake_write_never_reads_a_torn_snapshot(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, prefect_api_url: str
) -> None:
    blob = "x" * BLOB
    records = [{**generate_record(DAY.isoformat(), i), "blob": blob} for i in range(6)]
    data = DemoData(records={DAY.isoformat(): records})
    lake = tmp_path / "lake"
    snapshots = lake / "raw" / "sales" / f"date={DAY}"
    # Page 5 hangs: by then four pages (36 MB) have been written as part-00000 of the snapshot.
    with serve_demo_api(data, Faults(slow_every=5, slow_seconds=120)) as api:
        env = pipeline_env(
            api.url, str(lake), pg_url, SALES_API_PAGE_SIZE="1", SALES_API_TIMEOUT_SECONDS="200"
        )
        proc = start_flow(tmp_path, "killed-lake", env, prefect_api_url)
        try:
            wait_for(
                lambda: (
                    list(snapshots.glob("snapshot=*/part-00000.parquet"))
                    and len(api.sales_requests) >= 5
                ),
                timeout=120,
                what="the first raw part to be written",
                proc=proc,
            )
        finally:
            proc.kill()
    [killed] = list(snapshots.glob("snapshot=*"))
    assert not (killed / "_manifest.json").exists()
    assert [p.name for p in killed.iterdir()] == ["part-00000.parquet"]

    # What a kill inside a non-atomic write would leave: a torn part in a newer snapshot.
    store = LocalLake(lake)
    whole = (killed / "part-00000.parquet").read_bytes()
    torn = snapshots / "snapshot=99991231T235959999999Z-deadbeef"
    torn.mkdir()
    (torn / "part-00000.parquet").write_bytes(whole[: len(whole) // 2])
    assert list_snapshots(store, "raw", DAY) == []  # never picked without a manifest
    with pytest.raises(Exception, match="not a readable Parquet"):
        read_parquet(store, f"raw/sales/date={DAY}/{torn.name}/part-00000.parquet")

    with serve_demo_api(data) as api:
        # Every ~9 MB record is a record_too_large reject (limit 64 KiB): a 100% reject rate.
        rerun_env = {"SALES_API_URL": api.url, "SALES_API_TIMEOUT_SECONDS": "30"}
        set_env(monkeypatch, {**env, **rerun_env, "QUALITY_FAIL_REJECT_RATE": "1.0"})
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    summary = state.result()
    [committed] = list_snapshots(store, "raw", DAY)
    assert summary["snapshot_id"] == committed.snapshot_id not in (killed.name, torn.name)
    assert summary["records_extracted"] == 6 and summary["clean"] == 0
    assert summary["rejected_by_reason"] == {"record_too_large": 6}
    assert row_counts(pg_url) == (0, 6)


# --- Ctrl-C, SIGTERM, SIGKILL and a lost API server, on the CLI in Prefect's temporary mode -------
#
# The CLI runs as a terminal would run it: in a process group of its own (the terminal's
# foreground group), without PREFECT_API_URL (Prefect starts its temporary API server). Ctrl-C is
# SIGINT to the whole group, SIGTERM goes to the CLI's process only (what `kill` and Kubernetes
# send). Every process the CLI starts inherits a marker in its environment, so the test finds
# them after the CLI is gone, orphaned or not.

TRANSFORM_RECORDS = 12_000  # ~6 raw parts of ~512 KB: more parts than the pool's two workers
TRANSFORM_PART_BYTES = 512 << 10
STOP_LINE = "stopped: {cause} during the {stage}; "
CAUSES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


@dataclass
class Cli:
    """``python -m flows.daily_sales`` in its own process group, Prefect in temporary mode."""

    proc: subprocess.Popen[bytes]
    marker: str
    err: Path

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def started(self) -> list[int]:
        """Live processes that carry this run's marker (the CLI and all it started)."""
        return marked_processes(self.marker)

    def stop(self, signum: int) -> float:
        """Send ``signum`` (SIGINT to the group, as a terminal; others to the process); returns
        the seconds until the CLI exited."""
        started = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(self.proc.pid, signum)
        else:
            os.kill(self.proc.pid, signum)
        self.proc.wait(timeout=120)
        return time.monotonic() - started


@contextmanager
def cli(tmp_path: Path, env: dict[str, str]) -> Iterator[Cli]:
    marker = f"ETL_STOP_TEST_{uuid.uuid4().hex}"
    full_env = run_env(
        **env,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PYTHONPATH=str(REPO),
        ETL_STOP_TEST_MARKER=marker,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",  # a loaded 2-core box is slow
    )
    err = tmp_path / "cli.err"
    with err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.daily_sales", "--date", DAY.isoformat()],
            cwd=tmp_path, env=full_env, stdout=subprocess.DEVNULL, stderr=e,
            start_new_session=True,
        )  # fmt: skip
    run = Cli(proc, marker, err)
    try:
        yield run
    finally:
        for pid in run.started():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def assert_nothing_left(run: Cli, within: float = 10) -> None:
    wait_for(lambda: not run.started(), timeout=within, what="no process of the run left")


def ledger(url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, message FROM sales_load_ledger ORDER BY finished_at")
            ).all()
    finally:
        engine.dispose()
    return [(str(status), str(message)) for status, message in rows]


def assert_stopped(run: Cli, signum: int, stage: str, url: str) -> None:
    """Exit code, the one stop line, the ledger's failed row, the tables untouched."""
    cause = CAUSES[signum]
    stderr = run.stderr
    assert run.proc.returncode == 128 + signum, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if " stopped: " in line]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(
        f"Daily Sales ETL {DAY} " + STOP_LINE.format(cause=cause, stage=stage)
    )
    assert lines[0].endswith("so a rerun is safe")
    assert_newest_ledger_row_is_the_stop(url, f"stopped: {cause} during the {stage}")
    assert row_counts(url) == (0, 0)


def assert_newest_ledger_row_is_the_stop(url: str, expected: str) -> None:
    """The stop is the day's newest ledger row; before it, at most the load's own failed row
    (the statement the stop cancelled), when the load recorded it before the stop unwound it."""
    rows = ledger(url)
    assert rows[-1] == ("failed", expected), rows
    assert len(rows) <= 2 and all(status == "failed" for status, _ in rows), rows


def wait_for_the_blocked_load(admin: sa.Engine, url: str, run: Cli) -> None:
    """Until the CLI's load waits for the table the test holds locked."""
    wait_for(
        lambda: blocked_etl_backends(admin, database_name(url), "%INSERT INTO%sales (%"),
        START_WAIT,
        "the load to wait for the locked table",
        run,
    )


def rerun(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    set_env(monkeypatch, env)
    state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    return state


# Each test starts Prefect's temporary server in its CLI (10-20 s idle, minutes on a loaded box).
STOP_TIMEOUT = pytest.mark.timeout(900)
START_WAIT = 600  # seconds until the stage to stop is reached


@STOP_TIMEOUT
def test_ctrl_c_during_the_extract(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    # The 4th request (the 3rd page) answers only after a minute.
    with serve_demo_api(DATA, Faults(slow_every=4, slow_seconds=60)) as api:
        env = pipeline_env(api.url, str(lake), pg_url, SALES_API_TIMEOUT_SECONDS="120")
        with cli(tmp_path, env) as run:
            wait_for(lambda: len(api.sales_requests) >= 3, START_WAIT, "the third page", run)
            run.stop(signal.SIGINT)
            assert_stopped(run, signal.SIGINT, "extract", pg_url)
            assert_nothing_left(run)
    assert manifests(lake) == []  # no raw snapshot was committed
    with serve_demo_api(DATA) as api:
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
    # The source is down: the run replays the raw snapshot from the lake, on a pool of two.
    env = pipeline_env(
        closed_port_url(), str(lake), pg_url, SALES_API_MAX_RETRIES="0", TASK_RUNNER="processes:2"
    )
    with cli(tmp_path, env) as run:
        wait_for(lambda: pool_workers_of(run.proc.pid), START_WAIT, "the pool workers", run)
        run.stop(signum)
        assert_stopped(run, signum, "transform", pg_url)
        assert_nothing_left(run)
    assert manifests(lake, "clean") == []
    threads = {"TASK_RUNNER": "threads:2"}  # the reruns in this process: no worker start-up
    rerun(monkeypatch, {**env, **threads})
    clean_url = new_database()
    clean_lake = tmp_path / "clean-lake"
    write_realistic_day(
        LocalLake(clean_lake),
        DAY,
        TRANSFORM_RECORDS,
        page_size=500,
        part_bytes=TRANSFORM_PART_BYTES,
    )
    rerun(monkeypatch, pipeline_env(closed_port_url(), str(clean_lake), clean_url, **threads))
    assert contents(pg_url) == contents(clean_url)


@STOP_TIMEOUT
def test_ctrl_c_during_the_load_rolls_it_back(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    with serve_demo_api(DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        with holding(pg_url, "LOCK TABLE sales IN EXCLUSIVE MODE"), cli(tmp_path, env) as run:
            wait_for_the_blocked_load(admin, pg_url, run)
            run.stop(signal.SIGINT)  # SIGTERM at this point: tests/flows/test_termination.py
            # Cancelled, not waiting for the lock (held until after the CLI exited).
            wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 10, "no backend")
        admin.dispose()
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
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    with serve_demo_api(DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        with holding(pg_url, "LOCK TABLE sales IN EXCLUSIVE MODE"), cli(tmp_path, env) as run:
            wait_for_the_blocked_load(admin, pg_url, run)
            server = [pid for pid in run.started() if pid != run.proc.pid]
            assert server, "Prefect's temporary API server is not running?"
            run.proc.kill()
            run.proc.wait(timeout=30)
            # Prefect's temporary API server goes with the CLI (PR_SET_PDEATHSIG).
            assert_nothing_left(run)
        wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 60, "the backend to go")
        admin.dispose()
        assert row_counts(pg_url) == (0, 0)
        rerun(monkeypatch, env)
    assert contents(pg_url) == reference


@STOP_TIMEOUT
def test_losing_the_api_server_mid_load_fails_the_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    reference: WarehouseContents,
) -> None:
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    with serve_demo_api(DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        with holding(pg_url, "LOCK TABLE sales IN EXCLUSIVE MODE"), cli(tmp_path, env) as run:
            wait_for_the_blocked_load(admin, pg_url, run)
            [server] = [pid for pid in run.started() if pid != run.proc.pid]
            os.kill(server, signal.SIGKILL)  # the orchestrator is gone
            run.proc.wait(timeout=60)
            wait_for(lambda: not etl_backends(admin, database_name(pg_url)), 10, "no backend")
        admin.dispose()
        stderr = run.stderr
        assert run.proc.returncode == 1, stderr[-3000:]
        [line] = [
            line for line in stderr.splitlines() if "API server" in line and " failed: " in line
        ]
        assert line.startswith(
            f"Daily Sales ETL {DAY} failed: Prefect's API server (http://127.0.0.1:"
        )
        assert "died during the load" in line and line.endswith("so a rerun is safe")
        rows = ledger(pg_url)
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
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    db = database_name(pg_url)
    with serve_demo_api(DATA) as api, running_prefect_server(pg_admin_url) as (server, process):
        env = pipeline_env(
            api.url,
            str(lake),
            pg_url,
            PREFECT_API_URL=server.api_url,
            PREFECT_API_LOST_AFTER_SECONDS=str(API_LOST_AFTER),
        )
        with holding(pg_url, "LOCK TABLE sales IN EXCLUSIVE MODE"), cli(tmp_path, env) as run:
            wait_for(
                lambda: blocked_etl_backends(admin, db, "%INSERT INTO%sales (%"),
                START_WAIT,
                "the load to wait for the locked table",
                run,
            )
            killed = time.monotonic()
            os.killpg(process.pid, signal.SIGKILL)  # the server and its uvicorn child
            # Without the guard the load would wait for the lock, held until after the CLI.
            run.proc.wait(timeout=API_LOST_AFTER + 120)
            print(f"failed {time.monotonic() - killed:.1f} s after the API server was killed")
            wait_for(lambda: not etl_backends(admin, db), 10, "no backend")
        admin.dispose()
        stderr = run.stderr
        assert run.proc.returncode == 1, stderr[-3000:]
        cause = f"Prefect's API server ({server.api_url}) stopped answering for {API_LOST_AFTER} s"
        [line] = [line for line in stderr.splitlines() if " failed: " in line]
        assert line.startswith(f"Daily Sales ETL {DAY} failed: {cause} during the load; ")
        assert line.endswith("so a rerun is safe")
        assert_newest_ledger_row_is_the_stop(pg_url, f"stopped: {cause} during the load")
        assert row_counts(pg_url) == (0, 0)
        assert_nothing_left(run)
    with serve_demo_api(DATA) as api:  # the rerun, on the suite's Prefect API
        rerun(monkeypatch, pipeline_env(api.url, str(lake), pg_url))
    assert contents(pg_url) == reference


def pool_workers_of(pid: int) -> list[int]:
    """The process pool's workers (multiprocessing ``spawn`` children) of process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def closed_port_url() -> str:
    return f"http://127.0.0.1:{postgres.free_port()}"
