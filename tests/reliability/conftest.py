"""Fixtures of the reliability suite: the reference run."""

from __future__ import annotations

import uuid

import pytest

from tests import postgres
from tests.utils import (
    DAY,
    REFERENCE_DATA,
    WarehouseContents,
    contents,
    pipeline_env,
    set_env,
)


@pytest.fixture(scope="session")
def reference(
    prefect_harness: None, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> WarehouseContents:
    """What one clean, fault-free run of :data:`REFERENCE_DATA` leaves in the warehouse."""
    from devharness.demo_api import serve_demo_api
    from flows.daily_sales import daily_sales

    name = f"etl_ref_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_admin_url, name)
    lake = tmp_path_factory.mktemp("reference-lake")
    try:
        with serve_demo_api(REFERENCE_DATA) as api, pytest.MonkeyPatch.context() as mp:
            set_env(mp, pipeline_env(api.url, str(lake), url))
            state = daily_sales(run_date=DAY, return_state=True)
        assert state.is_completed(), state.message
        result = contents(url)
    finally:
        postgres.drop_database(pg_admin_url, name)
    # Sanity of the reference itself: updates, rejects with and without sale_id.
    assert len(result.sales) > 1000 and len(result.rejected) > 20
    return result
