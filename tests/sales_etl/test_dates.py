"""The business-date rules (pure)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from sales_etl.dates import (
    closes_previous_day,
    date_argument,
    day_closes_at,
    days_between,
    default_business_date,
    run_business_date,
    scheduled_business_date,
)


def test_default_business_date_is_yesterday_utc() -> None:
    assert default_business_date(datetime(2026, 11, 25, 0, 5, tzinfo=UTC)) == date(2026, 11, 24)
    # 23:30 on the 24th at UTC-05:00 is already the 25th in UTC.
    late = datetime(2026, 11, 24, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert default_business_date(late) == date(2026, 11, 24)


@pytest.mark.parametrize(
    ("scheduled", "day"),
    [
        (datetime(2026, 11, 24, 0, 0, tzinfo=UTC), date(2026, 11, 23)),  # closes yesterday
        (datetime(2026, 11, 24, 0, 59, 59, tzinfo=UTC), date(2026, 11, 23)),
        (datetime(2026, 11, 24, 1, 0, tzinfo=UTC), date(2026, 11, 24)),  # today from 01:00
        (datetime(2026, 11, 24, 23, 0, tzinfo=UTC), date(2026, 11, 24)),
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), date(2026, 12, 31)),
        # Another offset is converted to UTC first: 01:30+02:00 is 23:30 UTC the day before.
        (datetime(2026, 11, 24, 1, 30, tzinfo=timezone(timedelta(hours=2))), date(2026, 11, 23)),
    ],
)
def test_scheduled_business_date(scheduled: datetime, day: date) -> None:
    assert scheduled_business_date(scheduled) == day


def test_a_day_of_hourly_runs_loads_each_day_and_closes_it_once() -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)
    days = [scheduled_business_date(start + timedelta(hours=h)) for h in range(48)]
    assert days.count(date(2026, 11, 23)) == 1  # the 00:00 run of the 24th
    assert days.count(date(2026, 11, 24)) == 24  # 01:00..23:00 and the closing 00:00 run
    assert days[0] == date(2026, 11, 23) and days[24] == date(2026, 11, 24)


def test_the_closing_run_is_the_one_that_loads_the_previous_day() -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)
    for hour in range(24):
        scheduled = start + timedelta(hours=hour, minutes=30)
        closing = scheduled_business_date(scheduled) < scheduled.date()
        assert closes_previous_day(scheduled) is closing is (hour == 0)


def test_a_runs_business_date_explicit_then_scheduled_then_yesterday() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    scheduled = datetime(2026, 11, 20, 0, 10, tzinfo=UTC)  # a late closing run
    assert run_business_date(date(2026, 1, 2), scheduled, now) == date(2026, 1, 2)
    assert run_business_date(None, scheduled, now) == date(2026, 11, 19)  # never from now
    assert run_business_date(None, None, now) == date(2026, 11, 24)


def test_days_between_includes_both_ends_and_checks_the_range() -> None:
    assert days_between(date(2026, 2, 27), date(2026, 3, 1)) == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
    ]
    assert days_between(date(2026, 3, 1), date(2026, 3, 1)) == [date(2026, 3, 1)]
    with pytest.raises(ValueError, match="before start"):
        days_between(date(2026, 3, 2), date(2026, 3, 1))
    with pytest.raises(ValueError, match="more than 3660; split the range"):
        days_between(date(2016, 1, 1), date(2026, 12, 31))
    with pytest.raises(ValueError, match="3 days is more than 2"):
        days_between(date(2026, 3, 1), date(2026, 3, 3), max_days=2)


def test_a_day_closes_at_midnight_utc_after_it() -> None:
    assert day_closes_at(date(2026, 12, 31)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_date_argument() -> None:
    assert date_argument("2026-11-23") == date(2026, 11, 23)
    with pytest.raises(argparse.ArgumentTypeError, match=r"not a date \(YYYY-MM-DD\): '23/11'"):
        date_argument("23/11")
