"""Business dates: which day a run loads, and the day ranges of backfills and the days view.

Pure functions of their arguments: the clock is read by the caller (the flow), never here.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time

# A deployment run scheduled before this UTC time of day closes the previous day instead.
CLOSE_PREVIOUS_DAY_BEFORE = dt_time(1, 0)
# The longest date range a backfill or a ledger query accepts (ten years).
MAX_RANGE_DAYS = 3660
# The sane window of business days: nothing before this day, nothing more than a year ahead
# (even with ``allow_future``). Outside it a date is a typo, refused before any work.
EARLIEST_BUSINESS_DATE = date(2000, 1, 1)
LATEST_FUTURE_DAYS = 366


def default_business_date(now: datetime | None = None) -> date:
    """Yesterday in UTC: the last complete day."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.date() - timedelta(days=1)


def closes_previous_day(scheduled: datetime) -> bool:
    """True for a run scheduled in the first hour after midnight UTC: it closes the previous
    day (loads it whole, once more) instead of starting the new one."""
    return scheduled.astimezone(UTC).time() < CLOSE_PREVIOUS_DAY_BEFORE


def run_business_date(
    run_date: date | None, scheduled: datetime | None, now: datetime | None = None
) -> date:
    """The business day a run processes: ``run_date`` when given; else the day of a
    deployment run's ``scheduled`` start (:func:`scheduled_business_date`: never ``now``, so a
    late run still loads the day it was scheduled for); else yesterday (UTC)."""
    if run_date is not None:
        return run_date
    if scheduled is not None:
        return scheduled_business_date(scheduled)
    return default_business_date(now)


def scheduled_business_date(scheduled: datetime) -> date:
    """The business day of a deployment run scheduled at ``scheduled``.

    Hourly runs re-load the current UTC day (idempotently, so each one refreshes it); the run
    scheduled in the first hour after midnight (00:00-00:59 UTC) loads the previous day once more,
    with its complete data, and so closes it. The next run (01:00) starts on the new day.
    """
    moment = scheduled.astimezone(UTC)
    if closes_previous_day(moment):
        return moment.date() - timedelta(days=1)
    return moment.date()


def days_between(start: date, end: date, max_days: int = MAX_RANGE_DAYS) -> list[date]:
    """Every day from ``start`` to ``end``, both included (at most ``max_days``)."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    count = (end - start).days + 1
    if count > max_days:
        raise ValueError(f"{count} days is more than {max_days}; split the range")
    return [start + timedelta(days=offset) for offset in range(count)]


def day_closes_at(day: date) -> datetime:
    """The moment ``day`` is over: midnight UTC at the start of the next day."""
    return datetime.combine(day + timedelta(days=1), dt_time(0, 0), tzinfo=UTC)


def date_argument(text: str) -> date:
    """An argparse ``type`` for YYYY-MM-DD options (shared by every CLI of the project)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def business_date_problem(day: date, today: date, allow_future: bool = False) -> str | None:
    """Why ``day`` cannot be a business day when it is ``today`` (UTC), or None.

    A day after today is refused unless ``allow_future``: a real source has nothing for it yet,
    and the ledger would record the empty or partial day as loaded, so a backfill of the
    missing days would skip it later. Days outside the sane window are refused always.
    """
    latest = today + timedelta(days=LATEST_FUTURE_DAYS)
    if day < EARLIEST_BUSINESS_DATE or day > latest:
        return (
            f"{day} is outside the sane window {EARLIEST_BUSINESS_DATE}..{latest}: "
            "check the date (YYYY-MM-DD)"
        )
    if day > today and not allow_future:
        return (
            f"{day} is in the future (today is {today} UTC): the source has no complete data "
            "for it yet"
        )
    return None
