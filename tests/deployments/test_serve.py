"""The served hourly deployment on a real Prefect server: schedule, scheduler, runs, backfill."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from deployments.backfill import idempotency_key
from deployments.common import PROJECT_ROOT
from sales_etl.dates import scheduled_business_date
from tests.conftest import run_env
from tests.deployments.conftest import (
    Served,
    loaded_rows,
    summary_metrics,
    wait_for,
    wait_for_final_state,
)

pytestmark = pytest.mark.e2e


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def create_flow_run(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """POST /deployments/{id}/create_flow_run: what the UI's Run button sends."""
    with served.server.client() as client:
        response = client.post(f"/deployments/{served.deployment_id}/create_flow_run", json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def assert_loaded(served: Served, run: dict[str, Any], day: date) -> None:
    """The run completed and its rows, all of ``day``, are in PostgreSQL as its summary says."""
    assert run["state"]["type"] == "COMPLETED", (run["state"], served.log.read_text()[-3000:])
    metrics = summary_metrics(served.server, run["id"])
    rows = loaded_rows(served.warehouse_url, run["id"])
    assert metrics["description"] == f"Daily Sales ETL {day.isoformat()}: loaded"
    assert metrics["inserted"] > 0
    assert rows == [(day, metrics["inserted"] + metrics["updated"])]


def test_serve_registers_the_hourly_deployment(served: Served) -> None:
    deployment = served.deployment
    assert deployment["name"] == "hourly"
    assert deployment["entrypoint"] == "flows/daily_sales.py:daily_sales"
    assert deployment["tags"] == ["etl"]
    assert deployment["parameters"] == {"run_date": None, "refresh": False}
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["work_pool_name"] is None  # served: no worker, no pool
    [schedule] = deployment["schedules"]
    assert schedule["active"] is True
    assert schedule["slug"] == "hourly"
    assert schedule["schedule"]["interval"] == 3600
    assert schedule["schedule"]["timezone"] == "UTC"
    assert parse_time(schedule["schedule"]["anchor_date"]) == datetime(2026, 1, 1, tzinfo=UTC)
    # The parameter form of the UI: a date and a flag.
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert properties["refresh"]["type"] == "boolean"
    assert {"type": "string", "format": "date"} in properties["run_date"]["anyOf"]


def test_the_scheduler_creates_the_upcoming_hourly_runs(served: Served) -> None:
    def upcoming() -> list[dict[str, Any]]:
        with served.server.client() as client:
            response = client.post(
                "/flow_runs/filter",
                json={
                    "deployments": {"id": {"any_": [served.deployment_id]}},
                    "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                    "sort": "EXPECTED_START_TIME_ASC",
                },
            )
        response.raise_for_status()
        runs = [r for r in response.json() if "auto-scheduled" in r["tags"]]
        return runs if len(runs) >= 3 else []

    runs = wait_for(upcoming, 60, "three auto-scheduled runs of 'hourly'")
    starts = [parse_time(r["expected_start_time"]) for r in runs]
    now = datetime.now(UTC)
    assert all(start > now - timedelta(minutes=1) for start in starts)
    assert all((start.minute, start.second, start.microsecond) == (0, 0, 0) for start in starts)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == [timedelta(hours=1)] * (len(starts) - 1)
    assert all(r["parameters"] == {"run_date": None, "refresh": False} for r in runs)
    assert starts[0] - now <= timedelta(hours=1)


def test_a_run_created_through_the_api_loads_the_day_into_postgres(served: Served) -> None:
    day = date(2026, 11, 20)
    created = create_flow_run(served, {"parameters": {"run_date": day.isoformat()}})
    assert created["parameters"] == {"run_date": day.isoformat(), "refresh": False}
    run = wait_for_final_state(served.server, created["id"])
    assert_loaded(served, run, day)


def test_a_run_scheduled_just_after_midnight_closes_the_previous_day(served: Served) -> None:
    # No run_date: the day comes from the scheduled start, 00:00 UTC -> the day before.
    scheduled = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    state = {"type": "SCHEDULED", "state_details": {"scheduled_time": scheduled.isoformat()}}
    created = create_flow_run(served, {"state": state})
    assert created["parameters"] == {"run_date": None, "refresh": False}
    run = wait_for_final_state(served.server, created["id"])
    assert scheduled_business_date(scheduled) == date(2026, 11, 21)
    assert_loaded(served, run, date(2026, 11, 21))


def test_backfill_runs_each_day_once_through_the_deployment(served: Served) -> None:
    # A tag of its own per session keeps the idempotency keys fresh on a reused server.
    tag = served.deployment_id[:8]
    command = [
        sys.executable, "-m", "deployments.backfill",
        "--start", "2026-11-16", "--end", "2026-11-17", "--max-in-flight", "2",
        "--rerun", tag,
    ]  # fmt: skip
    env = run_env(PREFECT_API_URL=served.server.api_url, PREFECT_HOME=str(served.lake.parent))

    def backfill() -> dict[date, str]:
        done = subprocess.run(
            command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == "2 of 2 days completed"
        runs = {}
        for line in done.stdout.splitlines()[:-1]:
            day, state, _name, run_id = line.split()
            assert state == "Completed"
            runs[date.fromisoformat(day)] = run_id
        return runs

    first = backfill()
    assert sorted(first) == [date(2026, 11, 16), date(2026, 11, 17)]
    for day, run_id in first.items():
        assert_loaded(served, wait_for_final_state(served.server, run_id), day)
        with served.server.client() as client:
            run = client.get(f"/flow_runs/{run_id}").json()
        assert run["idempotency_key"] == idempotency_key("Daily Sales ETL/hourly", day, tag)
        assert "backfill" in run["tags"]
    # Idempotent: the same backfill again finds the same runs and starts nothing new.
    assert backfill() == first
