"""A run of a day materializes its three Prefect assets: the events, read back from the Prefect
test API through the client, carry the day's keys, their lineage and their metadata."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
)
from prefect.events.schemas.events import Event
from prefect.types._datetime import now

from devharness.demo_api import DemoData, serve_demo_api
from flows.daily_sales import daily_sales
from tasks.assets import (
    ASSET_DUE,
    ASSET_REFERENCED,
    MATERIALIZATION_SUCCEEDED,
)
from tests.utils import DAY, query, wait_for

# 200 sales, every 10th one malformed: 180 valid, 20 rejected.
DATA = DemoData(rows_per_day=200, malformed_every=10)


pytestmark = pytest.mark.usefixtures("prefect_harness")


def run_events(flow_run_id: str, expected: int) -> list[Event]:
    """The asset events of flow run ``flow_run_id`` once the API holds ``expected`` of them."""
    since = now("UTC") - timedelta(hours=1)
    names = [ASSET_DUE, ASSET_REFERENCED, MATERIALIZATION_SUCCEEDED]
    related = EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"])
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=since),
        event=EventNameFilter(name=names),
        related=related,
    )

    def read() -> list[Event] | None:
        with get_client(sync_client=True) as client:
            events = list(client.read_events(filter=event_filter, limit=50).events)
        return events if len(events) >= expected else None

    events: list[Event] = wait_for(read, 120, f"{expected} asset events of the run", interval=1)
    return events


def by_name(events: list[Event], name: str) -> dict[str, Event]:
    return {event.resource.id: event for event in events if event.event == name}


def test_a_run_materializes_raw_clean_and_warehouse_with_their_metadata(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", str(lake))
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    # 3 materializations, raw referenced by clean and clean by the load, one due.
    events = run_events(flow_run_id, expected=6)

    day = "date=2026-11-23"
    raw_key = f"file://{lake.resolve()}/raw/sales/{day}"
    clean_key = f"file://{lake.resolve()}/clean/sales/{day}"
    [(database,)] = query(pg_url, "SELECT current_database()")
    warehouse_key = f"postgresql://127.0.0.1:5432/{database}/public.sales/{day}"

    materialized = by_name(events, MATERIALIZATION_SUCCEEDED)
    assert set(materialized) == {raw_key, clean_key, warehouse_key}
    assert set(by_name(events, ASSET_REFERENCED)) == {raw_key, clean_key}
    assert set(by_name(events, ASSET_DUE)) == {warehouse_key}
    assert upstream(materialized[raw_key]) == set()
    assert upstream(materialized[clean_key]) == {raw_key}
    # The declared dependency; Prefect adds the assets it infers from the task's inputs (the
    # raw lake too, through the results of the tasks that read the raw snapshot).
    assert clean_key in upstream(materialized[warehouse_key])
    assert warehouse_key not in upstream(materialized[warehouse_key])

    [(snapshot_id, amount, mark)] = query(
        pg_url, "SELECT snapshot_id, day_amount, high_water_mark FROM sales_load_ledger"
    )
    raw = materialized[raw_key].payload
    assert (raw["snapshot_id"], raw["records"], raw["mode"]) == (snapshot_id, 200, "full")
    clean = materialized[clean_key].payload
    assert (clean["records"], clean["valid"], clean["rejected"]) == (200, 180, 20)
    assert clean["snapshot_id"] == snapshot_id
    loaded = materialized[warehouse_key].payload
    assert (loaded["records"], loaded["valid"], loaded["rejected"]) == (200, 180, 20)
    assert (loaded["inserted"], loaded["day_sales"]) == (180, 180)
    assert loaded["amount"] == str(amount)
    assert loaded["high_water_mark"] == mark.isoformat()
    assert (loaded["snapshot_id"], loaded["load_skipped"]) == (snapshot_id, False)


def upstream(event: Event) -> set[str]:
    return {r.id for r in event.related if r.role == "asset"}


def test_a_rerun_of_a_loaded_snapshot_still_materializes_the_warehouse(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    """The extract is cached and the clean snapshot reused (nothing written: no event), the
    load skipped by the ledger: the day is up to date, so the warehouse asset is fresh."""
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", str(tmp_path / "lake"))
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        assert daily_sales(run_date=DAY, return_state=True).is_completed()
        # The whole day again: the same source state, so the cached extract.
        again = daily_sales(run_date=DAY, full_extract=True, return_state=True)
    assert again.is_completed(), again.message
    events = run_events(str(again.state_details.flow_run_id), expected=3)
    materialized: dict[str, Any] = by_name(events, MATERIALIZATION_SUCCEEDED)
    [(key, event)] = materialized.items()
    assert key.startswith("postgresql://") and key.endswith("/public.sales/date=2026-11-23")
    assert event.payload["load_skipped"] is True
    assert event.payload["day_sales"] == 180
    assert set(by_name(events, ASSET_DUE)) == {key}
