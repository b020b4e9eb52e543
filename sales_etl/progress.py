"""Progress of a long step: records so far, rate, and an estimate of the rest. Pure, no Prefect."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Counts records as they go by; says when a report is due (every ``every_seconds``)."""

    step: str
    expected: int | None = None
    every_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    started: float = field(default=0.0)
    _last_report: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self._last_report = self.clock()

    def add(self, records: int) -> bool:
        """Count ``records`` more; True when a report is due."""
        self.done += records
        now = self.clock()
        if now - self._last_report >= self.every_seconds:
            self._last_report = now
            return True
        return False

    @property
    def rate(self) -> float:
        """Records per second so far."""
        elapsed = self.clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def percent(self) -> float | None:
        if not self.expected:
            return None
        return min(100.0, 100.0 * self.done / self.expected)

    @property
    def seconds_left(self) -> float | None:
        if not self.expected or self.rate <= 0:
            return None
        return max(0.0, (self.expected - self.done) / self.rate)

    def describe(self) -> str:
        """E.g. ``extract: 250,000 of 1,000,000 records (25.0%), 81,000 records/s, ~9 s left``."""
        text = f"{self.step}: {self.done:,}"
        if self.expected:
            text += f" of {self.expected:,} records ({self.percent:.1f}%)"
        else:
            text += " records"
        text += f", {self.rate:,.0f} records/s"
        left = self.seconds_left
        if left is not None:
            text += f", ~{left:.0f} s left"
        return text
