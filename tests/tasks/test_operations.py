"""The operations side of a run under a Prefect test API: the days artifact, the day's events
and the quality limit, on PostgreSQL with the demo API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.events.schemas.events import Event
from prefect.states import State

from devharness.demo_api import DemoData, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.errors import QualityError
from sales_etl.settings import LakeConfig
from tasks.load import load_sales
from tests.utils import DAY, query

pytestmark = pytest.mark.usefixtures("prefect_harness")

# 200 sales, every 10th one malformed: 20 rejects, a 10 % reject rate.
DATA = DemoData(rows_per_day=200, malformed_every=10)


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, pg_url: str, local_lake: LakeConfig) -> str:
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
    return pg_url


def days_artifact() -> Any:
    async def latest() -> Any:
        async with get_client() as client:
            [artifact] = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-sales-days"]))
            )
        return artifact

    return asyncio.run(latest())


def run(day: Any = DAY) -> State:
    return daily_sales(run_date=day, return_state=True)


def test_a_week_with_a_missing_and_a_failed_day_in_the_days_artifact(
    configured: str, monkeypatch: pytest.MonkeyPatch, emitted_events: Callable[[str], list[Event]]
) -> None:
    week = [DAY - timedelta(days=6 - i) for i in range(7)]
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        for day in week[:2] + week[3:5] + week[6:]:
            assert run(day).is_completed()
        api.set_faults(permanent_status=403)
        failed = run(week[5])
    assert failed.is_failed()
    # week[2] never ran: missing. week[5] failed at the source: failed.
    artifact = days_artifact()
    rows = {row["day"]: row for row in json.loads(artifact.data)}
    assert len(rows) == 30
    assert [rows[d.isoformat()]["status"] for d in week] == [
        "loaded", "loaded", "missing", "loaded", "loaded", "failed", "loaded",
    ]  # fmt: skip
    loaded = rows[DAY.isoformat()]
    assert (loaded["records"], loaded["valid"], loaded["rejected"]) == (200, 180, 20)
    assert loaded["reject rate"] == "10.00%"
    assert loaded["sales in warehouse"] == 180
    assert "5 loaded, 1 failed, 24 missing" in artifact.description
    # Each day links to its last flow run in the UI; a missing or failed day says what fills it.
    failed_row, missing_row = rows[week[5].isoformat()], rows[week[2].isoformat()]
    assert failed_row["last flow run"].endswith(
        f"/runs/flow-run/{failed.state_details.flow_run_id}"
    )
    assert failed_row["last flow run"].startswith("http://127.0.0.1:")
    assert failed_row["fill it with"] == f"python -m flows.daily_sales --date {week[5]}"
    assert failed_row["or the backfill deployment"] == (
        f"prefect deployment run 'Daily Sales Backfill/backfill' "
        f"-p start={week[5]} -p end={week[5]} -p mode=failed"
    )
    assert missing_row["last flow run"] is None
    assert missing_row["fill it with"] == f"python -m flows.daily_sales --date {week[2]}"
    assert missing_row["or the backfill deployment"].endswith(" -p mode=missing")
    assert (loaded["fill it with"], loaded["or the backfill deployment"]) == ("", "")

    failed_events = [e for e in emitted_events("sales.day") if e.event == "sales.day.failed"]
    assert [e.resource.id for e in failed_events] == [f"sales.day.{week[5]}"]
    assert "403" in failed_events[0].payload["reason"]


def test_a_failed_load_is_a_failed_day(
    configured: str, monkeypatch: pytest.MonkeyPatch, emitted_events: Callable[[str], list[Event]]
) -> None:
    monkeypatch.setattr(load_sales, "retry_delay_seconds", [0, 0])
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        assert run().is_completed()
        # The load fails inside the warehouse: the ledger gets a 'failed' row.
        query(configured, "ALTER TABLE sales RENAME COLUMN quantity TO qty")
        failed = daily_sales(run_date=DAY, reload=True, return_state=True)
    assert failed.is_failed()
    row = {r["day"]: r for r in json.loads(days_artifact().data)}[DAY.isoformat()]
    assert row["status"] == "failed"
    assert row["valid"] == 180  # the counts of the last successful load stay
    assert row["attempts"] == 4  # one load, then three attempts (the task's retries), no extra
    assert "quantity" in row["message"]
    assert [e.event for e in emitted_events("sales.day")][-1] == "sales.day.failed"


def test_loaded_and_degraded_events_carry_the_day_counts_and_rate(
    configured: str, monkeypatch: pytest.MonkeyPatch, emitted_events: Callable[[str], list[Event]]
) -> None:
    monkeypatch.setenv("QUALITY_MAX_REJECT_RATE", "0.08")
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        assert run().is_completed()
    by_name = {e.event: e for e in emitted_events("sales.day")}
    assert set(by_name) == {"sales.day.loaded", "sales.day.quality-degraded"}  # an old day: no due
    loaded = by_name["sales.day.loaded"]
    assert loaded.resource.id == "sales.day.2026-11-23"
    assert loaded.resource["sales.day"] == "2026-11-23"
    assert (loaded.payload["records"], loaded.payload["valid"], loaded.payload["rejected"]) == (
        200, 180, 20,
    )  # fmt: skip
    assert loaded.payload["reject_rate"] == pytest.approx(0.1)
    assert loaded.payload["day_sales"] == 180
    assert loaded.payload["day_amount"] == str(
        query(configured, "SELECT sum(amount) FROM sales")[0][0]
    )
    degraded = by_name["sales.day.quality-degraded"]
    assert degraded.resource.id == "sales.day.2026-11-23"
    assert degraded.payload["reasons"] == ["reject rate 10.00% is above 8.00%"]
    # Related resources tie the event to its flow run (Prefect adds them in a run context).
    assert any(r.role == "flow-run" for r in loaded.related)


def test_above_the_hard_limit_the_run_fails_after_loading_the_rejects(
    configured: str, monkeypatch: pytest.MonkeyPatch, emitted_events: Callable[[str], list[Event]]
) -> None:
    monkeypatch.setenv("QUALITY_FAIL_REJECT_RATE", "0.09")
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        state = run()
    assert state.is_failed()
    with pytest.raises(QualityError, match=r"reject rate 10\.00% of 2026-11-23 is above the hard "
                       r"limit 9\.00%"):  # fmt: skip
        state.result()
    assert query(configured, "SELECT count(*) FROM sales") == [(180,)]
    assert query(configured, "SELECT count(*) FROM sales_rejected") == [(20,)]
    assert [e.event for e in emitted_events("sales.day")] == [
        "sales.day.loaded", "sales.day.quality-degraded", "sales.day.failed",
    ]  # fmt: skip
    [(status, message)] = query(configured, "SELECT status, message FROM sales_load_ledger "
                                "ORDER BY load_id DESC LIMIT 1")  # fmt: skip
    assert status == "failed"
    assert message.startswith("reject rate 10.00% of 2026-11-23 is above the hard limit 9.00%")


def test_a_recent_day_is_due_at_midnight_after_it(
    configured: str, monkeypatch: pytest.MonkeyPatch, emitted_events: Callable[[str], list[Event]]
) -> None:
    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        assert run(today).is_completed()
    [due] = [e for e in emitted_events("sales.day") if e.event == "sales.day.due"]
    assert due.resource.id == f"sales.day.{today}"
    assert due.occurred == datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
