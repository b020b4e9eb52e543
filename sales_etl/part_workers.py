"""Worker processes for the transform's raw parts: Prefect-free, started once, reused.

Transforming a raw part (:func:`sales_etl.transform.transform_part`) is CPU-bound Python and
Arrow, so on several cores parts run in other processes. Prefect's process task runner gives
each of its workers a Prefect run context, an API client and its own task-run bookkeeping:
measured on a 1M-record day, ~1.8 s to start the pool, ~1-2 s of each worker's Prefect set-up
and ~2 s to shut it down, against ~5 s of work. These workers run only the part's pure function:
the Prefect task stays in the flow's process (a thread that waits for its part), so retries,
states and the UI are unchanged.

The pool is made once per process (:func:`shared_part_workers`) and kept for the next day of a
backfill or the next run of a served deployment; it is closed when the process exits. Workers
use ``spawn`` (no state inherited from a threaded parent), ignore Ctrl-C (the parent decides:
:mod:`flows.termination` stops them with SIGTERM) and die with their parent on Linux.

While the extract lands a day, these workers would idle: :class:`LandedParts` hands them each raw
part as soon as it is in the lake, and the part's ``transform-part`` task later takes the result
(:func:`take_landed`) instead of starting the work. A part is deterministic, so a result made
early is the result the task would make; the clean snapshot is still committed only after the
schema contract is checked.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from datetime import date
from typing import Any

from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import CleanParts
from sales_etl.transform import DEFAULT_CHUNK_RECORDS, RawPart, transform_part

_PR_SET_PDEATHSIG = 1


def _start_worker() -> None:
    """In each worker: leave Ctrl-C to the parent, and die with it (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ready() -> bool:
    return True


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start ``spawn`` children that do not run this process's main module again.

    A spawned child runs the parent's ``__main__`` again (as ``__mp_main__``), so that what is
    defined there can be unpickled; a part worker needs only :mod:`sales_etl`. Under
    ``python -m flows.daily_sales``, ``deployments.serve`` or Prefect's engine that module is the
    flow, Prefect included: two workers started from a parent that had imported the flow spent
    4.9-5.4 CPU-s starting, 2.2-2.4 without it, and the CLI's extract of a 1M-record day, which
    they overlap, took 7.1-7.5 s instead of 6.2-6.8 (workers' peak RSS 287-291 -> 240-242 MB).
    multiprocessing reads the main module's ``__spec__`` and ``__file__`` only when it starts a
    child (``multiprocessing.spawn.get_preparation_data``): they are hidden meanwhile, a few
    milliseconds (a child another thread spawned in that moment would not run it either; the
    project starts no other ``multiprocessing`` children alongside a pool).
    """
    namespace = vars(sys.modules["__main__"])
    saved: dict[str, Any] = {n: namespace[n] for n in ("__spec__", "__file__") if n in namespace}
    namespace["__spec__"] = None
    namespace.pop("__file__", None)
    try:
        yield
    finally:
        namespace.pop("__spec__", None)
        namespace.update(saved)


def _transform(lake: LakeConfig, part: RawPart, chunk_records: int) -> CleanParts:
    with open_lake(lake) as store:
        return transform_part(store, part, chunk_records)


class PartWorkers:
    """``workers`` processes that transform raw parts; started (warmed) when made."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
        )
        # The pool starts a process per submission while none is idle: start them all now,
        # so their imports overlap whatever the flow does before its first part. It never
        # starts another (a worker that dies breaks the pool).
        with _main_module_hidden():
            self._warming: list[Future[bool]] = [self._pool.submit(_ready) for _ in range(workers)]

    def started(self) -> None:
        """Wait until every worker has started (imports done)."""
        for future in self._warming:
            future.result()

    def transform(self, lake: LakeConfig, part: RawPart, chunk_records: int) -> CleanParts:
        """Transform ``part`` in a worker; blocks the calling thread until it is done.

        A worker that died (killed, out of memory) breaks the pool: it raises
        ``BrokenProcessPool`` and is no longer shared, so the task's retry gets a new one.
        """
        return self.wait(self.submit(lake, part, chunk_records))

    def submit(self, lake: LakeConfig, part: RawPart, chunk_records: int) -> Future[CleanParts]:
        """Start transforming ``part`` in a worker (queued while every worker is busy)."""
        try:
            return self._pool.submit(_transform, lake, part, chunk_records)
        except BrokenProcessPool:
            _forget(self)
            raise

    def wait(self, future: Future[CleanParts]) -> CleanParts:
        """The result of a part :meth:`submit` started (its exception, if it failed)."""
        try:
            return future.result()
        except BrokenProcessPool:
            _forget(self)
            raise

    def close(self) -> None:
        """Stop the workers: parts not started are dropped, a part in flight is waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)


_shared: dict[int, PartWorkers] = {}
_shared_lock = threading.Lock()


def shared_part_workers(workers: int) -> PartWorkers:
    """This process's pool of ``workers`` part workers, made (and started) on first use."""
    with _shared_lock:
        pool = _shared.get(workers)
        if pool is None:
            if not _shared:
                atexit.register(close_shared_part_workers)
            pool = _shared[workers] = PartWorkers(workers)
        return pool


def _forget(pool: PartWorkers) -> None:
    with _shared_lock:
        if _shared.get(pool.workers) is pool:
            del _shared[pool.workers]


def close_shared_part_workers() -> None:
    """Close every pool :func:`shared_part_workers` made (at exit, or to start afresh)."""
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    _forget_landed(lambda key: True)
    for pool in pools:
        pool.close()


def running_part_workers() -> PartWorkers | None:
    """The pool of part workers this process has started (the largest), if any."""
    with _shared_lock:
        pools = sorted(_shared.values(), key=lambda pool: pool.workers)
    return pools[-1] if pools else None


_LandedKey = tuple[str, RawPart, int]
_landed: dict[_LandedKey, tuple[PartWorkers, Future[CleanParts]]] = {}
_landed_lock = threading.Lock()


class LandedParts:
    """Starts the transform of each raw part of a snapshot as the extract lands it.

    The extract calls :meth:`landed` after each page (and after the commit, for the last part);
    every part new since the last call is submitted to ``pool``. The ``transform-part`` task of
    the same part, lake and chunk size takes the result (:func:`take_landed`). :meth:`discard`
    drops what no task will take (the extract failed: its snapshot is never committed); a new
    extract of the day in the same lake forgets what an earlier one handed over and no task took
    (a day whose schema contract failed), so nothing accumulates in a long-lived process.
    """

    def __init__(
        self,
        pool: PartWorkers,
        lake: LakeConfig,
        day: date,
        snapshot_id: str,
        chunk_records: int = DEFAULT_CHUNK_RECORDS,
    ) -> None:
        self.pool = pool
        self.lake = lake
        self.day = day
        self.snapshot_id = snapshot_id
        self.chunk_records = chunk_records
        self._keys: list[_LandedKey] = []
        self._first_index = 0
        _forget_landed(lambda key: key[1].day == day and key[0] == lake.url)

    def landed(self, parts: Sequence[str], part_records: Sequence[int]) -> None:
        """Submit the parts (keys and record counts, in order) not submitted yet."""
        for number in range(len(self._keys), len(parts)):
            part = RawPart(
                self.day,
                self.snapshot_id,
                number,
                parts[number],
                self._first_index,
                part_records[number],
            )
            self._first_index += part.records
            key = (self.lake.url, part, self.chunk_records)
            future = self.pool.submit(self.lake, part, self.chunk_records)
            with _landed_lock:
                _landed[key] = (self.pool, future)
            self._keys.append(key)

    def discard(self) -> None:
        """Cancel the parts not started and forget them all (their files stay uncommitted)."""
        keys = set(self._keys)
        for _, future in _forget_landed(keys.__contains__):
            future.cancel()


def take_landed(lake: LakeConfig, part: RawPart, chunk_records: int) -> CleanParts | None:
    """What the part workers made of ``part`` since the extract landed it (waiting for it to
    finish), or None when it was not handed to them. A failure is raised, and forgotten: a
    retry of the task transforms the part afresh."""
    with _landed_lock:
        entry = _landed.pop((lake.url, part, chunk_records), None)
    if entry is None:
        return None
    pool, future = entry
    return pool.wait(future)


def _forget_landed(
    which: Callable[[_LandedKey], bool],
) -> list[tuple[PartWorkers, Future[CleanParts]]]:
    with _landed_lock:
        keys = [key for key in _landed if which(key)]
        return [_landed.pop(key) for key in keys]
