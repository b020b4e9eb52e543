"""The background thread helpers: order, overlap, errors and what a stop leaves."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sales_etl.background import Behind, prefetched

WAIT = 10  # seconds; a thread that does not answer by then is a failure, not a slow machine


def test_behind_consumes_every_item_in_order_on_another_thread() -> None:
    seen: list[tuple[int, str]] = []
    with Behind(lambda item: seen.append((item, threading.current_thread().name))) as behind:
        for item in range(100):
            behind.put(item)
    assert [item for item, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {"behind"}


def test_behind_lets_the_caller_run_ahead_by_depth_items() -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[int] = []

    def slow(item: int) -> None:
        started.set()
        assert release.wait(WAIT)
        seen.append(item)

    with Behind(slow, depth=2) as behind:
        behind.put(0)  # taken by the thread, which waits
        assert started.wait(WAIT)
        behind.put(1)  # the two waiting items: the caller is not held up
        behind.put(2)
        assert seen == []
        release.set()
    assert seen == [0, 1, 2]


def test_an_error_of_consume_is_raised_by_the_next_put_and_stops_consuming() -> None:
    seen: list[int] = []
    failed = threading.Event()

    def consume(item: int) -> None:
        if item == 3:
            failed.set()
            raise OSError("lake is full")
        seen.append(item)

    def produce() -> None:
        with Behind(consume) as behind:
            for item in range(10):
                behind.put(item)
                if item == 3:
                    assert failed.wait(WAIT)

    with pytest.raises(OSError, match="lake is full"):
        produce()
    assert seen == [0, 1, 2]


def test_an_error_of_consume_after_the_last_put_is_raised_when_the_block_ends() -> None:
    def consume(item: int) -> None:
        raise ValueError(f"bad item {item}")

    with pytest.raises(ValueError, match="bad item 0"), Behind(consume) as behind:
        behind.put(0)


def test_leaving_by_an_exception_still_consumes_what_was_put() -> None:
    release = threading.Event()
    seen: list[int] = []

    def slow(item: int) -> None:
        assert release.wait(WAIT)
        seen.append(item)

    def interrupted() -> None:
        with Behind(slow) as behind:
            behind.put(0)
            behind.put(1)
            release.set()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert seen == [0, 1]  # the counts a caller reads afterwards are whole


def test_prefetched_yields_in_order_and_raises_the_producers_error() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise RuntimeError("source lost")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="source lost"):
        got.extend(prefetched(items(), depth=2))
    assert got == list(range(5))


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    made: list[int] = []

    def items() -> Iterator[int]:
        for item in range(1000):
            made.append(item)
            yield item

    for item in prefetched(items(), depth=2):
        if item == 3:
            break
    assert len(made) <= 3 + 1 + 2 + 1  # the consumed, one in hand, the queue, one blocked
