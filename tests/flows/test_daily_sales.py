from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from prefect.states import State

from flows.daily_sales import daily_sales
from sales_etl.demo_api import DemoData, Faults, serve_demo_api

DAY = date(2026, 11, 23)


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    return None


def counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sales = conn.execute(sa.text("SELECT count(*) FROM sales")).scalar_one()
        rejected = conn.execute(sa.text("SELECT count(*) FROM sales_rejected")).scalar_one()
    engine.dispose()
    return int(sales), int(rejected)


def test_flow_loads_a_day_into_postgres_and_s3(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, s3_lake, tmp_path
) -> None:
    data = DemoData(rows_per_day=300, malformed_every=10, update_every=20)
    with serve_demo_api(data, Faults(error_5xx_every=4)) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        monkeypatch.setenv("WAREHOUSE_URL", pg_url)
        monkeypatch.setenv("DATA_LAKE_URL", s3_lake.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_lake.endpoint_url)
        state: State = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["records_extracted"] == 315
    assert counts(pg_url)[0] == summary["inserted"]
