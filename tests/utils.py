"""Helpers shared by the test modules (one definition each)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

# The business day most tests load.
DAY = date(2026, 11, 23)


def query(url: str, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` (committed) on the database at ``url``; its rows as tuples, if any."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tables(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a warehouse holds of its sales and rejects, without who loaded them when (run ids,
    load times): two warehouses loaded from the same records compare equal."""
    columns = "sale_id, sale_date, store_id, product_id, customer_id, quantity, unit_price, "
    columns += "amount, currency, updated_at, extra"
    rejected = "business_date, record_hash, sale_id, updated_at, reason, detail, raw_record, "
    rejected += "occurrences"
    return (
        query(url, f"SELECT {columns} FROM sales ORDER BY sale_id"),
        query(url, f"SELECT {rejected} FROM sales_rejected ORDER BY record_hash"),
    )
