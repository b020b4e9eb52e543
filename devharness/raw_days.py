"""Realistic raw days written straight into a lake, at volume: the text an API would send.

About 10% rejects spread over every reason code, 5% duplicates of a sale arriving later with a
newer ``updated_at``, long ids, skewed stores and products, prices as JSON numbers and as
strings, extra fields, and a few pages with ``NaN`` literals that only the lossless parser
reads. Records are built as text (no object per record), so a day of millions is quick to make:
the benchmarks' days (``benchmarks/``) and the tests' days with every reason code.
:mod:`devharness.demo_days` is the other generator: days served by the demo API, record by
record, with revisions over time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from sales_etl.lake import Lake
from sales_etl.snapshots import RawSnapshotWriter, SnapshotRef
from sales_etl.source import Page

CURRENCIES = ("EUR", "USD", "GBP", "CHF", "JPY", "SEK", "eur", "usd")
OFFSETS = ("Z", "+00:00", "+01:00", "-05:00", "+05:30", "-08:00", "+09:00", "+0100")

# (share of the rejects, how one record is broken); every reason code of REASON_ORDER appears.
BREAKAGES: tuple[str, ...] = (
    "not_an_object_list",
    "not_an_object_string",
    "missing_sale_id",
    "long_sale_id",
    "bad_sale_date",
    "sale_date_without_offset",
    "sale_date_other_day",
    "missing_updated_at",
    "missing_store_id",
    "control_char_store_id",
    "long_product_id",
    "numeric_customer_id",
    "quantity_string",
    "quantity_zero",
    "quantity_fraction",
    "negative_unit_price",
    "unit_price_five_decimals",
    "amount_with_text",
    "amount_exponent",
    "unknown_currency",
    "zero_amount",
    "negative_amount",
)


def _stamp(moment: datetime, offset: str, fraction: bool) -> str:
    if offset in ("Z",):
        local = moment
        suffix = "Z"
    else:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        local = moment + sign * delta
        suffix = offset
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += f".{moment.microsecond:06d}"
    return text + suffix


def _record_text(
    day: date, rng: random.Random, number: int, version: int, breakage: str | None
) -> str:
    """One record as the JSON text an API would send."""
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    moment = base + timedelta(seconds=(number * 7919) % 86_400, microseconds=number % 997_000)
    offset = OFFSETS[number % len(OFFSETS)]
    sale_date = _stamp(moment, offset, number % 3 == 0)
    updated_at = _stamp(moment + timedelta(minutes=3 * version), "Z", False)
    # Skewed stores and products: a few are very busy.
    store = int(rng.paretovariate(1.2)) % 400
    product = int(rng.paretovariate(1.1)) % 20_000
    quantity = 1 + number % 7 + (version - 1)
    cents = 99 + (number * 104_729) % 250_000
    unit_price: str = f"{cents // 100}.{cents % 100:02d}"
    amount_cents = cents * quantity
    amount = f"{amount_cents // 100}.{amount_cents % 100:02d}"
    fields: dict[str, str] = {
        "sale_id": f'"ORD-{day:%Y%m%d}-{number:010d}-7f3a9c1e5b2d4a6c8e0f1a3b5c7d9e1f"',
        "sale_date": f'"{sale_date}"',
        "store_id": f'"store-{store:04d}-eu-west"',
        "product_id": f'"SKU-{product:06d}-{"x" * (number % 5)}"',
        "customer_id": "null" if number % 10 == 0 else f'"cust-{(number * 31) % 900_000:07d}"',
        "quantity": str(quantity),
        # JSON numbers with trailing zeros ("12.50") test that the literal text is kept.
        "unit_price": unit_price if number % 2 else f'"{unit_price}"',
        "amount": amount if number % 4 == 1 else f'"{amount}"',
        "currency": f'"{CURRENCIES[number % len(CURRENCIES)]}"',
        "updated_at": f'"{updated_at}"',
    }
    if number % 13 == 0:
        fields["channel"] = '{"kind":"web","tags":["a","b"],"score":1.50}'
    if breakage is not None:
        broken = _break(fields, breakage, day)
        if broken is not None:
            return broken
    return "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"


# How each breakage sets one field's JSON text (None: the field is left out); the two that are
# no object at all, and the two that depend on the day, are in _break.
_FIELD_BREAKAGES: dict[str, tuple[str, str | None]] = {
    "missing_sale_id": ("sale_id", None),
    "long_sale_id": ("sale_id", '"' + "L" * 80 + '"'),
    "bad_sale_date": ("sale_date", '"23/11/2026 10:00"'),
    "missing_updated_at": ("updated_at", None),
    "missing_store_id": ("store_id", None),
    "control_char_store_id": ("store_id", '"store\\u0000-1"'),
    "long_product_id": ("product_id", '"' + "P" * 300 + '"'),
    "numeric_customer_id": ("customer_id", "12345"),
    "quantity_zero": ("quantity", "0"),
    "quantity_fraction": ("quantity", "1.50"),
    "negative_unit_price": ("unit_price", "-3.10"),
    "unit_price_five_decimals": ("unit_price", "1.23450"),
    "amount_with_text": ("amount", '"12,50 EUR"'),
    "amount_exponent": ("amount", "1.25E2"),
    "unknown_currency": ("currency", '"XXY"'),
    "zero_amount": ("amount", "0.00"),
    "negative_amount": ("amount", '"-19.90"'),
}


def _break(fields: dict[str, str], breakage: str, day: date) -> str | None:
    """Break ``fields`` in place; returns a whole replacement text for non-objects."""
    if breakage == "not_an_object_list":
        return f"[{fields['sale_id']}, {fields['amount']}]"
    if breakage == "not_an_object_string":
        return '"sale, but as text"'
    if breakage == "sale_date_without_offset":
        fields["sale_date"] = f'"{day.isoformat()}T10:00:00"'
    elif breakage == "sale_date_other_day":
        fields["sale_date"] = f'"{(day - timedelta(days=1)).isoformat()}T23:00:00Z"'
    elif breakage == "quantity_string":
        fields["quantity"] = f'"{fields["quantity"]}"'
    else:
        name, text = _FIELD_BREAKAGES[breakage]
        if text is None:
            del fields[name]
        else:
            fields[name] = text
    return None


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
    recent: list[int] = []
    produced = 0
    page_number = 0
    while produced < records:
        texts: list[str] = []
        for _ in range(min(page_size, records - produced)):
            if recent and rng.random() < duplicate_share:
                # A later version of an earlier sale of the day.
                number, version = recent[rng.randrange(len(recent))], 2
            else:
                number, version = produced, 1
                recent.append(number)
                if len(recent) > 50_000:
                    recent = recent[25_000:]
            breakage = rng.choice(BREAKAGES) if rng.random() < reject_share else None
            texts.append(_record_text(day, rng, number, version, breakage))
            produced += 1
        if nan_every_pages and page_number % nan_every_pages == nan_every_pages - 1:
            # Python's json.dumps writes NaN for a float nan: only the lossless parser reads it.
            texts[-1] = texts[-1].replace('"currency"', '"amount_check": NaN, "currency"', 1)
        cursor = "null" if produced >= records else f'"c{produced}"'
        body = '{"data": [' + ", ".join(texts) + '], "next_cursor": ' + cursor + "}"
        yield len(texts), body.encode()
        page_number += 1


def write_realistic_day(
    lake: Lake,
    day: date,
    records: int,
    *,
    page_size: int = 10_000,
    part_bytes: int = 32 << 20,
    **options: float,
) -> SnapshotRef:
    """Write a committed raw snapshot of a realistic day (see :func:`realistic_pages`)."""
    writer = RawSnapshotWriter(lake, day, part_bytes=part_bytes)
    for number, (count, body) in enumerate(
        realistic_pages(day, records, page_size=page_size, **options)  # type: ignore[arg-type]
    ):
        writer.add(Page(number=number, body=body, records=[None] * count, next_cursor=None))
    return writer.commit()
