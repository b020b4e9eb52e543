"""SIGTERM and Ctrl-C on the command line: stop at once, cancel SQL in flight, leave no process.

Two things go wrong when ``python -m flows.daily_sales`` is stopped with ``SIGTERM`` and nothing
is done about it:

- Prefect marks the run Crashed and then re-sends the signal to the process's previous handler,
  Python's default, which ends the process on the spot: ``atexit`` never runs, so the ephemeral
  API server that the run started (a child process) is left behind as an orphan.
- A Python signal handler only runs between bytecodes of the main thread. While the main thread
  waits in libpq for a long statement (a load waiting on a lock, a slow upsert), the signal is
  not even seen until PostgreSQL answers, minutes later.

:func:`graceful_termination` makes ``SIGTERM`` unwind the process like ``sys.exit(143)`` (so
``atexit`` stops the ephemeral server), and watches the signal from a helper thread through
``signal.set_wakeup_fd``, which is written by the C-level handler the moment the signal arrives:
that thread asks PostgreSQL to cancel the statements in flight on every open psycopg2 connection
(libpq's cancel request, the same as ``pg_cancel_backend``), so the main thread gets its answer
at once and the signal's exception follows.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import sqlalchemy as sa

_WATCHED = {signal.SIGTERM, signal.SIGINT}


class _OpenConnections:
    """Every DBAPI connection SQLAlchemy's pools open in this process, weakly held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "cancel"):  # psycopg2; SQLite has nothing to cancel
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


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def graceful_termination() -> Iterator[None]:
    """Within the block, SIGTERM cancels SQL in flight and exits (143) through normal unwinding.

    Only in the main thread (signal handlers can be set nowhere else); elsewhere a no-op. The
    previous handlers, wakeup fd and pool listener are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    connections = _OpenConnections()
    sa.event.listen(sa.pool.Pool, "connect", connections.add)
    reader, writer = socket.socketpair()
    reader.setblocking(True)
    writer.setblocking(False)
    previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data or stop.is_set():
                return
            if any(signum in _WATCHED for signum in data):
                connections.cancel_all()

    watcher = threading.Thread(target=watch, name="termination-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous_term)
        signal.set_wakeup_fd(previous_wakeup)
        sa.event.remove(sa.pool.Pool, "connect", connections.add)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        reader.close()
        watcher.join(timeout=5)
