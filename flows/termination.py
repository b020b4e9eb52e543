"""Stopping a command-line run: Ctrl-C and SIGTERM end it in seconds and leave nothing running.

What goes wrong when ``python -m flows.daily_sales`` is stopped and nothing is done about it:

- Ctrl-C reaches every process of the terminal's foreground process group. Prefect's temporary
  (ephemeral) API server is a child in that group: it dies of the same Ctrl-C, and the CLI then
  loops on ``EventsWorker ... Unable to connect`` instead of ending.
- A ``SIGKILL`` of the CLI leaves that server running, reparented to PID 1 (~280 MB each).
- A Python signal handler only runs between bytecodes of the main thread: while the main thread
  waits in libpq for a long statement, the signal is not even seen until PostgreSQL answers; and
  a process pool's shutdown waits for the parts in flight (~30 s), past Kubernetes' grace period.

What this module does (:func:`stoppable_run`, used by :mod:`flows.cli`):

- :func:`shielded_api` starts Prefect's temporary server itself, in its own session (the
  terminal's Ctrl-C never reaches it) and tied to the CLI's life by ``PR_SET_PDEATHSIG`` (the
  kernel sends it SIGTERM when the CLI dies, even by SIGKILL). The run, and the process pool's
  workers, use it through ``PREFECT_API_URL``: no worker starts a server of its own.
- :func:`graceful_termination` makes SIGTERM unwind the process like ``sys.exit(143)`` and Ctrl-C
  like ``KeyboardInterrupt``; a helper thread woken by ``signal.set_wakeup_fd`` (written by the
  C-level handler the moment a signal arrives) cancels the SQL in flight on every open psycopg2
  connection (libpq's cancel request) and stops the process pool's workers, so the main thread
  gets its answer at once.
- :func:`orchestrator_guard` watches the run's Prefect API (:class:`ApiWatch`): that temporary
  server's process, or a configured ``PREFECT_API_URL``'s ``/health`` (a brief blip is tolerated,
  ``PREFECT_API_LOST_AFTER_SECONDS``). When it is lost mid-run, the run is stopped the same way
  (nothing is committed after the orchestrator is gone) and the process exits 1 with one line,
  instead of retrying quietly against an API that does not answer.

The run itself records a stopped day as failed in the ledger (see ``flows.daily_sales``).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

import sqlalchemy as sa

SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
_WATCHED = set(SIGNAL_NAMES)
LOST_API_EXIT = 1
LOST_API_GRACE_SECONDS = 8.0  # the run's own unwinding (its ledger row) before a hard exit
API_LOST_AFTER_SETTING = "PREFECT_API_LOST_AFTER_SECONDS"
DEFAULT_API_LOST_AFTER_SECONDS = 30.0  # a configured API may be silent this long (a restart)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The temporary API server's start-up allowance, at least: its first start in a new
# PREFECT_HOME runs Prefect's database migrations (~21 s seen on a busy 2-core machine, past
# Prefect's default 20 s). prefect.toml says the same to Prefect's own commands, but Prefect
# reads that file from the working directory, and the CLI runs from any folder.
EPHEMERAL_STARTUP_SECONDS = 120
# Launches of the temporary server that exit at start-up (uvicorn's exit 3): Prefect takes each
# for a taken port and tries another, until its start-up allowance is spent, a traceback each
# time; the second means the server itself cannot start (its database, its PREFECT_HOME).
_FAILED_LAUNCHES_ALLOWED = 1
SERVER_LOG_NAME = "temporary-server.log"
_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d")  # a logging line: "12:00:00.000 | ERROR | ..."


class OrchestratorLost(BaseException):
    """Raised in the main thread when Prefect's API server died under the run."""


@dataclass
class StopReport:
    """What stopped the run, in which stage, and what was stopped with it."""

    signum: int | None = None
    stage: str = "start-up"
    statements_cancelled: int = 0
    workers_stopped: int = 0
    api_lost: str | None = None  # the URL of the lost API
    api_lost_as: str = "died"  # what happened to it, for the stop line
    label: str = "the run"  # what the stop line names: "Daily Sales ETL 2026-11-23"
    connections: _OpenConnections | None = field(default=None, repr=False)

    @property
    def cause(self) -> str:
        if self.api_lost is not None:
            return f"Prefect's API server ({self.api_lost}) {self.api_lost_as}"
        return SIGNAL_NAMES.get(self.signum or 0, f"signal {self.signum}")

    def exit_code(self) -> int:
        return LOST_API_EXIT if self.api_lost is not None else 128 + (self.signum or 0)

    def line(self, label: str | None = None) -> str:
        """The one line the CLI prints when a run is stopped."""
        label = label or self.label
        verb = "failed" if self.api_lost is not None else "stopped"
        return (
            f"{label} {verb}: {self.cause} during the {self.stage}; "
            f"{self.statements_cancelled} SQL statement(s) cancelled, "
            f"{self.workers_stopped} pool worker(s) stopped; nothing was committed for the "
            "stopped stage (an open load is rolled back), so a rerun is safe"
        )


_report: StopReport | None = None  # the run under stoppable_run, for note_stage and the flow


def note_stage(stage: str) -> None:
    """Say which stage the run is in (extract, transform, load): the stop line names it."""
    if _report is not None:
        _report.stage = stage


def stop_signal(exc: BaseException) -> int | None:
    """The signal that ``exc`` is the unwinding of: ``KeyboardInterrupt`` (SIGINT), our
    ``SystemExit(143)`` and Prefect's ``TerminationSignal`` (its own SIGTERM handler inside a flow
    run); None for anything else."""
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, TerminationSignal):
        return int(exc.signal)
    if isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
        return signal.SIGTERM
    return None


def stop_reason(exc: BaseException) -> str | None:
    """The ledger message of a run that is being stopped (a signal arrived, its API is gone),
    whatever exception the stop surfaced as (a ``KeyboardInterrupt`` raised inside a library's
    callback may come out wrapped in that library's error); None when it is not a stop."""
    report = _report
    if report is not None and (report.signum is not None or report.api_lost is not None):
        return f"stopped: {report.cause} during the {report.stage}"
    if isinstance(exc, OrchestratorLost):
        return f"stopped: {exc}"
    signum = stop_signal(exc)
    if signum is None:
        return None
    return f"stopped: {SIGNAL_NAMES.get(signum, f'signal {signum}')} during the {_stage()}"


def _stage() -> str:
    return _report.stage if _report is not None else "run"


class _OpenConnections:
    """Every DBAPI connection SQLAlchemy's pools open in this process, weakly held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "cancel"):  # psycopg2
            with self._lock:
                self._connections.add(dbapi_connection)

    def cancel_all(self) -> int:
        """Ask the server to cancel what each connection is running; returns how many asked."""
        with self._lock:
            connections = list(self._connections)
        asked = 0
        for connection in connections:
            if getattr(connection, "closed", 1):
                continue
            try:
                connection.cancel()  # thread-safe in libpq: a separate cancel request
                asked += 1
            except Exception as exc:  # one broken connection must not keep the others running
                print(f"could not cancel a statement in flight: {exc}", file=sys.stderr)
        return asked


def pool_workers() -> list[int]:
    """Pids of this process's multiprocessing pool workers (``spawn`` children), Linux only."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != me:
                continue
            if b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def stop_pool_workers() -> int:
    """SIGTERM this process's pool workers (their parts are discarded); returns how many."""
    stopped = 0
    for pid in pool_workers() if sys.platform == "linux" else []:
        try:
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        except ProcessLookupError:
            continue
    return stopped


def _signal_handler(report: StopReport) -> Any:
    """SIGINT: ``KeyboardInterrupt``; SIGTERM: ``SystemExit(143)``; either noted in ``report``."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        report.signum = report.signum or signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    return handle


def _raise_lost(_signum: int, _frame: FrameType | None) -> None:
    detail = _report.cause if _report is not None else "Prefect's API server died"
    raise OrchestratorLost(detail)


@contextmanager
def graceful_termination(report: StopReport | None = None) -> Iterator[StopReport]:
    """Within the block, SIGTERM and Ctrl-C cancel SQL in flight, stop the pool workers and
    unwind the main thread (``SystemExit(143)``, ``KeyboardInterrupt``).

    Only in the main thread (signal handlers can be set nowhere else); elsewhere a no-op. The
    previous handlers, wakeup fd and pool listener are restored on exit.
    """
    current = report or StopReport()
    if threading.current_thread() is not threading.main_thread():
        yield current
        return
    connections = _OpenConnections()
    sa.event.listen(sa.pool.Pool, "connect", connections.add)
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    handler = _signal_handler(current)
    handlers = {signal.SIGTERM: handler, signal.SIGINT: handler, signal.SIGUSR1: _raise_lost}
    previous = {signum: signal.signal(signum, new) for signum, new in handlers.items()}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_wakeups,
        args=(reader, stop, current, connections),
        name="termination-watcher",
        daemon=True,
    )
    watcher.start()
    current.connections = connections
    try:
        yield current
    finally:
        stop.set()
        current.connections = None
        for signum, old in previous.items():
            signal.signal(signum, old)
        signal.set_wakeup_fd(previous_wakeup)
        sa.event.remove(sa.pool.Pool, "connect", connections.add)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        reader.close()
        watcher.join(timeout=5)


def _watch_wakeups(
    reader: socket.socket, stop: threading.Event, report: StopReport, connections: _OpenConnections
) -> None:
    """The watcher thread: a watched signal's number on the wakeup socket halts the run at once
    (cancels its SQL, stops the pool's workers), even while the main thread is blocked in C."""
    while not stop.is_set():
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data or stop.is_set():
            return
        watched = [signum for signum in data if signum in _WATCHED]
        if watched:
            report.signum = report.signum or watched[0]
            halt(report, connections)


def halt(report: StopReport, connections: _OpenConnections | None = None) -> None:
    """Cancel the SQL in flight and stop the pool workers (any thread; counts into ``report``)."""
    chosen = connections or report.connections
    if chosen is not None:
        report.statements_cancelled += chosen.cancel_all()
    report.workers_stopped += stop_pool_workers()


# -- Prefect's temporary API server: shielded from Ctrl-C, never outliving the CLI ----------------


def _parent_death_signal() -> Any:
    """``prctl(PR_SET_PDEATHSIG, SIGTERM)`` bound before the fork (None off Linux)."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl


def shielded_popen(
    args: list[str], env: dict[str, str], output: IO[bytes] | None = None
) -> subprocess.Popen[Any]:
    """Popen in a new session (no terminal Ctrl-C), dying with this process (PDEATHSIG); its
    stdout and stderr go to ``output`` when given, else to this process's."""
    prctl = _parent_death_signal()
    parent = os.getpid()

    def in_child() -> None:  # runs between fork and exec, in the child
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    # preexec_fn: prctl must run in the child; the CLI's main thread starts it before any pool.
    return subprocess.Popen(  # noqa: S603
        args,
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
        preexec_fn=in_child,
    )


def server_log_path() -> Path:
    """Where the temporary API server writes its output: ``$PREFECT_HOME/temporary-server.log``
    (its errors only; on the terminal they would bury the run's one line)."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home) / SERVER_LOG_NAME


def _shielded_server_class() -> type[Any]:
    """Prefect's ``SubprocessASGIServer`` with the server started by :func:`shielded_popen`,
    its output in :func:`server_log_path`, and given up on (:class:`ApiStartError`) once it has
    exited at start-up twice."""
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class ShieldedServer(SubprocessASGIServer):
        failed_launches = 0
        log_start = 0  # the log's size when the server was launched

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            log = server_log_path()
            previous = getattr(self, "server_process", None)
            if previous is not None and previous.poll() is not None:  # Prefect relaunches it
                self.failed_launches += 1
                if self.failed_launches > _FAILED_LAUNCHES_ALLOWED:
                    error = (
                        f"{_last_error(log, self.log_start)}; its log: {log}"
                        if log.is_file()
                        else "its output is above"
                    )
                    raise ApiStartError(
                        "Prefect's temporary API server exited while starting "
                        f"({error}; exit code {previous.returncode}, {self.failed_launches} "
                        "times): check PREFECT_HOME and PREFECT_API_DATABASE_CONNECTION_URL, or "
                        "set PREFECT_API_URL to a running Prefect server"
                    )
            # Prefect 3's own command (prefect/server/api/server.py), in a shielded process.
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            args = [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(prefect.__module_path__.parent),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ]  # fmt: skip
            env = {
                **os.environ,
                **server_env,
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                output = log.open("ab")  # appended: runs may share a PREFECT_HOME
            except OSError:  # a PREFECT_HOME this user cannot write: on the terminal, then
                return shielded_popen(args, env)
            with output:
                self.log_start = output.tell()
                return shielded_popen(args, env, output)

    return ShieldedServer


def _last_error(log: Path, start: int) -> str:
    """The last error line the server wrote to ``log`` after ``start``: the exception's own
    line, after its traceback (not the log lines, nor the traceback's indented frames)."""
    try:
        with log.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "its log cannot be read"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line[0].isspace() and not _LOG_LINE.match(line)
    ]
    return lines[-1][:300] if lines else "no error written"


class ApiStartError(RuntimeError):
    """Prefect's temporary API server could not start: no run was started."""


def ephemeral_startup_seconds() -> int:
    """How long the temporary API server may take to start: Prefect's setting
    (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``), at least
    :data:`EPHEMERAL_STARTUP_SECONDS`."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    configured = int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    return max(configured, EPHEMERAL_STARTUP_SECONDS)


@contextmanager
def shielded_api() -> Iterator[Any]:
    """Start Prefect's temporary API server (when no ``PREFECT_API_URL`` is set) shielded and
    tied to this process, and point this process and its children at it; yields the server,
    or None when an API is configured. The server is stopped at exit, after Prefect has sent
    its last logs and events."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
        temporary_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        yield None
        return
    server = _shielded_server_class()()  # registered as Prefect's default temporary server
    # Registers its own stop with atexit, after Prefect's drains.
    server.start(timeout=ephemeral_startup_seconds())
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # the process pool's workers inherit it
    try:
        # No flow-run heartbeats: they tell a lasting server that a run is still alive, and this
        # one dies with the run. Prefect's sync engine joins the heartbeat thread at the end of
        # every flow run, and that thread sleeps in 1 s steps: up to 1 s a run for nothing.
        updates = {PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        with temporary_settings(updates=updates):
            yield server
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


@dataclass(frozen=True)
class ApiWatch:
    """How :func:`orchestrator_guard` tells that the run's Prefect API is still there."""

    url: str
    alive: Callable[[], bool]
    lost_after: float  # seconds without an answer before the run is failed
    lost_as: str  # what the stop line says happened to it
    interval: float  # seconds between two looks


def server_watch(server: Any) -> ApiWatch:
    """The temporary server of :func:`shielded_api`: lost the moment its process has exited."""
    process = server.server_process
    return ApiWatch(
        server.api_url, lambda: process is None or process.poll() is None, 0.0, "died", 0.5
    )


def remote_watch(url: str) -> ApiWatch:
    """A configured API (``prefect server start`` elsewhere, Prefect Cloud): lost when its
    ``/health`` has not answered for ``PREFECT_API_LOST_AFTER_SECONDS``."""
    lost_after = api_lost_after()
    timeout = min(5.0, lost_after)
    return ApiWatch(
        url,
        lambda: api_answers(url, timeout),
        lost_after,
        f"stopped answering for {lost_after:g} s",
        2.0,
    )


def api_lost_after() -> float:
    """``PREFECT_API_LOST_AFTER_SECONDS`` (default 30): how long a configured API may be silent."""
    from sales_etl.errors import ConfigError

    raw = os.environ.get(API_LOST_AFTER_SETTING, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_API_LOST_AFTER_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{API_LOST_AFTER_SETTING}: expected seconds > 0, got {raw!r}")
    return seconds


def api_answers(url: str, timeout: float) -> bool:
    """``GET <url>/health``, the route Prefect's client checks (``api_healthcheck``), once and
    without the client's retries. Any answer below 500 is a live API (a 401 too); no answer, or
    a proxy's 5xx for a server behind it that is gone, is not."""
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout, verify=_tls())
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def _tls() -> ssl.SSLContext:
    """The TLS checks Prefect's client makes (``SyncPrefectClient.__init__``)."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


def api_watch(server: Any) -> ApiWatch | None:
    """What to watch: the temporary server when the CLI started one, else the configured API."""
    from prefect.settings import PREFECT_API_URL

    if server is not None:
        return server_watch(server)
    url = PREFECT_API_URL.value()
    return remote_watch(str(url)) if url else None


@contextmanager
def orchestrator_guard(api: ApiWatch | None, report: StopReport) -> Iterator[None]:
    """While the block runs, a lost Prefect API stops the run: SQL cancelled, pool workers
    stopped, ``OrchestratorLost`` raised in the main thread; if the run has not unwound within
    :data:`LOST_API_GRACE_SECONDS`, the process exits at once. While the API is silent but not
    yet lost, a commit waits (:func:`_commit_gate`): nothing is committed that the run could
    not record."""
    if api is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    finished, answering = threading.Event(), threading.Event()
    answering.set()
    main = threading.main_thread().ident
    assert main is not None
    gate = _commit_gate(answering, report)

    def watch() -> None:
        answered = time.monotonic()
        while not finished.wait(api.interval):
            if api.alive():
                answered = time.monotonic()
                answering.set()
                continue
            answering.clear()
            if finished.is_set() or time.monotonic() - answered < api.lost_after:
                continue
            report.api_lost, report.api_lost_as = api.url, api.lost_as
            # The signal first, as for SIGTERM: pending when the cancelled statement returns, it
            # unwinds the run before the load can record the cancel as its own failure.
            signal.pthread_kill(main, signal.SIGUSR1)
            halt(report)
            if not finished.wait(LOST_API_GRACE_SECONDS):
                hard_exit(report)
            return

    watcher = threading.Thread(target=watch, name="orchestrator-guard", daemon=True)
    watcher.start()
    sa.event.listen(sa.engine.Engine, "commit", gate)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "commit", gate)
        answering.set()  # the run is over: no commit of another thread is left waiting
        finished.set()
        watcher.join(timeout=2)


def _commit_gate(answering: threading.Event, report: StopReport) -> Callable[[Any], None]:
    """A listener of every SQLAlchemy commit: while the API does not answer, the commit waits;
    it goes on when the API answers again, and is refused (the transaction rolls back) when the
    API is lost meanwhile. Once the API is lost, commits go on: the run recording its stop (the
    ledger's ``failed`` row), as where the API was never watched."""

    def hold(_connection: Any) -> None:
        if report.api_lost is not None:
            return
        while not answering.wait(0.2):
            if report.api_lost is not None:
                raise OrchestratorLost(f"{report.cause}: a commit was refused")

    return hold


class _LineTrackingStream:
    """A stream that notes whether the text last written through it ended a line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def line_tracked_stderr() -> Iterator[None]:
    """Within the block, ``sys.stderr`` knows whether its last write ended a line: Prefect's
    API log handler writes an error's text without one when its API is gone, and the run's
    final line (:func:`status_line`) must still start a line of its own."""
    original = sys.stderr
    sys.stderr = _LineTrackingStream(original)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = original


def status_line(text: str) -> None:
    """Print a run's final status line (failed, stopped) on stderr, on a line of its own."""
    if not getattr(sys.stderr, "at_line_start", True):
        text = "\n" + text
    print(text, file=sys.stderr, flush=True)


def hard_exit(report: StopReport) -> None:
    """Print the stop line and end the process now: with its API gone, Prefect's exit-time
    drains of logs and events would only retry against nothing."""
    status_line(report.line())
    sys.stdout.flush()
    os._exit(report.exit_code())


@contextmanager
def stoppable_run(label: str) -> Iterator[StopReport]:
    """The CLI's frame around one flow call: shielded API, signals, lost API, one stop line.

    A stop raises ``SystemExit`` with 130 (Ctrl-C), 143 (SIGTERM) or, when the API was lost, ends
    the process with 1, after printing ``<label> stopped: ...`` on stderr.
    """
    global _report
    report = StopReport(label=label)
    _report = report
    try:
        with ExitStack() as stack:
            stack.enter_context(graceful_termination(report))
            server = stack.enter_context(shielded_api())
            stack.enter_context(orchestrator_guard(api_watch(server), report))
            yield report
    except BaseException as exc:
        signum = stop_signal(exc)
        if signum is None and report.signum is None and report.api_lost is None:
            raise  # not a stop: an error of the CLI itself, someone's sys.exit
        report.signum = report.signum or signum
    finally:
        _report = None
    # Stopped, whether the stop unwound the run or the run ended Failed/Crashed because of it.
    if report.api_lost is not None:
        hard_exit(report)
    if report.signum is not None:
        status_line(report.line())
        raise SystemExit(report.exit_code())
