"""The quality verdict on a day's reject rate: fine, degraded, or bad enough to fail the run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sales_etl.settings import QualityConfig


@dataclass(frozen=True)
class QualityVerdict:
    """What the reject rate of a load says about the day."""

    day: date
    rate: float | None
    baseline: float | None  # median rate of the previous loaded days
    reasons: tuple[str, ...] = ()
    failure: str | None = None  # set when the rate is above the hard limit

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)


def judge_reject_rate(
    day: date, rate: float | None, baseline: float | None, config: QualityConfig
) -> QualityVerdict:
    """Degraded above ``max_reject_rate`` or above ``relative_factor`` x the baseline median
    (when the baseline is above zero); a failure above ``fail_rate``."""
    if rate is None:
        return QualityVerdict(day, rate, baseline)
    reasons = []
    if rate > config.max_reject_rate:
        reasons.append(f"reject rate {rate:.2%} is above {config.max_reject_rate:.2%}")
    if baseline and rate > baseline * config.relative_factor:
        reasons.append(
            f"reject rate {rate:.2%} is above {config.relative_factor:g} x the median "
            f"{baseline:.2%} of the previous {config.baseline_days} loaded days"
        )
    failure = None
    if rate > config.fail_rate:
        failure = (
            f"reject rate {rate:.2%} of {day} is above the hard limit {config.fail_rate:.2%} "
            "(QUALITY_FAIL_REJECT_RATE); the day was loaded, its rejects are in the warehouse"
        )
    return QualityVerdict(day, rate, baseline, tuple(reasons), failure)
