"""Money at the edges of the contract's ``numeric(18,4)``, end to end into PostgreSQL.

float64 holds ~15-16 significant digits; the contract allows 18. These records arrive as the
API sends them (JSON numbers written with their full literal text, and decimal strings), go
through the flow (extract, transform, load) and must be stored to the last digit: a change that
sends money through ``float64`` anywhere on the way fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devharness.demo_api import DemoData, generate_record, serve_demo_api
from flows.daily_sales import daily_sales
from tests.utils import DAY, DAY_TEXT, pipeline_env, query, set_env, table_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")

PAGE_SIZE = 200  # pipeline_env's SALES_API_PAGE_SIZE


def number(text: str) -> dict[str, str]:
    """A JSON number spelt exactly as ``text`` (json.dumps would go through a float)."""
    return {"__number__": text}


# (unit_price, amount) as sent, and as PostgreSQL must store them.
MONEY: list[tuple[Any, Any, str, str]] = [
    (
        number("99999999999999.9999"),
        number("99999999999999.9999"),
        "99999999999999.9999",
        "99999999999999.9999",
    ),
    ("99999999999999.9999", "12345678901234.5678", "99999999999999.9999", "12345678901234.5678"),
    (number("12345678901234.5678"), "0.10", "12345678901234.5678", "0.1000"),
    ("0.10", number("12345678901234.5678"), "0.1000", "12345678901234.5678"),
    (number("0.10"), number("0.0001"), "0.1000", "0.0001"),
    (number("1.5"), number("98765432109876.5432"), "1.5000", "98765432109876.5432"),
]
# Beyond numeric(18,4): a reject that keeps the number's literal text.
TOO_BIG = "123456789012345.6789"


def records() -> list[dict[str, Any]]:
    out = []
    for i, (unit_price, amount, _, _) in enumerate(MONEY):
        record = generate_record(DAY_TEXT, i)
        record.update(quantity=1, unit_price=unit_price, amount=amount)
        out.append(record)
    too_big = generate_record(DAY_TEXT, len(MONEY))
    too_big["amount"] = number(TOO_BIG)
    out.append(too_big)
    return out


def page_body(items: list[dict[str, Any]]) -> bytes:
    text = json.dumps({"data": items, "next_cursor": None})
    for item in items:
        for value in item.values():
            if isinstance(value, dict) and "__number__" in value:
                text = text.replace(json.dumps(value), value["__number__"], 1)
    return text.encode()


def test_money_beyond_float64_is_stored_to_the_last_digit(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    items = records()
    body = page_body(items)
    assert b"12345678901234.5678," in body and b'"__number__"' not in body
    with serve_demo_api(DemoData(records={DAY_TEXT: items})) as api:
        # The one page of the day, spelt exactly: numbers with all their digits.
        api.page_cache = {(DAY_TEXT, 0, PAGE_SIZE, None): body}
        set_env(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message

    stored = query(pg_url, "SELECT sale_id, unit_price::text, amount::text FROM sales ORDER BY 1")
    rejects = table_rows(pg_url, "sales_rejected", ["reason", "raw_record"])
    [(day_amount,)] = query(
        pg_url, "SELECT day_amount::text FROM sales_load_ledger WHERE status = 'loaded'"
    )
    expected = [
        (items[i]["sale_id"], unit_price, amount)
        for i, (_, _, unit_price, amount) in enumerate(MONEY)
    ]
    assert [tuple(row) for row in stored] == expected
    assert day_amount == "223456789912345.7788"
    assert len(rejects) == 1
    reason, raw = rejects[0]
    assert reason == "invalid_amount"
    assert f'"amount":{TOO_BIG},' in raw
