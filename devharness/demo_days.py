"""Realistic generated days for the demo API: dirty, skewed, duplicated, revised.

A day is described by a :class:`DayMix` and generated deterministically per (day, seed): the same
mix, day and revision always give the same records in the same order, on any machine (every
random choice is a counter-based hash, not a random generator's stream).

Revision 0 of a day is what the source serves first:

* ``rows`` sales (slots), ``reject_rate`` of them malformed, spread over every reason code of
  :data:`sales_etl.validate.REASON_ORDER` (the ways and weights of
  :data:`devharness.records.BREAKAGES`);
* ``duplicate_rate`` of them sent a second time, identical, later in the stream;
* stores and products drawn from a Zipf-like distribution (``skew``; 0 is uniform);
* ``long_id_rate`` of the sale ids padded to the contract's 64-character limit.

Revision ``r > 0`` is what the source serves later. It starts from revision ``r - 1`` and changes
some sales (rates are fractions of ``rows``): updates (quantity and amount change), voids (a
newer, well-formed version with amount 0 or negative), fixes of rejected records (a newer valid
version with the same sale_id), new sales (appended to the stream), stale versions (the source
now serves a version *older* than before) and malformed newer versions of good sales.

The clock is deterministic: a base record's ``updated_at`` is its sale time + 5 minutes; every
change of revision ``r`` is stamped in ``[revision_time(day, r), revision_time(day, r) + 1h)``,
where ``revision_time(day, r)`` is the end of the day + ``r`` hours. So ``updated_since =
revision_time(day, r)`` selects exactly the records changed by revision ``r`` (stale versions are
older by construction and never selected). A malformed record is filtered by the time the source
changed it, even when the ``updated_at`` it carries is missing or broken.

Use :func:`day_records` for every record of (day, revision) as served, :func:`day_plan` for the
plan behind it (positions, slots, kinds) to compute expected results. What each sale looks like
(its drawn values, its rendering, the ways it is broken) is :mod:`devharness.records`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from devharness.records import (
    BREAKAGE_INDEX,
    BREAKAGES,
    DAY_SECONDS,
    VERSION_DELAY,
    Variety,
    draw_sales,
    hash_key,
    hash_slots,
    render,
    sale_seconds,
    uniform,
    weighted_breakages,
)
from sales_etl import validate

STALE_AGE: Final = 3600  # a stale version is one hour older than the base version

# What a slot serves (kind codes).
BASE, REJECT, UPDATED, VOID, FIXED, NEW, STALE, BAD_UPDATE = range(8)
KIND_NAMES: Final = ("base", "reject", "updated", "void", "fixed", "new", "stale", "bad_update")
_GOOD_KINDS: Final = (BASE, UPDATED, FIXED, NEW)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class DayMix:
    """The shape of a generated day; every rate is a fraction of ``rows``."""

    rows: int = 1000
    reject_rate: float = 0.0
    duplicate_rate: float = 0.0
    skew: float = 0.0
    long_id_rate: float = 0.0
    seed: int = 0
    stores: int = 200
    products: int = 20_000
    # Changes of each revision r > 0.
    update_rate: float = 0.006
    void_rate: float = 0.001
    fix_rate: float = 0.001
    new_rate: float = 0.001
    stale_rate: float = 0.001
    malformed_update_rate: float = 0.001

    @property
    def variety(self) -> Variety:
        """What the sales of these days draw (devharness.records), odd spellings included."""
        return Variety(
            seed=self.seed,
            stores=self.stores,
            products=self.products,
            skew=self.skew,
            long_id_rate=self.long_id_rate,
            odd_spellings=True,
        )

    def with_change_rate(self, total: float) -> DayMix:
        """The same mix with each revision changing ``total`` of the rows (same proportions)."""
        rates = ("update_rate", "void_rate", "fix_rate", "new_rate", "malformed_update_rate")
        current = sum(getattr(self, name) for name in rates)
        scale = total / current if current else 0.0
        changes: dict[str, Any] = {name: getattr(self, name) * scale for name in rates}
        changes["stale_rate"] = self.stale_rate * scale
        return replace(self, **changes)


REALISTIC = DayMix(reject_rate=0.1, duplicate_rate=0.05, skew=1.1, long_id_rate=0.05)


def revision_time(day: date | str, revision: int) -> datetime:
    """When the changes of ``revision`` (> 0) start: the end of ``day`` (UTC) + ``revision`` h."""
    d = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1, hours=revision)


# Malformed newer versions keep sale_id and updated_at (so they are newer versions of a sale) and
# are not voids: every other breakage.
BAD_UPDATE_BREAKAGES: Final = tuple(
    i
    for i, b in enumerate(BREAKAGES)
    if b.keeps_updated_at and b.reason != validate.NON_POSITIVE_AMOUNT
)
_FIXABLE: Final = np.array([b.keeps_sale_id for b in BREAKAGES])
# A void is a well-formed newer version with amount 0 or negative.
_VOIDS: Final = (BREAKAGE_INDEX["zero_amount"], BREAKAGE_INDEX["negative_amount"])


def _key(mix: DayMix, day: str, purpose: str) -> np.uint64:
    return hash_key(mix.seed, day, purpose)


def _take(h: U64, n: int) -> I64:
    """Positions of the ``n`` smallest hashes (a deterministic sample without replacement)."""
    if n <= 0 or len(h) == 0:
        return np.empty(0, dtype=np.int64)
    if n >= len(h):
        return np.argsort(h, kind="stable").astype(np.int64)
    part = np.argpartition(h, n - 1)[:n]
    return part[np.argsort(h[part], kind="stable")].astype(np.int64)


# --- the plan of a day ------------------------------------------------------------------------


class DayPlan:
    """What the source serves for one (mix, day, revision), as compact arrays.

    ``stream`` maps each position of the day's stream to a slot (a sale); per slot, ``kind``
    (see :data:`KIND_NAMES`), ``revision`` of its last change, ``breakage`` (index into
    :data:`devharness.records.BREAKAGES`, -1 when none) and ``changed_at`` (seconds after the
    day's start at which the source last changed it: what ``updated_since`` filters on).
    """

    def __init__(self, mix: DayMix, day: str, revision: int) -> None:
        self.mix = mix
        self.day = day
        self.revision = revision
        self._date = date.fromisoformat(day)
        self._since_cache: dict[int, I64] = {}
        self._build()

    @property
    def count(self) -> int:
        return len(self.stream)

    def _build(self) -> None:
        mix, n = self.mix, self.mix.rows
        slots = np.arange(n, dtype=np.int64)
        self.kind = np.zeros(n, dtype=np.int8)
        self.rev = np.zeros(n, dtype=np.int16)
        self.breakage = np.full(n, -1, dtype=np.int16)
        rejected = uniform(hash_slots(slots, _key(mix, self.day, "reject"))) < mix.reject_rate
        ways = weighted_breakages(uniform(hash_slots(slots, _key(mix, self.day, "reason"))))
        self.kind[rejected] = REJECT
        self.breakage[rejected] = ways[rejected]
        self.stream = self._with_duplicates(slots)
        for r in range(1, self.revision + 1):
            self._apply_revision(r)
        first = sale_seconds(self.day, np.arange(len(self.kind), dtype=np.int64), mix.variety)
        first += VERSION_DELAY
        changed = np.where(self.rev > 0, self._revision_seconds(), first)
        self.changed_at = np.where(self.kind == STALE, first - STALE_AGE, changed).astype(np.int64)

    def _with_duplicates(self, slots: I64) -> I64:
        """The stream: every slot once, and some a second time, 1..window positions later."""
        mix = self.mix
        h = hash_slots(slots, _key(mix, self.day, "duplicate"))
        dups = slots[uniform(h) < mix.duplicate_rate]
        if len(dups) == 0:
            return slots
        window = max(1, min(len(slots), 50_000))
        gap = (h[dups] >> np.uint64(32)) % np.uint64(window)
        later = dups.astype(np.float64) + 0.5 + gap.astype(np.float64)
        order = np.argsort(np.concatenate([slots.astype(np.float64), later]), kind="stable")
        return np.concatenate([slots, dups])[order]

    def _apply_revision(self, r: int) -> None:
        mix, rows = self.mix, self.mix.rows
        kind = self.kind
        key = _key(mix, self.day, f"revision-{r}")
        good = np.flatnonzero(np.isin(kind, _GOOD_KINDS))
        fixable = np.flatnonzero(
            ((kind == REJECT) & _FIXABLE[np.maximum(self.breakage, 0)]) | (kind == BAD_UPDATE)
        )
        sizes = [
            (UPDATED, round(rows * mix.update_rate)),
            (VOID, round(rows * mix.void_rate)),
            (STALE, round(rows * mix.stale_rate)),
            (BAD_UPDATE, round(rows * mix.malformed_update_rate)),
        ]
        chosen = good[_take(hash_slots(good, key), sum(size for _, size in sizes))]
        start = 0
        for new_kind, size in sizes:
            picked = chosen[start : start + size]
            start += size
            kind[picked] = new_kind
            self.rev[picked] = r
            self.breakage[picked] = -1
            if new_kind == BAD_UPDATE:
                ways = hash_slots(picked, key) % np.uint64(len(BAD_UPDATE_BREAKAGES))
                self.breakage[picked] = np.asarray(BAD_UPDATE_BREAKAGES)[ways.astype(np.int64)]
        fix_key = _key(mix, self.day, f"fix-{r}")
        fixed = fixable[_take(hash_slots(fixable, fix_key), round(rows * mix.fix_rate))]
        kind[fixed] = FIXED
        self.rev[fixed] = r
        self.breakage[fixed] = -1
        added = round(rows * mix.new_rate)
        if added:
            first = len(kind)
            new_slots = np.arange(first, first + added, dtype=np.int64)
            self.kind = np.concatenate([kind, np.full(added, NEW, dtype=np.int8)])
            self.rev = np.concatenate([self.rev, np.full(added, r, dtype=np.int16)])
            self.breakage = np.concatenate([self.breakage, np.full(added, -1, np.int16)])
            self.stream = np.concatenate([self.stream, new_slots])

    def _revision_seconds(self) -> I64:
        slots = np.arange(len(self.kind), dtype=np.int64)
        jitter = hash_slots(slots, _key(self.mix, self.day, "jitter")) % np.uint64(3600)
        return DAY_SECONDS + 3600 * self.rev.astype(np.int64) + jitter.astype(np.int64)

    def positions(self, since: datetime | None = None) -> I64:
        """Stream positions served for ``updated_since=since`` (all of them for None)."""
        if since is None:
            return np.arange(self.count, dtype=np.int64)
        start = datetime(self._date.year, self._date.month, self._date.day, tzinfo=UTC)
        threshold = (since - start).total_seconds()
        cutoff = int(np.ceil(threshold))
        if cutoff not in self._since_cache:
            keep = self.changed_at[self.stream] >= cutoff
            self._since_cache[cutoff] = np.flatnonzero(keep).astype(np.int64)
        return self._since_cache[cutoff]

    def records(self, positions: Sequence[int] | npt.NDArray[np.int64]) -> list[Any]:
        """The records served at ``positions`` of the stream, in that order."""
        slots = self.stream[np.asarray(positions, dtype=np.int64)]
        return self._render(slots)

    def _render(self, slots: I64) -> list[Any]:
        """The records of stream ``slots``: each drawn from its slot (the same slot always draws
        the same sale), then revised, voided or broken as its kind says."""
        sales = draw_sales(self.day, slots, self.mix.variety)
        kind, rev = self.kind[slots], self.rev[slots].astype(np.int64)
        sales.quantity = sales.quantity + np.where(np.isin(kind, (UPDATED, BAD_UPDATE)), rev, 0)
        sales.quantity += np.where(kind == STALE, 100, 0)
        void = np.asarray(_VOIDS)[(sales.flag & 1).astype(np.int64)]
        ways = np.where(kind == VOID, void, self.breakage[slots])
        return render(self._date, sales, self.changed_at[slots], ways.tolist())

    def kinds_served(self) -> dict[str, int]:
        """How many positions of the stream serve each kind (for reports and tests)."""
        counts = np.bincount(self.kind[self.stream], minlength=len(KIND_NAMES))
        return {name: int(counts[k]) for k, name in enumerate(KIND_NAMES)}


@lru_cache(maxsize=4)
def day_plan(mix: DayMix, day: str, revision: int = 0) -> DayPlan:
    """The (cached) plan of ``day`` at ``revision`` under ``mix``."""
    return DayPlan(mix, date.fromisoformat(day).isoformat(), revision)


def day_records(
    mix: DayMix, day: str, revision: int = 0, updated_since: datetime | None = None
) -> list[Any]:
    """Every record of (day, revision) as the demo API serves it, in stream order.

    With ``updated_since``, only those the API serves for that parameter (what it filters on is
    the time the source changed the record: see the module docstring).
    """
    plan = day_plan(mix, day, revision)
    return plan.records(plan.positions(updated_since))
