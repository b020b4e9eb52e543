"""The flow end to end under a Prefect test API: PostgreSQL, S3 on moto, the demo API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.states import State

from devharness.demo_api import DemoData, DemoSalesApi, Faults, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.settings import LakeConfig
from tests.utils import DAY, DAY_TEXT, closed_port_url, query, table_contents

pytestmark = pytest.mark.usefixtures("prefect_harness", "no_retry_delay")


@pytest.fixture
def api() -> Iterator[DemoSalesApi]:
    data = DemoData(rows_per_day=300, malformed_every=10, update_every=20)
    with serve_demo_api(data, Faults()) as running:
        yield running


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch, api: DemoSalesApi, pg_url: str, s3_lake: LakeConfig
) -> str:
    monkeypatch.setenv("SALES_API_URL", api.url)
    monkeypatch.setenv("SALES_API_MAX_RETRIES", "2")
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", s3_lake.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(s3_lake.endpoint_url))
    return pg_url


def run(**params: Any) -> State:
    return daily_sales(run_date=DAY, return_state=True, **params)


# 300 generated sales + 15 updates; every 10th sale corrupted (30), 10 kinds x 3.
# Corrupted ids that also get an update (i % 20 == 0 and i % 10 == 9: none) stay rejected.
# Without a valid id: 3 "missing_sale_id" + 3 "not_an_object" records.
EXPECTED_LOADED = 300 - 30
EXPECTED_REJECTED = 30


@pytest.mark.long
def test_a_hostile_api_loads_every_sale_id_exactly_once(api: DemoSalesApi, configured: str) -> None:
    api.set_faults(
        error_5xx_every=4, rate_limit_every=7, retry_after_seconds=0, broken_page_every=9
    )
    state = run()
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["records_extracted"] == 315
    assert summary["clean"] == 285 - 15 + 15  # 270 valid originals + 15 valid updates
    assert summary["rejected"] == EXPECTED_REJECTED
    assert summary["superseded"] == 15
    assert summary["inserted"] == EXPECTED_LOADED
    loaded = {r[0] for r in query(configured, "SELECT sale_id FROM sales")}
    rejected = query(configured, "SELECT sale_id, reason FROM sales_rejected")
    assert len(loaded) == EXPECTED_LOADED
    assert len(rejected) == EXPECTED_REJECTED
    with_id = {r[0] for r in rejected if r[0] is not None}
    assert loaded.isdisjoint(with_id)
    assert len(loaded | with_id) == 300 - 6  # 6 records carry no usable sale_id
    # the updated version (quantity + 1, newer updated_at) replaced the original
    assert query(configured, "SELECT quantity FROM sales WHERE sale_id = '20261123-000000020'") == [
        (_generated_quantity(20) + 1,)
    ]


def _generated_quantity(i: int) -> int:
    from devharness.demo_api import generate_record

    return int(generate_record(DAY_TEXT, i)["quantity"])


def test_second_run_changes_nothing_and_reuses_the_extract(
    api: DemoSalesApi, configured: str
) -> None:
    assert run().is_completed()
    before = table_contents(configured, exclude=())
    requests_after_first = api.requests
    state = run(full_extract=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary["inserted"], summary["updated"], summary["load_skipped"]) == (0, 0, True)
    assert summary["unchanged"] == EXPECTED_LOADED
    assert table_contents(configured, exclude=()) == before
    assert api.requests == requests_after_first  # cached extract: no page fetched again
    # An hourly run asks only for the records changed since the high-water mark (minus the
    # lag): one page here, and nothing changes.
    state = run()
    assert state.is_completed()
    summary = state.result()
    assert (summary["inserted"], summary["updated"], summary["voided"]) == (0, 0, 0)
    assert 0 < summary["records_extracted"] < EXPECTED_LOADED / 10
    assert api.requests == requests_after_first + 1
    assert table_contents(configured, exclude=()) == before


def test_skipped_day_touches_nothing(api: DemoSalesApi, configured: str) -> None:
    api.set_data(skip_days=frozenset({DAY_TEXT}))
    state = run()
    assert state.is_completed()
    assert state.result()["status"] == "skipped"
    assert api.requests == 0
    assert query(configured, "SELECT to_regclass('public.sales')") == [(None,)]


def test_source_down_falls_back_to_the_newest_snapshot(api: DemoSalesApi, configured: str) -> None:
    assert run().is_completed()
    before = table_contents(configured, exclude=())
    api.set_faults(error_5xx_every=1)
    state = run(refresh=True)
    assert state.is_completed()
    assert state.name == "Completed from snapshot"
    summary = state.result()
    assert summary["fallback_used"] is True
    assert summary["status"] == "loaded_from_snapshot"
    assert "503" in summary["fallback_reason"]
    assert table_contents(configured, exclude=()) == before


def test_source_unreachable_falls_back_even_before_the_status_call(
    api: DemoSalesApi, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run().is_completed()
    before = table_contents(configured, exclude=())
    monkeypatch.setenv("SALES_API_URL", closed_port_url())
    state = run(refresh=True)
    assert state.name == "Completed from snapshot"
    assert "ConnectionError" in state.result()["fallback_reason"]
    assert table_contents(configured, exclude=()) == before


def test_source_down_without_snapshot_fails_and_writes_nothing(
    api: DemoSalesApi, configured: str, s3_lake: LakeConfig
) -> None:
    api.set_faults(error_5xx_every=1)
    state = run()
    assert state.is_failed()
    assert "still failing" in str(state.message)
    assert query(configured, "SELECT count(*) FROM sales") == [(0,)]
    # The one write: the day's failure in the load ledger.
    assert query(configured, "SELECT status FROM sales_load_ledger") == [("failed",)]
    from sales_etl.lake import open_lake

    assert open_lake(s3_lake).list("raw/") == []


def test_permanent_error_fails_at_once(api: DemoSalesApi, configured: str) -> None:
    api.set_faults(permanent_status=403)
    state = run()
    assert state.is_failed()
    assert "403" in str(state.message)
    assert "/sales" in str(state.message)
    assert api.requests == 1  # no retries, no fallback


def test_artifacts_summarise_the_run(configured: str) -> None:
    state = run()
    assert state.is_completed()

    async def artifacts() -> dict[str, Any]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )
        return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    assert set(found) - {"daily-sales-transform-progress"} == {
        "daily-sales-summary",
        "daily-sales-report",
        "daily-sales-days",
        "daily-sales-extract-progress",
    }
    assert found["daily-sales-extract-progress"].data == 100.0  # every record of the day
    assert f"| inserted | {EXPECTED_LOADED} |" in str(found["daily-sales-report"].data)
    assert "rejected: invalid_amount" in str(found["daily-sales-summary"].data)
    # Where the load's time went, statement by statement (the stage COPY first).
    for step in ("stage", "pick_winners", "copy_new_sales", "upsert_rejects", "reconcile"):
        assert f"seconds: load step {step}" in str(found["daily-sales-summary"].data), step


def test_a_one_part_day_transforms_in_the_flow_without_a_subflow(configured: str) -> None:
    """The demo day is one raw part: its transform-part task runs in the flow itself (a
    "Transform Sales Parts" subflow would cost one more flow run on every hourly run)."""
    state = run()
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    async def children() -> tuple[list[str], list[str]]:
        async with get_client() as client:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            subflows = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
        own = [t.task_key for t in tasks if t.flow_run_id == flow_run_id]
        return own, [str(f.id) for f in subflows]

    own_tasks, subflows = asyncio.run(children())
    assert any(key.startswith("transform_part") for key in own_tasks), own_tasks
    assert subflows == []
