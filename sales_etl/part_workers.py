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
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import CleanParts
from sales_etl.transform import RawPart, transform_part

_PR_SET_PDEATHSIG = 1


def _start_worker() -> None:
    """In each worker: leave Ctrl-C to the parent, and die with it (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ready() -> bool:
    return True


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
        # so their imports overlap whatever the flow does before its first part.
        self._warming: list[Future[bool]] = [self._pool.submit(_ready) for _ in range(workers)]

    def transform(self, lake: LakeConfig, part: RawPart, chunk_records: int) -> CleanParts:
        """Transform ``part`` in a worker; blocks the calling thread until it is done.

        A worker that died (killed, out of memory) breaks the pool: it raises
        ``BrokenProcessPool`` and is no longer shared, so the task's retry gets a new one.
        """
        try:
            return self._pool.submit(_transform, lake, part, chunk_records).result()
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
    for pool in pools:
        pool.close()
