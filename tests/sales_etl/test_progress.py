"""Progress: counts, rate, estimate of the rest, and when a report is due."""

from __future__ import annotations

from sales_etl.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_percent_and_estimate() -> None:
    clock = Clock()
    progress = Progress("extract", expected=1_000_000, every_seconds=5, clock=clock)
    clock.now += 2
    assert progress.add(100_000) is False  # 2 s since the start: not due yet
    clock.now += 3
    assert progress.add(150_000) is True  # 5 s: due
    assert progress.rate == 50_000
    assert progress.percent == 25.0
    assert progress.seconds_left == 15.0
    assert progress.describe() == (
        "extract: 250,000 of 1,000,000 records (25.0%), 50,000 records/s, ~15 s left"
    )
    clock.now += 1
    assert progress.add(1) is False  # the next report is 5 s after the last one


def test_without_an_expected_count() -> None:
    clock = Clock()
    progress = Progress("transform", clock=clock)
    clock.now += 4
    progress.add(400)
    assert (progress.percent, progress.seconds_left) == (None, None)
    assert progress.describe() == "transform: 400 records, 100 records/s"
