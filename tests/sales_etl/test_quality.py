"""The quality verdict on a day's reject rate (pure)."""

from __future__ import annotations

from sales_etl.quality import judge_reject_rate
from sales_etl.settings import QualityConfig
from tests.utils import DAY

CONFIG = QualityConfig(max_reject_rate=0.05, relative_factor=3, baseline_days=7, fail_rate=0.5)


def test_a_usual_rate_is_fine() -> None:
    verdict = judge_reject_rate(DAY, 0.01, 0.01, CONFIG)
    assert (verdict.degraded, verdict.reasons, verdict.failure) == (False, (), None)


def test_no_records_no_verdict() -> None:
    assert not judge_reject_rate(DAY, None, 0.2, CONFIG).degraded


def test_above_the_absolute_threshold() -> None:
    verdict = judge_reject_rate(DAY, 0.06, None, CONFIG)
    assert verdict.reasons == ("reject rate 6.00% is above 5.00%",)
    assert verdict.failure is None


def test_above_three_times_the_median_of_the_previous_days() -> None:
    verdict = judge_reject_rate(DAY, 0.031, 0.01, CONFIG)
    assert verdict.reasons == (
        "reject rate 3.10% is above 3 x the median 1.00% of the previous 7 loaded days",
    )
    assert not judge_reject_rate(DAY, 0.03, 0.01, CONFIG).degraded
    # A zero baseline has no relative threshold: the absolute one still applies.
    assert not judge_reject_rate(DAY, 0.02, 0.0, CONFIG).degraded


def test_above_the_hard_limit_the_run_fails() -> None:
    verdict = judge_reject_rate(DAY, 0.6, 0.01, CONFIG)
    assert len(verdict.reasons) == 2
    assert verdict.failure is not None
    assert verdict.failure.startswith(
        "reject rate 60.00% of 2026-11-23 is above the hard limit 50.00%"
    )
