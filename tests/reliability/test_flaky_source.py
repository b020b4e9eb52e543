"""Flaky source: every transient fault at once still yields exactly the right rows; a permanent
4xx fails the run at once, naming the status and the endpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devharness.demo_api import Faults, serve_demo_api
from flows.daily_sales import daily_sales
from tests.utils import (
    DAY,
    REFERENCE_DATA,
    WarehouseContents,
    assert_only_the_failure_recorded,
    contents,
    expected_sales_ids,
    manifests,
    pipeline_env,
    set_env,
)

ALL_FAULTS = Faults(
    reset_every=5,
    error_5xx_every=7,
    broken_page_every=9,
    rate_limit_every=11,
    retry_after_seconds=1,
    slow_every=13,
    slow_seconds=2.0,
    duplicate_page_every=3,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def fired(every: int, requests: int) -> int:
    return requests // every


def test_flaky_source_with_every_fault_at_once_yields_exactly_the_right_rows(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, reference: WarehouseContents
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA, ALL_FAULTS) as api:
        set_env(
            monkeypatch, pipeline_env(api.url, str(lake), pg_url, SALES_API_TIMEOUT_SECONDS="1")
        )
        state = daily_sales(run_date=DAY, return_state=True)
        requests = api.requests
        duplicated = api.pages_served // 3

    assert state.is_completed() and state.name == "Completed", state.message
    # Every fault really happened during the run.
    for every in (5, 7, 9, 11, 13):
        assert fired(every, requests) >= 1, (every, requests)
    assert duplicated >= 1
    summary = state.result()
    assert summary["records_extracted"] > REFERENCE_DATA.count(
        DAY.isoformat()
    )  # duplicated pages arrived

    got = contents(pg_url)
    sales_ids, rejected_ids = expected_sales_ids()
    assert {row[0] for row in got.sales} == sales_ids
    assert len(got.sales) == len(sales_ids)
    assert {row[2] for row in got.rejected if row[2] is not None} == rejected_ids
    # Row for row what a fault-free run leaves (a duplicated page only raises `occurrences`).
    assert got.sales == reference.sales
    assert got.rejected == reference.rejected
    assert set(got.occurrences) == set(reference.occurrences)
    assert len(manifests(lake)) == 1


@pytest.mark.parametrize("status", [403, 404])
def test_permanent_4xx_fails_the_run_at_once_naming_status_and_endpoint(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, status: int
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA, Faults(permanent_status=status)) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(lake), pg_url))
        started = time.monotonic()
        state = daily_sales(run_date=DAY, return_state=True)
        elapsed = time.monotonic() - started
        sales_requests = list(api.sales_requests)

    assert state.is_failed()
    assert str(status) in state.message and f"{api.url}/sales" in state.message, state.message
    assert len(sales_requests) == 1, "a permanent error must not be retried"
    assert elapsed < 20
    assert not lake.exists() or not list(lake.rglob("*.parquet"))
    assert_only_the_failure_recorded(pg_url)
