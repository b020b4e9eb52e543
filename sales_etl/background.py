"""One background thread beside a loop, so the loop's waiting and its CPU work overlap.

* :func:`prefetched`: the items of an iterator, made by the thread ahead of the consumer (the
  load's CSV chunks are formatted while the previous one is COPYed);
* :class:`Behind`: items handed to a function that the thread runs behind the producer (the
  extract's pages are compressed into the lake while the next page is requested).

Either way the thread is the one place that runs the work it was given: what it shares with the
caller is read only after it is done.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


def prefetched(items: Iterator[_T], depth: int, name: str = "prefetch") -> Iterator[_T]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    An exception in the producer is raised here; a consumer that stops early stops it.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(("item", item))
            slots.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            slots.put(("error", exc))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        worker.join()


class _End:
    """What :meth:`Behind.__exit__` puts after the last item."""


class Behind(Generic[_T]):
    """``consume(item)`` for each item :meth:`put`, in order, on a background thread at most
    ``depth`` items behind the caller::

        with Behind(writer.add) as behind:
            for page in pages:  # the next page is fetched while the thread writes this one
                behind.put(page)

    Leaving the block waits until every item put is consumed (a few items: the caller is never
    further ahead than ``depth``), also when it is left by an exception or Ctrl-C, so what
    ``consume`` updated is complete afterwards. An exception of ``consume`` is raised by the
    next :meth:`put`, or when the block ends; the items after it are not consumed.
    """

    def __init__(self, consume: Callable[[_T], object], depth: int = 1, name: str = "behind"):
        self._consume = consume
        self._slots: queue.Queue[_T | _End] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Behind[_T]:
        self._thread.start()
        return self

    def put(self, item: _T) -> None:
        """Hand ``item`` over; waits while ``depth`` items are already waiting."""
        self._raise_error()
        self._slots.put(item)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._slots.put(_End())
        self._thread.join()
        if kind is None:
            self._raise_error()

    def _run(self) -> None:
        while not isinstance(item := self._slots.get(), _End):
            if self._error is None:
                try:
                    self._consume(item)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
