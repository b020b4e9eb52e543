"""The embedded PostgreSQL server: start, attach, stop, killed users, stale pid files, races."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from devharness.embedded_postgres import (
    RELOCATED_ROOT,
    EmbeddedPostgresError,
    _postmaster,
    _socket_dir,
    embedded_postgres,
)
from tests import postgres
from tests.utils import REPO, query

HELPER = [sys.executable, "-m", "devharness.embedded_postgres"]
# A process that uses the server: prints its postmaster pid, then holds it until killed or done.
HOLDER = """
import sys, time
from devharness.embedded_postgres import embedded_postgres, _postmaster
with embedded_postgres(sys.argv[1]) as server:
    print(_postmaster(server.pgdata).pid, server.started_here, flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with postgres.reachable_tmp_dir() as root:
        yield root / "postgres"


def server_pid(data_dir: Path) -> int | None:
    """The pid of the live postmaster of ``data_dir``, or None."""
    running = _postmaster(data_dir / "pgdata")
    if running is None or not psutil.pid_exists(running.pid):
        return None
    if psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE:
        return None
    return running.pid


def hold(data_dir: Path, seconds: float) -> tuple[subprocess.Popen[str], int, bool]:
    """Start a holder process; returns it, the postmaster pid and whether it started the server."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), str(seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, f"the holder exited ({proc.wait()}) before attaching"
    return proc, int(line[0]), line[1] == "True"


def test_first_use_creates_and_starts_a_socket_only_server_then_stops_it(data_dir: Path) -> None:
    with embedded_postgres(data_dir) as server:
        assert server.started_here
        assert server.url == (
            f"postgresql+psycopg2://postgres@/postgres?host={data_dir.absolute() / 'pgdata'}"
        )
        assert (
            query(server.url, "SELECT current_setting('server_version_num')::int / 10000")[0][0]
            == 18
        )
        assert query(server.url, "SHOW listen_addresses")[0][0] == ""  # no TCP at all
        pid = server_pid(data_dir)
        assert pid is not None
    assert server_pid(data_dir) is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # Kept between runs: the second start finds the same cluster and its data.
    with embedded_postgres(data_dir) as server, sa.create_engine(server.url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (n numeric(18,4))"))
        conn.execute(sa.text("INSERT INTO kept VALUES (0.1), (0.2)"))
    with embedded_postgres(data_dir) as server:
        assert str(query(server.url, "SELECT sum(n) FROM kept")[0][0]) == "0.3000"


def test_second_user_attaches_and_the_last_one_out_stops_it(data_dir: Path) -> None:
    proc, pid, started = hold(data_dir, 30)
    try:
        assert started
        with embedded_postgres(data_dir) as server:
            assert not server.started_here
            assert server_pid(data_dir) == pid
            assert query(server.url, "SELECT 1")[0][0] == 1
        assert server_pid(data_dir) == pid, "stopped while the holder still used it"
    finally:
        proc.kill()
        proc.wait()
    with embedded_postgres(data_dir) as server:  # adopts the server the killed holder left
        assert not server.started_here
    assert server_pid(data_dir) is None


def test_two_processes_starting_at_once_share_one_server(data_dir: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), "3"], cwd=REPO, stdout=subprocess.PIPE
    )
    second = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), "3"], cwd=REPO, stdout=subprocess.PIPE
    )
    outs = [p.communicate(timeout=120)[0].decode().split() for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0)
    assert outs[0][0] == outs[1][0], "two servers on one data directory"
    assert sorted(o[1] for o in outs) == ["False", "True"]
    assert server_pid(data_dir) is None


def test_sigkilled_user_leaves_the_server_running_and_the_next_run_adopts_it(
    data_dir: Path,
) -> None:
    proc, pid, _ = hold(data_dir, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert server_pid(data_dir) == pid  # the server runs on, in its own session
    started = time.monotonic()
    with embedded_postgres(data_dir, timeout=30) as server:
        assert not server.started_here
        assert query(server.url, "SELECT 1")[0][0] == 1
    assert time.monotonic() - started < 15  # no lock left behind to wait for
    assert server_pid(data_dir) is None


def test_sigkilled_user_and_server_leave_a_stale_pid_file_that_is_recovered(
    data_dir: Path,
) -> None:
    proc, pid, _ = hold(data_dir, 60)
    os.kill(proc.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert (data_dir / "pgdata" / "postmaster.pid").exists()
    with embedded_postgres(data_dir) as server:
        assert server.started_here
        assert query(server.url, "SELECT 1")[0][0] == 1
    assert server_pid(data_dir) is None


def test_pid_file_naming_another_live_process_is_stale(data_dir: Path) -> None:
    with embedded_postgres(data_dir):
        pass
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    # A pid reused by another program after a crash (here: this Python process).
    pid_file.write_text(f"{os.getpid()}\n{data_dir}\n0\n5432\n{data_dir}\n\n0 0\nready\n")
    with embedded_postgres(data_dir, timeout=30) as server:
        assert server.started_here
        assert query(server.url, "SELECT 1")[0][0] == 1


def test_psql_helper_queries_the_warehouse(data_dir: Path) -> None:
    done = subprocess.run(
        [*HELPER, "--data-dir", str(data_dir), "psql", "-At", "-c", "SELECT 6 * 7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr
    assert server_pid(data_dir) is None


def test_tcp_port_and_long_paths() -> None:
    with postgres.throwaway_server() as server:
        assert server.url == f"postgresql+psycopg2://postgres@127.0.0.1:{server.port}/postgres"
        assert query(server.url, "SHOW listen_addresses")[0][0] == "127.0.0.1"
    long = Path("/tmp") / ("x" * 120) / "pgdata"
    assert _socket_dir(long, 5432).parent == Path("/tmp")
    assert _socket_dir(Path("/srv/pg"), 5432) == Path("/srv/pg")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_an_unreachable_folder_keeps_the_cluster_where_the_server_user_can_go(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    data_dir = private / "postgres"
    home = RELOCATED_ROOT / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    try:
        with embedded_postgres(data_dir) as server:
            assert server.started_here
            assert server.pgdata == home / "pgdata"
            assert server.bin_dir.is_relative_to(RELOCATED_ROOT)
            assert query(server.url, "SELECT current_setting('data_directory')")[0][0] == str(
                home / "pgdata"
            )
            with sa.create_engine(server.url).begin() as conn:
                conn.execute(sa.text("CREATE TABLE kept (x int)"))
        assert server_pid(data_dir) is None  # stopped when the last user left
        assert (data_dir / "pgdata").resolve() == home / "pgdata"
        with embedded_postgres(data_dir) as server:  # the data is kept between uses
            assert query(server.url, "SELECT count(*) FROM kept")[0][0] == 0
        assert oct(private.stat().st_mode & 0o777) == "0o700"  # never chmodded behind our back
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_a_cluster_made_before_the_folder_became_private_is_not_hidden(
    tmp_path: Path,
) -> None:
    with postgres.reachable_tmp_dir() as root:
        data_dir = root / "project" / "postgres"
        data_dir.parent.mkdir()
        with embedded_postgres(data_dir):
            pass
        data_dir.parent.chmod(0o700)
        with (
            pytest.raises(EmbeddedPostgresError, match=r"no longer can: run `chmod o\+x "),
            embedded_postgres(data_dir),
        ):
            pass
