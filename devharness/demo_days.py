"""Realistic generated days for the demo API: dirty, skewed, duplicated, revised.

A day is described by a :class:`DayMix` and generated deterministically per (day, seed): the same
mix, day and revision always give the same records in the same order, on any machine (every
random choice is a counter-based hash, not a random generator's stream).

Revision 0 of a day is what the source serves first:

* ``rows`` sales (slots), ``reject_rate`` of them malformed, spread over every reason code of
  :data:`sales_etl.validate.REASON_ORDER` (see :data:`CORRUPTIONS` for the ways and weights);
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
plan behind it (positions, slots, kinds) to compute expected results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sales_etl import validate

CURRENCIES: Final = ("EUR", "USD", "GBP", "SEK", "JPY")
# Offsets the timestamps carry: seconds and their ISO text.
OFFSETS: Final = ((0, "+00:00"), (3600, "+01:00"), (-18_000, "-05:00"), (19_800, "+05:30"))
DAY_SECONDS: Final = 86_400
BASE_UPDATE_DELAY: Final = 300  # a base record's updated_at is its sale time + 5 minutes
STALE_AGE: Final = 3600  # a stale version is one hour older than the base version

# What a slot serves (kind codes).
BASE, REJECT, UPDATED, VOID, FIXED, NEW, STALE, BAD_UPDATE = range(8)
KIND_NAMES: Final = ("base", "reject", "updated", "void", "fixed", "new", "stale", "bad_update")
_GOOD_KINDS: Final = (BASE, UPDATED, FIXED, NEW)

Record = dict[str, Any]
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


# --- corruptions: every reason code of the validator, in several realistic ways -------------


def _without(name: str) -> Callable[[Record], Any]:
    def apply(record: Record) -> Any:
        del record[name]
        return record

    return apply


def _setting(name: str, value: Any) -> Callable[[Record], Any]:
    def apply(record: Record) -> Any:
        record[name] = value
        return record

    return apply


def _day_before(record: Record) -> Any:
    text = record["sale_date"]
    moment = datetime.fromisoformat(text) - timedelta(days=1)
    record["sale_date"] = moment.isoformat()
    return record


def _negated_amount(record: Record) -> Any:
    record["amount"] = "-" + str(record["amount"])
    return record


@dataclass(frozen=True)
class Corruption:
    """One way to break a valid record, the reason the validator gives it, and how often."""

    name: str
    reason: str
    weight: float
    apply: Callable[[Record], Any]

    @property
    def keeps_sale_id(self) -> bool:
        return self.reason not in (validate.NOT_AN_OBJECT, validate.INVALID["sale_id"])

    @property
    def keeps_updated_at(self) -> bool:
        return self.keeps_sale_id and self.reason != validate.INVALID["updated_at"]


_INVALID = validate.INVALID
CORRUPTIONS: Final[tuple[Corruption, ...]] = (
    Corruption("array", validate.NOT_AN_OBJECT, 1, lambda r: [r["sale_id"], r["amount"]]),
    Corruption("string", validate.NOT_AN_OBJECT, 0.5, lambda r: "sale " + str(r["sale_id"])),
    Corruption("null", validate.NOT_AN_OBJECT, 0.5, lambda r: None),
    Corruption("missing_sale_id", _INVALID["sale_id"], 1, _without("sale_id")),
    Corruption("sale_id_65_chars", _INVALID["sale_id"], 0.5, _setting("sale_id", "X" * 65)),
    Corruption("numeric_sale_id", _INVALID["sale_id"], 0.5, _setting("sale_id", 12345)),
    Corruption("empty_sale_id", _INVALID["sale_id"], 0.5, _setting("sale_id", "")),
    Corruption("missing_sale_date", _INVALID["sale_date"], 3, _without("sale_date")),
    Corruption("bad_sale_date", _INVALID["sale_date"], 1, _setting("sale_date", "not-a-date")),
    Corruption(
        "naive_sale_date", _INVALID["sale_date"], 1, _setting("sale_date", "2026-11-01T10:00:00")
    ),
    Corruption("sale_date_day_before", validate.SALE_DATE_NOT_IN_DAY, 1, _day_before),
    Corruption("missing_updated_at", _INVALID["updated_at"], 1, _without("updated_at")),
    Corruption("bad_updated_at", _INVALID["updated_at"], 0.5, _setting("updated_at", "yesterday")),
    Corruption("missing_store_id", _INVALID["store_id"], 4, _without("store_id")),
    Corruption("null_store_id", _INVALID["store_id"], 1, _setting("store_id", None)),
    Corruption(
        "sql_store_id",
        _INVALID["store_id"],
        0.5,
        _setting("store_id", "S1'; DROP TABLE sales; --" + "x" * 200),
    ),
    Corruption("control_store_id", _INVALID["store_id"], 0.5, _setting("store_id", "S\x1b[31m")),
    Corruption("missing_product_id", _INVALID["product_id"], 4, _without("product_id")),
    Corruption("nul_product_id", _INVALID["product_id"], 0.5, _setting("product_id", "P\x00001")),
    Corruption(
        "product_id_129_chars", _INVALID["product_id"], 0.5, _setting("product_id", "P" * 129)
    ),
    Corruption(
        "huge_customer_id", _INVALID["customer_id"], 0.5, _setting("customer_id", "C" * 10_000)
    ),
    Corruption("numeric_customer_id", _INVALID["customer_id"], 0.5, _setting("customer_id", 42)),
    Corruption(
        "string_quantity", _INVALID["quantity"], 1, lambda r: {**r, "quantity": str(r["quantity"])}
    ),
    Corruption("zero_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 0)),
    Corruption("huge_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 2_000_000)),
    Corruption("fractional_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 1.5)),
    Corruption("negative_unit_price", _INVALID["unit_price"], 0.5, _setting("unit_price", "-3.20")),
    Corruption("text_unit_price", _INVALID["unit_price"], 0.5, _setting("unit_price", "abc")),
    Corruption("missing_amount", _INVALID["amount"], 1, _without("amount")),
    Corruption("localised_amount", _INVALID["amount"], 1, _setting("amount", "12,50 EUR")),
    Corruption("nineteen_digit_amount", _INVALID["amount"], 0.5, _setting("amount", 10**18)),
    Corruption("unknown_currency", _INVALID["currency"], 1, _setting("currency", "XXY")),
    Corruption("missing_currency", _INVALID["currency"], 1, _without("currency")),
    Corruption("symbol_currency", _INVALID["currency"], 0.5, _setting("currency", "€")),
    Corruption("zero_amount", validate.NON_POSITIVE_AMOUNT, 4, _setting("amount", "0.00")),
    Corruption("zero_number_amount", validate.NON_POSITIVE_AMOUNT, 1, _setting("amount", 0)),
    Corruption("negative_amount", validate.NON_POSITIVE_AMOUNT, 1, _negated_amount),
)
# Malformed newer versions keep sale_id and updated_at (so they are newer versions of a sale) and
# are not voids: every other corruption.
BAD_UPDATE_CORRUPTIONS: Final = tuple(
    i
    for i, c in enumerate(CORRUPTIONS)
    if c.keeps_updated_at and c.reason != validate.NON_POSITIVE_AMOUNT
)
_FIXABLE: Final = np.array([c.keeps_sale_id for c in CORRUPTIONS])
_REASON_CDF: Final = np.cumsum([c.weight for c in CORRUPTIONS]) / sum(c.weight for c in CORRUPTIONS)


# --- deterministic hashing --------------------------------------------------------------------

_GAMMA: Final = np.uint64(0x9E3779B97F4A7C15)
_MUL1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MUL2: Final = np.uint64(0x94D049BB133111EB)


def _key(mix: DayMix, day: str, purpose: str) -> np.uint64:
    digest = hashlib.blake2b(f"{mix.seed}:{day}:{purpose}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "big"))


def _hash(slots: npt.NDArray[Any], key: np.uint64) -> U64:
    """splitmix64 of ``key + slot * gamma``: independent 64-bit values per slot and key."""
    x = slots.astype(np.uint64) * _GAMMA + key
    x ^= x >> np.uint64(30)
    x *= _MUL1
    x ^= x >> np.uint64(27)
    x *= _MUL2
    x ^= x >> np.uint64(31)
    return x


def _uniform(h: U64) -> npt.NDArray[np.float64]:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@cache
def _zipf_cdf(n: int, skew: float) -> npt.NDArray[np.float64]:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


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
    (see :data:`KIND_NAMES`), ``revision`` of its last change, ``corruption`` (index into
    :data:`CORRUPTIONS`, -1 when none) and ``changed_at`` (seconds after the day's start at which
    the source last changed it: what ``updated_since`` filters on).
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
        self.corruption = np.full(n, -1, dtype=np.int16)
        rejected = _uniform(_hash(slots, _key(mix, self.day, "reject"))) < mix.reject_rate
        ways = np.searchsorted(
            _REASON_CDF, _uniform(_hash(slots, _key(mix, self.day, "reason"))), side="right"
        )
        self.kind[rejected] = REJECT
        self.corruption[rejected] = np.minimum(ways[rejected], len(CORRUPTIONS) - 1)
        self.stream = self._with_duplicates(slots)
        for r in range(1, self.revision + 1):
            self._apply_revision(r)
        base_sec = self._base_seconds(np.arange(len(self.kind), dtype=np.int64))
        changed = np.where(self.rev > 0, self._revision_seconds(), base_sec + BASE_UPDATE_DELAY)
        self.changed_at = np.where(
            self.kind == STALE, base_sec + BASE_UPDATE_DELAY - STALE_AGE, changed
        ).astype(np.int64)

    def _with_duplicates(self, slots: I64) -> I64:
        """The stream: every slot once, and some a second time, 1..window positions later."""
        mix = self.mix
        h = _hash(slots, _key(mix, self.day, "duplicate"))
        dups = slots[_uniform(h) < mix.duplicate_rate]
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
            ((kind == REJECT) & _FIXABLE[np.maximum(self.corruption, 0)]) | (kind == BAD_UPDATE)
        )
        sizes = [
            (UPDATED, round(rows * mix.update_rate)),
            (VOID, round(rows * mix.void_rate)),
            (STALE, round(rows * mix.stale_rate)),
            (BAD_UPDATE, round(rows * mix.malformed_update_rate)),
        ]
        chosen = good[_take(_hash(good, key), sum(size for _, size in sizes))]
        start = 0
        for new_kind, size in sizes:
            picked = chosen[start : start + size]
            start += size
            kind[picked] = new_kind
            self.rev[picked] = r
            self.corruption[picked] = -1
            if new_kind == BAD_UPDATE:
                ways = _hash(picked, key) % np.uint64(len(BAD_UPDATE_CORRUPTIONS))
                self.corruption[picked] = np.asarray(BAD_UPDATE_CORRUPTIONS)[ways.astype(np.int64)]
        fixed = fixable[_take(_hash(fixable, key ^ _GAMMA), round(rows * mix.fix_rate))]
        kind[fixed] = FIXED
        self.rev[fixed] = r
        self.corruption[fixed] = -1
        added = round(rows * mix.new_rate)
        if added:
            first = len(kind)
            new_slots = np.arange(first, first + added, dtype=np.int64)
            self.kind = np.concatenate([kind, np.full(added, NEW, dtype=np.int8)])
            self.rev = np.concatenate([self.rev, np.full(added, r, dtype=np.int16)])
            self.corruption = np.concatenate([self.corruption, np.full(added, -1, np.int16)])
            self.stream = np.concatenate([self.stream, new_slots])

    def _base_seconds(self, slots: I64) -> I64:
        return (_hash(slots, _key(self.mix, self.day, "sale")) % np.uint64(DAY_SECONDS)).astype(
            np.int64
        )

    def _revision_seconds(self) -> I64:
        slots = np.arange(len(self.kind), dtype=np.int64)
        jitter = _hash(slots, _key(self.mix, self.day, "jitter")) % np.uint64(3600)
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
        """The records of stream ``slots``: each drawn from hashes of its slot (the same slot
        always renders the same record), then voided, revised or corrupted as its kind says."""
        prefix = f"{self._date:%Y%m%d}-"
        columns = self._draws(slots)
        return [_record(prefix, *row) for row in zip(slots.tolist(), *columns, strict=True)]

    def _draws(self, slots: I64) -> list[list[Any]]:
        """Per field, the values of ``slots`` in the order :func:`_record` takes them."""
        mix, day = self.mix, self.day
        h = _hash(slots, _key(mix, day, "sale"))
        sec = (h % np.uint64(DAY_SECONDS)).astype(np.int64)
        tz_codes = ((h >> np.uint64(17)) % np.uint64(len(OFFSETS))).astype(np.int64)
        suffixes = [OFFSETS[t][1] for t in tz_codes.tolist()]
        stores = np.searchsorted(
            _zipf_cdf(mix.stores, mix.skew), _uniform(_hash(slots, _key(mix, day, "store")))
        )
        products = np.searchsorted(
            _zipf_cdf(mix.products, mix.skew), _uniform(_hash(slots, _key(mix, day, "product")))
        )
        long_ids = _uniform(_hash(slots, _key(mix, day, "long-id"))) < mix.long_id_rate
        return [
            self.kind[slots].tolist(),
            self.rev[slots].tolist(),
            self.corruption[slots].tolist(),
            (1 + (h >> np.uint64(20)) % np.uint64(5)).astype(np.int64).tolist(),
            (100 + (h >> np.uint64(24)) % np.uint64(99_900)).astype(np.int64).tolist(),
            ((h >> np.uint64(40)) % np.uint64(1_000_000)).astype(np.int64).tolist(),
            ((h >> np.uint64(60)) % np.uint64(len(CURRENCIES))).astype(np.int64).tolist(),
            (h & np.uint64(0xFF)).astype(np.int64).tolist(),
            np.minimum(stores, mix.stores - 1).tolist(),
            np.minimum(products, mix.products - 1).tolist(),
            long_ids.tolist(),
            [t + z for t, z in zip(self._local_texts(sec, tz_codes), suffixes, strict=True)],
            [
                t + z
                for t, z in zip(
                    self._local_texts(self.changed_at[slots], tz_codes), suffixes, strict=True
                )
            ],
        ]

    def _local_texts(self, seconds: I64, tz_codes: I64) -> list[str]:
        """``seconds`` after the day's start (UTC) as local ISO text, without the offset."""
        shifts = np.asarray([shift for shift, _ in OFFSETS], dtype=np.int64)[tz_codes]
        start = np.datetime64(self._date.isoformat(), "s")
        local = start + (seconds + shifts).astype("timedelta64[s]")
        texts: list[str] = np.datetime_as_string(local, unit="s").tolist()
        return texts

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


def _record(
    prefix: str,
    slot: int,
    kind: int,
    rev: int,
    way: int,
    base_quantity: int,
    cents: int,
    customer: int,
    currency: int,
    flag: int,
    store: int,
    product: int,
    long_id: bool,
    sale_date: str,
    updated_at: str,
) -> Any:
    """One record of the stream from its slot's draws (:meth:`DayPlan._draws`)."""
    quantity = base_quantity + (rev if kind in (UPDATED, BAD_UPDATE) else 0)
    if kind == STALE:
        quantity += 100
    total = cents * quantity
    amount = f"{total // 100}.{total % 100:02d}"
    sale_id = f"{prefix}{slot:09d}"
    if long_id:
        sale_id = (sale_id + "-" + f"{slot * 0x9E3779B1 & 0xFFFFFFFFFFFF:012x}" * 5)[:64]
    record: Record = {
        "sale_id": sale_id,
        "sale_date": sale_date,
        "store_id": f"S{store:04d}",
        "product_id": f"P{product:06d}",
        "customer_id": None if flag % 10 == 0 else f"C{customer:07d}",
        "quantity": quantity,
        # Half the prices arrive as JSON numbers, half as decimal strings.
        "unit_price": cents / 100 if flag & 1 else f"{cents // 100}.{cents % 100:02d}",
        "amount": amount,
        "currency": CURRENCIES[currency],
        "updated_at": updated_at,
    }
    if flag % 16 == 3:  # unknown extra fields appear and must be ignored
        record["channel"] = "web"
    if kind == VOID:
        record["amount"] = "0.00" if flag & 2 else "-" + amount
    return record if way < 0 else CORRUPTIONS[way].apply(record)
