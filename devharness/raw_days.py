"""Realistic raw days written straight into a lake, at volume: the text an API would send.

About 10% rejects spread over every reason code (the ways and weights of
:data:`devharness.records.BREAKAGES`), 5% duplicates of a sale arriving later as a newer version,
long ids, skewed stores and products, prices and amounts as JSON numbers and as strings, extra
fields, and a few pages with ``NaN`` literals that only the lossless parser reads. A page's sales
are drawn and rendered by :mod:`devharness.records` in one go and written as text by ``orjson``,
so a day of millions is quick to make: the benchmarks' days (``benchmarks/``) and the tests' days
with every reason code. :mod:`devharness.demo_days` is the other plan over the same records: days
served by the demo API, record by record, with revisions over time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date

import numpy as np
import orjson

from devharness.records import VERSION_DELAY, Variety, draw_sales, render, weighted_breakages
from sales_etl.lake import Lake
from sales_etl.snapshots import RawSnapshotWriter, SnapshotRef
from sales_etl.source import Page

RECENT_SALES = 50_000  # how far back a duplicate reaches (the newest sales of the day)
# Python's json.dumps writes NaN for a float nan: only the lossless parser reads it.
_NAN_FIELD = b'"amount_check":NaN,'


def variety(seed: int) -> Variety:
    """What the sales of a raw day draw: a few very busy stores and products, 5% long ids."""
    return Variety(
        seed=seed, stores=400, products=20_000, skew=1.1, long_id_rate=0.05, odd_spellings=True
    )


def realistic_pages(
    day: date,
    records: int,
    *,
    page_size: int = 10_000,
    reject_share: float = 0.10,
    duplicate_share: float = 0.05,
    nan_every_pages: int = 37,
    seed: int = 20261123,
) -> Iterator[tuple[int, bytes]]:
    """(record count, body) of each page of a realistic day of ``records`` records."""
    rng = random.Random(seed)
    drawn_from = variety(seed)
    recent: list[int] = []
    produced = 0
    page_number = 0
    while produced < records:
        count = min(page_size, records - produced)
        numbers, versions = _page_plan(rng, recent, produced, count, duplicate_share)
        ways = _page_breakages(rng, count, reject_share)
        produced += count
        cursor = None if produced >= records else f"c{produced}"
        body = _page_body(day, drawn_from, numbers, versions, ways, cursor)
        if nan_every_pages and page_number % nan_every_pages == nan_every_pages - 1:
            body = _with_nan(body)
        yield count, body
        page_number += 1


def _page_plan(
    rng: random.Random, recent: list[int], first: int, count: int, duplicate_share: float
) -> tuple[list[int], list[int]]:
    """(sale numbers, versions) of the ``count`` records from position ``first`` on: each a new
    sale, or (``duplicate_share`` of them) a later version of a recent sale of the day.
    ``recent`` holds the newest sales' numbers and is updated."""
    numbers: list[int] = []
    versions: list[int] = []
    for position in range(first, first + count):
        if recent and rng.random() < duplicate_share:
            numbers.append(recent[rng.randrange(len(recent))])
            versions.append(2)
        else:
            numbers.append(position)
            versions.append(1)
            recent.append(position)
            if len(recent) > RECENT_SALES:
                del recent[: RECENT_SALES // 2]
    return numbers, versions


def _page_breakages(rng: random.Random, count: int, reject_share: float) -> list[int]:
    """For each of ``count`` records, the way it is broken (index into BREAKAGES, by weight) or
    -1: ``reject_share`` of them are broken."""
    rejected = np.asarray([rng.random() for _ in range(count)]) < reject_share
    ways = weighted_breakages(np.asarray([rng.random() for _ in range(count)]))
    return np.where(rejected, ways, -1).tolist()


def _page_body(
    day: date,
    drawn_from: Variety,
    numbers: list[int],
    versions: list[int],
    ways: list[int],
    cursor: str | None,
) -> bytes:
    """The JSON text of one page: the sales ``numbers`` at ``versions``, broken in ``ways``."""
    sales = draw_sales(day.isoformat(), np.asarray(numbers, dtype=np.int64), drawn_from)
    version = np.asarray(versions, dtype=np.int64)
    sales.quantity = sales.quantity + version - 1  # a later version sells one more
    data = render(day, sales, sales.second + VERSION_DELAY * version, ways)
    return orjson.dumps({"data": data, "next_cursor": cursor})


def _with_nan(body: bytes) -> bytes:
    """``body`` with a ``NaN`` literal in an extra field of its last record that has a currency."""
    at = body.rfind(b'"currency":')
    return body if at < 0 else body[:at] + _NAN_FIELD + body[at:]


def write_realistic_day(
    lake: Lake,
    day: date,
    records: int,
    *,
    page_size: int = 10_000,
    part_bytes: int | None = None,
    **options: float,
) -> SnapshotRef:
    """Write a committed raw snapshot of a realistic day (see :func:`realistic_pages`)."""
    writer = RawSnapshotWriter(lake, day, part_bytes=part_bytes)
    for number, (count, body) in enumerate(
        realistic_pages(day, records, page_size=page_size, **options)  # type: ignore[arg-type]
    ):
        writer.add(Page(number=number, body=body, records=[None] * count, next_cursor=None))
    return writer.commit()
