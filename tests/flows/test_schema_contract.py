"""The schema contract end to end: a source that adds, drops or retypes a field, under each
``SCHEMA_CONTRACT`` mode, with the demo API, the real PostgreSQL and a Prefect test API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect.events.schemas.events import Event
from prefect.states import State

from devharness.demo_api import NEW_FIELD, DemoData, DemoSalesApi, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.errors import SchemaContractError
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import list_snapshots
from tasks.extract import extract_sales
from tests.utils import DAY, query, table_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROWS = 200
HALFWAY = 120  # records from this position on carry the new field


@pytest.fixture
def api() -> Iterator[DemoSalesApi]:
    with serve_demo_api(DemoData(rows_per_day=ROWS)) as running:
        yield running


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch, api: DemoSalesApi, pg_url: str, local_lake: LakeConfig
) -> str:
    monkeypatch.setenv("SALES_API_URL", api.url)
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
    return pg_url


def run(**params: Any) -> State:
    return daily_sales(run_date=DAY, return_state=True, **params)


def test_a_field_added_halfway_through_the_day_is_kept_under_evolve(
    api: DemoSalesApi,
    configured: str,
    local_lake: LakeConfig,
    emitted_events: Callable[[str], list[Event]],
) -> None:
    api.set_data(new_field_from=HALFWAY)
    state = run()
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["schema_contract"] == "evolve"
    assert summary["schema_change"] == f"added {NEW_FIELD} ({ROWS - HALFWAY} records)"
    [event] = emitted_events("sales.schema.changed")
    assert event.resource.id == f"sales.day.{DAY}"
    assert event.payload["mode"] == "evolve"
    assert (event.payload["added"], event.payload["missing"], event.payload["retyped"]) == (
        {NEW_FIELD: ROWS - HALFWAY},
        {},
        {},
    )
    # The raw manifest holds the shape the event was judged from.
    [raw] = list_snapshots(open_lake(local_lake), "raw", DAY)
    assert raw.manifest["shape"]["fields"][NEW_FIELD] == {"string": ROWS - HALFWAY}
    assert raw.manifest["shape"]["fields"]["quantity"] == {"number": ROWS}
    # Every value the source sent is in the warehouse: the new field in sales.extra.
    assert query(configured, "SELECT count(*), count(extra) FROM sales") == [(ROWS, ROWS - HALFWAY)]
    assert query(
        configured, "SELECT extra FROM sales WHERE sale_id = :id", {"id": f"20261123-{HALFWAY:09d}"}
    ) == [({NEW_FIELD: "web" if HALFWAY % 2 else "store"},)]
    [(change,)] = query(configured, "SELECT schema_change FROM sales_load_ledger")
    assert change == summary["schema_change"]
    # A rerun that reloads the snapshot changes nothing: the jsonb values compare equal.
    before = table_rows(configured, "sales", order_by=["sale_id"])
    again = run(reload=True, full_extract=True).result()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, ROWS)
    assert table_rows(configured, "sales", order_by=["sale_id"]) == before


def test_a_replay_from_the_lake_reproduces_the_extra_fields(
    api: DemoSalesApi, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALES_API_MAX_RETRIES", "0")
    monkeypatch.setattr(extract_sales, "retry_delay_seconds", [0, 0])
    api.set_data(new_field_from=HALFWAY)
    assert run().is_completed()
    business = "SELECT sale_id, quantity, amount, customer_id, extra FROM sales ORDER BY sale_id"
    before = query(configured, business)
    query(configured, "TRUNCATE sales, sales_rejected, sales_load_ledger")
    api.set_faults(error_5xx_every=1)  # the source is down: the day comes from the raw lake
    state = run(refresh=True)
    assert state.is_completed() and state.name == "Completed from snapshot", state.message
    assert state.result()["schema_change"] == f"added {NEW_FIELD} ({ROWS - HALFWAY} records)"
    assert query(configured, business) == before


def test_freeze_fails_the_day_before_anything_is_loaded_naming_the_fields(
    api: DemoSalesApi,
    configured: str,
    monkeypatch: pytest.MonkeyPatch,
    emitted_events: Callable[[str], list[Event]],
) -> None:
    monkeypatch.setenv("SCHEMA_CONTRACT", "freeze")
    assert run().is_completed()  # the contract's shape: nothing to refuse
    before = table_rows(configured, "sales", order_by=["sale_id"])
    api.set_data(new_field_from=HALFWAY)
    state = run(refresh=True)
    assert state.is_failed()
    with pytest.raises(SchemaContractError) as failed:
        state.result()
    message = str(failed.value)
    assert f"added {NEW_FIELD} ({ROWS - HALFWAY} records)" in message
    assert "SCHEMA_CONTRACT=freeze" in message and "nothing was loaded" in message
    assert table_rows(configured, "sales", order_by=["sale_id"]) == before
    [(status, ledger_message)] = query(
        configured, "SELECT status, message FROM sales_load_ledger ORDER BY load_id DESC LIMIT 1"
    )
    assert status == "failed" and ledger_message == message
    [event] = emitted_events(
        "sales.schema.changed"
    )  # the first run's shape was the contract's: no event
    assert event.payload["mode"] == "freeze"


def test_discard_loads_as_before_and_reports_the_change(
    api: DemoSalesApi,
    configured: str,
    monkeypatch: pytest.MonkeyPatch,
    emitted_events: Callable[[str], list[Event]],
) -> None:
    monkeypatch.setenv("SCHEMA_CONTRACT", "discard")
    api.set_data(new_field_from=HALFWAY)
    state = run()
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["inserted"] == ROWS
    assert summary["schema_change"] == f"added {NEW_FIELD} ({ROWS - HALFWAY} records)"
    assert query(configured, "SELECT count(*), count(extra) FROM sales") == [(ROWS, 0)]
    assert [e.payload["mode"] for e in emitted_events("sales.schema.changed")] == ["discard"]


def test_a_dropped_field_is_missing_against_the_previous_snapshot(
    api: DemoSalesApi, configured: str, emitted_events: Callable[[str], list[Event]]
) -> None:
    assert run().is_completed()
    api.set_data(dropped_field="customer_id")
    state = run(refresh=True)
    assert state.is_completed(), state.message
    summary = state.result()
    [event] = emitted_events("sales.schema.changed")
    assert event.payload["missing"] == {"customer_id": ROWS}
    assert event.payload["previous_snapshot_id"] is not None
    assert summary["schema_change"] == "missing customer_id"
    # Valid without it (the contract allows a null customer): the sales now have none.
    assert query(configured, "SELECT count(*), count(customer_id) FROM sales") == [(ROWS, 0)]


def test_a_retyped_field_is_reported_against_the_previous_snapshot(
    api: DemoSalesApi, configured: str, emitted_events: Callable[[str], list[Event]]
) -> None:
    assert run().is_completed()
    # amount: decimal strings until now, JSON numbers from here on (both valid).
    api.set_data(retyped_field="amount")
    state = run(refresh=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["updated"], summary["unchanged"]) == (0, ROWS)  # the same values
    [event] = emitted_events("sales.schema.changed")
    assert event.payload["retyped"] == {"amount": {"from": ["string"], "to": {"number": ROWS}}}
    assert summary["schema_change"] == f"retyped amount string -> number ({ROWS} records)"


def test_a_field_retyped_against_the_contract_leaves_its_records_rejects_with_their_reason(
    api: DemoSalesApi,
    configured: str,
    monkeypatch: pytest.MonkeyPatch,
    emitted_events: Callable[[str], list[Event]],
) -> None:
    monkeypatch.setenv("QUALITY_FAIL_REJECT_RATE", "1")
    api.set_data(retyped_field="quantity")  # a string now, which the contract does not allow
    state = run()
    assert state.is_completed(), state.message
    [event] = emitted_events("sales.schema.changed")
    assert event.payload["retyped"] == {"quantity": {"from": ["number"], "to": {"string": ROWS}}}
    assert query(configured, "SELECT count(*) FROM sales") == [(0,)]
    assert query(configured, "SELECT reason, count(*) FROM sales_rejected GROUP BY reason") == [
        ("invalid_quantity", ROWS)
    ]
    assert state.result()["rejected_by_reason"] == {"invalid_quantity": ROWS}
