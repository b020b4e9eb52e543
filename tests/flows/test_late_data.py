"""Several loads of one changing day through the flow: incremental or full, the newest truth.

The demo API serves a realistic day (10% rejects over every reason, duplicates, long ids) and
then later revisions of it (updates, voids, fixes of rejects, new sales, stale versions,
malformed updates). Hourly runs extract incrementally from the warehouse's high-water mark; a
server without ``updated_since`` (ignoring it, or answering 400) gets full extractions. Every
path ends in the tables an independent fold of every served record says.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from devharness.demo_api import DemoData, serve_demo_api
from devharness.demo_days import REALISTIC, day_records
from flows.daily_sales import daily_sales
from sales_etl import jsontext
from sales_etl.settings import LakeConfig
from sales_etl.validate import FIELDS, NON_POSITIVE_AMOUNT, validate_records
from tasks.extract import extract_sales
from tests.utils import DAY, DAY_TEXT, closed_port_url, contents, query, table_rows

MIX = dataclasses.replace(REALISTIC, rows=3000).with_change_rate(0.05)
REVISIONS = (0, 1, 2, 3)


pytestmark = pytest.mark.usefixtures("prefect_harness", "no_retry_delay")


def expected_sales() -> dict[str, Decimal]:
    """Fold every record any revision served: per sale_id the newest well-formed version wins
    (ties: the later one); a void (amount <= 0) means no sale."""
    newest: dict[str, tuple[Any, int, Decimal | None]] = {}
    order = 0
    for revision in REVISIONS:
        served = jsontext.loads(json.dumps(day_records(MIX, DAY_TEXT, revision)))
        result = validate_records(served, DAY)
        for row in result.clean.itertuples():
            order += 1
            _keep(newest, row.sale_id, (row.updated_at, order, Decimal(row.amount)))
        voids = result.rejected[result.rejected["reason"] == NON_POSITIVE_AMOUNT]
        for row in voids.itertuples():
            order += 1
            _keep(newest, row.sale_id, (row.updated_at, order, None))
    return {sale: amount for sale, (_, _, amount) in newest.items() if amount is not None}


def _keep(newest: dict[str, Any], sale_id: str, version: tuple[Any, int, Decimal | None]) -> None:
    if sale_id not in newest or version[:2] >= newest[sale_id][:2]:
        newest[sale_id] = version


@pytest.fixture
def lake_env(monkeypatch: pytest.MonkeyPatch, s3_lake: LakeConfig) -> None:
    monkeypatch.setenv("DATA_LAKE_URL", s3_lake.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(s3_lake.endpoint_url))


def load_every_revision(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, capability: str
) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("SALES_API_PAGE_SIZE", "200")
    with serve_demo_api(DemoData(mix=MIX), updated_since=capability) as api:  # type: ignore[arg-type]
        monkeypatch.setenv("SALES_API_URL", api.url)
        for revision in REVISIONS:
            api.set_data(revision=revision)
            before = api.requests
            state = daily_sales(run_date=DAY, return_state=True)
            assert state.is_completed(), state.message
            yield {**state.result(), "sales_requests": api.requests - before}


@pytest.mark.usefixtures("lake_env")
@pytest.mark.parametrize("capability", ["filter", "ignore", "reject"])
def test_loads_of_a_changing_day_end_in_the_newest_truth(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, capability: str
) -> None:
    summaries = list(load_every_revision(monkeypatch, pg_url, capability))
    sales = table_rows(pg_url, "sales", FIELDS, order_by=["sale_id"])
    rejects = table_rows(pg_url, "sales_rejected", ["sale_id", "reason", "raw_record"])
    assert {r[0]: r[7] for r in sales} == expected_sales()
    # No sale sits next to a reject that is not newer than it (voids and superseded rejects).
    assert query(
        pg_url,
        "SELECT count(*) FROM sales s JOIN sales_rejected r USING (sale_id) "
        "WHERE r.updated_at IS NULL OR r.updated_at <= s.updated_at",
    ) == [(0,)]
    assert sum(s["voided"] for s in summaries) > 0
    assert sum(s["quarantined"] for s in summaries) > 0
    first, later = summaries[0], summaries[1:]
    if capability == "filter":
        # After the first load, hourly runs ask only for what changed since the mark.
        assert all(s["sales_requests"] < first["sales_requests"] / 3 for s in later)
        assert all(s["records_extracted"] < first["records_extracted"] / 5 for s in later)
    else:
        assert all(s["records_extracted"] >= first["records_extracted"] for s in later)
    assert rejects  # every reject kept with its raw record


@pytest.mark.usefixtures("lake_env")
@pytest.mark.long
def test_source_down_replays_the_full_snapshot_and_every_delta_after_it(
    monkeypatch: pytest.MonkeyPatch, new_database: Callable[[], str]
) -> None:
    first_db, replayed_db = new_database(), new_database()
    summaries = list(load_every_revision(monkeypatch, first_db, "filter"))
    assert [s["status"] for s in summaries] == ["loaded"] * len(REVISIONS)
    # The same lake, a new warehouse, and the API gone: the lake alone rebuilds the day.
    monkeypatch.setenv("WAREHOUSE_URL", replayed_db)
    monkeypatch.setenv("SALES_API_URL", closed_port_url())
    monkeypatch.setenv("SALES_API_MAX_RETRIES", "0")
    monkeypatch.setattr(extract_sales, "retries", 0)
    state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed() and state.name == "Completed from snapshot", state.message
    assert contents(replayed_db) == contents(first_db)
    assert query(
        replayed_db, "SELECT mode, count(*) FROM sales_load_ledger GROUP BY 1 ORDER BY 1"
    ) == [("full", 1), ("incremental", len(REVISIONS) - 1)]
