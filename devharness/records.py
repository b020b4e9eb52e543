"""The one definition of a generated sale: its fields, tables, rendering and ways to break it.

Every generator of the harness draws and renders its sales here:

* :func:`devharness.demo_api.generate_record` (the demo API's simple days and many tests),
* :mod:`devharness.demo_days` (realistic days with revisions, served record by record),
* :mod:`devharness.raw_days` (realistic days at volume, written as text straight into a lake).

They differ only in their *plan*: which sale is at which position of the stream, which of them
are broken, duplicated or revised. What a sale looks like is decided once:

* :func:`draw_sales` draws the values of sales (one row per slot, vectorised, deterministic per
  seed, day and slot: a counter-based hash, never a random generator's stream);
* :func:`render` turns drawn sales into records (JSON values: the same dicts the demo API sends,
  and, through ``orjson``, the text :mod:`devharness.raw_days` writes);
* :data:`BREAKAGES` is the catalogue of the ways a record is broken, each with the reason code of
  :data:`sales_etl.validate.REASON_ORDER` the validator gives it and a weight (how often a
  realistic day breaks a record that way). Every reason code has at least one way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sales_etl import validate

Record = dict[str, Any]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

FIELDS: Final = validate.FIELDS
# Lower-case codes are valid (the validator upper-cases them): a source that spells them so.
CURRENCIES: Final = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK", "eur", "usd")
# The offsets timestamps carry: (seconds east of UTC, the text written after the local time).
OFFSETS: Final = (
    (0, "Z"),
    (0, "+00:00"),
    (3600, "+01:00"),
    (-18_000, "-05:00"),
    (19_800, "+05:30"),
    (-28_800, "-08:00"),
    (32_400, "+09:00"),
    (3600, "+0100"),
)
DAY_SECONDS: Final = 86_400
VERSION_DELAY: Final = 300  # version v of a sale is stamped updated_at = sale time + v * 5 min
EXTRA_FIELD: Final = "channel"  # the field outside the contract some realistic records carry
CUSTOMERS: Final = 1_000_000


@dataclass(frozen=True)
class Variety:
    """How varied drawn sales are. The defaults are the plain simple days of the demo API.

    ``odd_spellings`` turns on what a real source also sends and the validator must accept:
    an extra field (:data:`EXTRA_FIELD`), amounts as JSON numbers and fractional seconds.
    """

    seed: int = 0
    stores: int = 50
    products: int = 1000
    skew: float = 0.0  # Zipf exponent of stores and products; 0 is uniform
    long_id_rate: float = 0.0  # share of sale ids padded to the contract's 64 characters
    odd_spellings: bool = False


# --- deterministic hashing --------------------------------------------------------------------

_GAMMA: Final = np.uint64(0x9E3779B97F4A7C15)
_MUL1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MUL2: Final = np.uint64(0x94D049BB133111EB)


@lru_cache(maxsize=4096)
def hash_key(seed: int, day: str, purpose: str) -> np.uint64:
    """The 64-bit key of one purpose of one (seed, day): independent draws per purpose."""
    digest = hashlib.blake2b(f"{seed}:{day}:{purpose}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "big"))


def hash_slots(slots: npt.NDArray[Any], key: np.uint64) -> U64:
    """splitmix64 of ``key + slot * gamma``: independent 64-bit values per slot and key."""
    x = slots.astype(np.uint64) * _GAMMA + key
    x ^= x >> np.uint64(30)
    x *= _MUL1
    x ^= x >> np.uint64(27)
    x *= _MUL2
    x ^= x >> np.uint64(31)
    return x


def uniform(h: U64) -> npt.NDArray[np.float64]:
    """Hashes as floats in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@cache
def _zipf_cdf(n: int, skew: float) -> npt.NDArray[np.float64]:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _ranked(day: str, slots: I64, variety: Variety, purpose: str, n: int) -> I64:
    """One of ``n`` (a store, a product) per slot, the first ones the busiest (Zipf ``skew``)."""
    u = uniform(hash_slots(slots, hash_key(variety.seed, day, purpose)))
    return np.minimum(np.searchsorted(_zipf_cdf(n, variety.skew), u), n - 1).astype(np.int64)


# --- drawn sales ------------------------------------------------------------------------------


@dataclass
class Sales:
    """The drawn values of sales, one row per slot (the columns :func:`render` takes).

    ``quantity`` is the first version's; a plan changes it (and the amount with it) for later
    versions before rendering.
    """

    slot: I64
    second: I64  # the sale's time, seconds after the day's start (UTC)
    micro: I64  # its microseconds (0: the time is written without a fraction)
    offset: I64  # index into OFFSETS
    store: I64
    product: I64
    customer: I64  # -1: no customer
    quantity: I64
    cents: I64  # unit price in cents
    currency: I64  # index into CURRENCIES
    price_number: npt.NDArray[np.bool_]  # unit_price as a JSON number (else a decimal string)
    amount_number: npt.NDArray[np.bool_]  # amount as a JSON number (else a decimal string)
    extra: npt.NDArray[np.bool_]  # carries EXTRA_FIELD
    long_id: npt.NDArray[np.bool_]
    flag: I64  # 8 more independent bits, for a plan's own choices


def _sale_hash(day: str, slots: I64, variety: Variety) -> U64:
    return hash_slots(slots, hash_key(variety.seed, day, "sale"))


def sale_seconds(day: str, slots: I64, variety: Variety) -> I64:
    """When the sales in ``slots`` happened: seconds after ``day``'s start (UTC), as drawn by
    :func:`draw_sales` (without drawing the rest)."""
    return (_sale_hash(day, slots, variety) % np.uint64(DAY_SECONDS)).astype(np.int64)


def draw_sales(day: str, slots: I64, variety: Variety) -> Sales:
    """The values of the sales in ``slots`` of ``day``: the same slot always draws the same."""
    h = _sale_hash(day, slots, variety)
    spelling = hash_slots(slots, hash_key(variety.seed, day, "spelling"))
    odd = variety.odd_spellings

    def bits(x: U64, shift: int, modulo: int) -> I64:
        return ((x >> np.uint64(shift)) % np.uint64(modulo)).astype(np.int64)

    return Sales(
        slot=slots.astype(np.int64),
        second=sale_seconds(day, slots, variety),
        micro=np.where((bits(spelling, 0, 3) == 0) & odd, bits(spelling, 2, 1_000_000), 0),
        offset=bits(h, 17, len(OFFSETS)),
        store=_ranked(day, slots, variety, "store", variety.stores),
        product=_ranked(day, slots, variety, "product", variety.products),
        customer=np.where(bits(spelling, 22, 10) == 0, -1, bits(h, 40, CUSTOMERS)),
        quantity=1 + bits(h, 20, 5),
        cents=100 + bits(h, 24, 99_900),
        currency=bits(h, 60, len(CURRENCIES)),
        price_number=bits(spelling, 26, 2) == 1,
        amount_number=(bits(spelling, 27, 4) == 1) & odd,
        extra=(bits(spelling, 29, 16) == 3) & odd,
        long_id=uniform(hash_slots(slots, hash_key(variety.seed, day, "long-id")))
        < variety.long_id_rate,
        flag=bits(spelling, 40, 256),
    )


# --- rendering --------------------------------------------------------------------------------

_SHIFTS: Final = np.asarray([shift for shift, _ in OFFSETS], dtype=np.int64)


def timestamps(day: date, seconds: I64, offsets: I64, micros: I64 | None = None) -> list[str]:
    """``seconds`` after ``day``'s start (UTC) as local ISO-8601 text with the offset's suffix."""
    start = np.datetime64(day.isoformat(), "s")
    local = start + (seconds + _SHIFTS[offsets]).astype("timedelta64[s]")
    texts: list[str] = np.datetime_as_string(local, unit="s").tolist()
    suffixes = [OFFSETS[o][1] for o in offsets.tolist()]
    if micros is None or not micros.any():
        return [t + z for t, z in zip(texts, suffixes, strict=True)]
    return [
        f"{t}.{m:06d}{z}" if m else t + z
        for t, m, z in zip(texts, micros.tolist(), suffixes, strict=True)
    ]


def money(cents: int) -> str:
    """Cents as the decimal text of the contract (two decimals)."""
    return f"{cents // 100}.{cents % 100:02d}"


def _sale_id(prefix: str, slot: int, long: bool) -> str:
    """The sale id of ``slot`` (``prefix`` is the day's); a long one fills the contract's 64
    characters."""
    text = f"{prefix}{slot:09d}"
    if long:
        text = (text + "-" + f"{slot * 0x9E3779B1 & 0xFFFFFFFFFFFF:012x}" * 5)[:64]
    return text


def render(day: date, sales: Sales, updated: I64, ways: Sequence[int] | None = None) -> list[Any]:
    """The records of ``sales`` (in row order), stamped ``updated`` (seconds after the day's
    start), each broken in the way of :data:`BREAKAGES` its entry of ``ways`` names (-1: none)."""
    prefix = f"{day:%Y%m%d}-"
    records = [
        _record(prefix, *row)
        for row in zip(
            sales.slot.tolist(),
            sales.long_id.tolist(),
            timestamps(day, sales.second, sales.offset, sales.micro),
            timestamps(day, updated, sales.offset),
            sales.store.tolist(),
            sales.product.tolist(),
            sales.customer.tolist(),
            sales.quantity.tolist(),
            sales.cents.tolist(),
            sales.currency.tolist(),
            sales.price_number.tolist(),
            sales.amount_number.tolist(),
            sales.extra.tolist(),
            strict=True,
        )
    ]
    for i, way in enumerate(ways if ways is not None else ()):
        if way >= 0:
            records[i] = BREAKAGES[way].apply(records[i])
    return records


def _record(
    prefix: str,
    slot: int,
    long_id: bool,
    sale_date: str,
    updated_at: str,
    store: int,
    product: int,
    customer: int,
    quantity: int,
    cents: int,
    currency: int,
    price_number: bool,
    amount_number: bool,
    extra: bool,
) -> Record:
    """One valid record (JSON values) from its drawn values."""
    amount = money(cents * quantity)
    record: Record = {
        "sale_id": _sale_id(prefix, slot, long_id),
        "sale_date": sale_date,
        "store_id": f"S{store:04d}",
        "product_id": f"P{product:06d}",
        "customer_id": None if customer < 0 else f"C{customer:07d}",
        "quantity": quantity,
        "unit_price": cents / 100 if price_number else money(cents),
        "amount": cents * quantity / 100 if amount_number else amount,
        "currency": CURRENCIES[currency],
        "updated_at": updated_at,
    }
    if extra:  # unknown extra fields appear and must be kept aside, not refused
        record[EXTRA_FIELD] = {"kind": "web", "tags": ["a", "b"], "score": 1.5}
    return record


# --- breakages: every reason code of the validator, in several realistic ways ----------------


@dataclass(frozen=True)
class Breakage:
    """One way to break a valid record, the reason the validator gives it, and how often."""

    name: str
    reason: str
    weight: float
    apply: Callable[[Record], Any]  # breaks the record it is given (in place or by replacing it)

    @property
    def keeps_sale_id(self) -> bool:
        return self.reason not in (validate.NOT_AN_OBJECT, validate.INVALID["sale_id"])

    @property
    def keeps_updated_at(self) -> bool:
        return self.keeps_sale_id and self.reason != validate.INVALID["updated_at"]


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
    moment = datetime.fromisoformat(record["sale_date"]) - timedelta(days=1)
    record["sale_date"] = moment.isoformat()
    return record


def _negated_amount(record: Record) -> Any:
    record["amount"] = "-" + str(record["amount"])
    return record


def _quantity_as_text(record: Record) -> Any:
    record["quantity"] = str(record["quantity"])
    return record


_INVALID = validate.INVALID
BREAKAGES: Final[tuple[Breakage, ...]] = (
    Breakage("array", validate.NOT_AN_OBJECT, 1, lambda r: [r["sale_id"], r["amount"]]),
    Breakage("string", validate.NOT_AN_OBJECT, 0.5, lambda r: "sale " + str(r["sale_id"])),
    Breakage("null", validate.NOT_AN_OBJECT, 0.5, lambda r: None),
    Breakage("missing_sale_id", _INVALID["sale_id"], 1, _without("sale_id")),
    Breakage("sale_id_65_chars", _INVALID["sale_id"], 0.5, _setting("sale_id", "X" * 65)),
    Breakage("numeric_sale_id", _INVALID["sale_id"], 0.5, _setting("sale_id", 12345)),
    Breakage("empty_sale_id", _INVALID["sale_id"], 0.5, _setting("sale_id", "")),
    Breakage("missing_sale_date", _INVALID["sale_date"], 3, _without("sale_date")),
    Breakage("bad_sale_date", _INVALID["sale_date"], 1, _setting("sale_date", "not-a-date")),
    Breakage(
        "day_first_sale_date", _INVALID["sale_date"], 0.5, _setting("sale_date", "23/11/2026 10:00")
    ),
    Breakage(
        "naive_sale_date", _INVALID["sale_date"], 1, _setting("sale_date", "2026-11-01T10:00:00")
    ),
    Breakage("sale_date_day_before", validate.SALE_DATE_NOT_IN_DAY, 1, _day_before),
    Breakage("missing_updated_at", _INVALID["updated_at"], 1, _without("updated_at")),
    Breakage("bad_updated_at", _INVALID["updated_at"], 0.5, _setting("updated_at", "yesterday")),
    Breakage("missing_store_id", _INVALID["store_id"], 4, _without("store_id")),
    Breakage("null_store_id", _INVALID["store_id"], 1, _setting("store_id", None)),
    Breakage(
        "sql_store_id",
        _INVALID["store_id"],
        0.5,
        _setting("store_id", "S1'; DROP TABLE sales; --" + "x" * 200),
    ),
    Breakage("control_store_id", _INVALID["store_id"], 0.5, _setting("store_id", "S\x1b[31m")),
    Breakage("missing_product_id", _INVALID["product_id"], 4, _without("product_id")),
    Breakage("nul_product_id", _INVALID["product_id"], 0.5, _setting("product_id", "P\x00001")),
    Breakage(
        "product_id_129_chars", _INVALID["product_id"], 0.5, _setting("product_id", "P" * 129)
    ),
    Breakage(
        "huge_customer_id", _INVALID["customer_id"], 0.5, _setting("customer_id", "C" * 10_000)
    ),
    Breakage("numeric_customer_id", _INVALID["customer_id"], 0.5, _setting("customer_id", 42)),
    Breakage("string_quantity", _INVALID["quantity"], 1, _quantity_as_text),
    Breakage("zero_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 0)),
    Breakage("huge_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 2_000_000)),
    Breakage("fractional_quantity", _INVALID["quantity"], 0.5, _setting("quantity", 1.5)),
    Breakage("negative_unit_price", _INVALID["unit_price"], 0.5, _setting("unit_price", "-3.20")),
    Breakage("text_unit_price", _INVALID["unit_price"], 0.5, _setting("unit_price", "abc")),
    Breakage(
        "five_decimals_unit_price", _INVALID["unit_price"], 0.5, _setting("unit_price", "1.23450")
    ),
    Breakage("missing_amount", _INVALID["amount"], 1, _without("amount")),
    Breakage("localised_amount", _INVALID["amount"], 1, _setting("amount", "12,50 EUR")),
    Breakage("nineteen_digit_amount", _INVALID["amount"], 0.5, _setting("amount", 10**18)),
    # A float JSON writers spell with an exponent (1.25e+16), which the contract refuses.
    Breakage("exponent_amount", _INVALID["amount"], 0.5, _setting("amount", 1.25e16)),
    Breakage("unknown_currency", _INVALID["currency"], 1, _setting("currency", "XXY")),
    Breakage("missing_currency", _INVALID["currency"], 1, _without("currency")),
    Breakage("symbol_currency", _INVALID["currency"], 0.5, _setting("currency", "€")),
    Breakage("zero_amount", validate.NON_POSITIVE_AMOUNT, 4, _setting("amount", "0.00")),
    Breakage("zero_number_amount", validate.NON_POSITIVE_AMOUNT, 1, _setting("amount", 0)),
    Breakage("negative_amount", validate.NON_POSITIVE_AMOUNT, 1, _negated_amount),
)
BREAKAGE_INDEX: Final = {b.name: i for i, b in enumerate(BREAKAGES)}
_WEIGHT_CDF: Final = np.cumsum([b.weight for b in BREAKAGES]) / sum(b.weight for b in BREAKAGES)


def weighted_breakages(u: npt.NDArray[np.float64]) -> I64:
    """Indexes into :data:`BREAKAGES` for uniform draws ``u``, each way as often as its weight."""
    ways = np.searchsorted(_WEIGHT_CDF, u, side="right")
    return np.minimum(ways, len(BREAKAGES) - 1).astype(np.int64)


def broken(record: Record, name: str) -> Any:
    """A copy of a valid ``record`` broken in the way of :data:`BREAKAGES` called ``name``."""
    if name not in BREAKAGE_INDEX:
        raise ValueError(f"unknown breakage {name!r}")
    return BREAKAGES[BREAKAGE_INDEX[name]].apply(dict(record))
