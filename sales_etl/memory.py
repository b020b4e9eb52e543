"""Arrow's allocator for the pipeline's processes: one that hands freed memory back.

pyarrow allocates from mimalloc by default, which keeps freed pages resident: a long-lived
process that streams batch after batch (the extract's parts, the load's clean parts and COPY
chunks) held tens of MB more than it used. Measured on the 945,066 clean rows of a 1M-record
day read batch by batch: peak RSS +81 MB with mimalloc, +27 MB with jemalloc (+55 MB when the
pool is only switched with ``pyarrow.set_memory_pool``, which Arrow's C++ readers and writers do
not all follow); transforming the day's 9 raw parts in one process: 285 MB with mimalloc,
240 MB with jemalloc, in the same time.

Arrow reads its choice once, from ``ARROW_DEFAULT_MEMORY_POOL``, when it first allocates: the
entry points set it before pyarrow is imported (:func:`prefer_returning_allocator`), and the
image sets it for the deployments' flow runs. The part workers and the flow-run processes of a
served deployment inherit it. A value set by the user is kept.

jemalloc itself keeps freed pages for a second before handing them back; a flow returns them
after 20 ms (:func:`return_freed_memory_soon`): reading the rejected parts of a 30%-rejects
day (15,000 rows and 5.5 MB of ``raw_record`` text a part) peaked +64 MB with the default decay
and +30 MB with none, in the same 0.54 s. None at all is not free, though: every batch then
faults its pages in afresh. The load of a 1M-record day took 400k page faults and 3.2 CPU-s in
the pipeline process that way, 91k and 2.3 CPU-s with 20 ms (+14 MB peak), 83k and 2.1 with the
default (benchmarks/RESULTS.md).

What is not Arrow's (numpy arrays, the data of a COPY chunk, a page's bytes) comes from the
C library's malloc. glibc's serves a large block from a mapping of its own, returned when freed,
but after each such free it raises the size it calls large, up to 32 MB: later blocks of a few
MB then come from the heap, which keeps them resident once freed. The flow fixes the threshold
(:func:`map_large_blocks`): a 5M-record day's pipeline process peaked at 368 MB instead of
388-398 MB (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
RETURNING_POOL = "jemalloc"
# How long jemalloc keeps a freed page before handing it back (its default: a second).
RETURN_AFTER_MS = 20
# A block of at least this many bytes gets its own mapping (glibc's initial threshold is 128 KiB).
MMAP_THRESHOLD_BYTES = 256 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def prefer_returning_allocator(environ: MutableMapping[str, str] = os.environ) -> None:
    """Choose jemalloc for Arrow in this process (and its children), unless already chosen;
    call before pyarrow is imported."""
    environ.setdefault(ARROW_POOL_VARIABLE, RETURNING_POOL)


def return_freed_memory_soon() -> None:
    """When Arrow allocates from jemalloc here, have it hand freed pages back soon
    (:data:`RETURN_AFTER_MS`); map large blocks on their own (:func:`map_large_blocks`)."""
    import pyarrow as pa  # here: importing this module must not import pyarrow (see above)

    if pa.default_memory_pool().backend_name == RETURNING_POOL:
        pa.jemalloc_set_decay_ms(RETURN_AFTER_MS)
    map_large_blocks()


def map_large_blocks() -> bool:
    """Have the C library's malloc map every block of :data:`MMAP_THRESHOLD_BYTES` or more on
    its own (and unmap it when freed), whatever was freed before; False where it cannot (a C
    library without glibc's ``mallopt``: macOS)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


_GC_LOCK = threading.Lock()
_gc_pausers = 0


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (refcounting still frees memory) for the block.

    Parsed JSON is many small dicts and strings without reference cycles (a transform chunk:
    ~1.2 million; an extracted page: ~60,000); with the collector on, every few hundred
    allocations trigger a generation scan that walks them again, and now and then the whole
    heap (parse + validate of 100k records: 1.5 s -> 0.93 s with it paused, measured side by
    side; the extract of a 1M-record day spent 0.56 s in the collector in a flow's process).
    The caller collects the cycles made meanwhile (pandas' and the HTTP client's internals) from
    time to time (``gc.collect(1)``: the young generations only); the collector runs again when
    the last concurrent user (a backfill runs days in threads) leaves.
    """
    global _gc_pausers
    with _GC_LOCK:
        if _gc_pausers == 0:
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pausers -= 1
            if _gc_pausers == 0:
                gc.enable()
