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


def default_business_date(now: datetime | None = None) -> date:
    """Yesterday in UTC: the last complete day."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.date() - timedelta(days=1)


def scheduled_business_date(scheduled: datetime) -> date:
    """The business day of a deployment run scheduled at ``scheduled``.

    Hourly runs re-load the current UTC day (idempotently, so each one refreshes it); the run
    scheduled in the first hour after midnight (00:00-00:59 UTC) loads the previous day once more,
    with its complete data, and so closes it. The next run (01:00) starts on the new day.
    """
    moment = scheduled.astimezone(UTC)
    if moment.time() < CLOSE_PREVIOUS_DAY_BEFORE:
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
