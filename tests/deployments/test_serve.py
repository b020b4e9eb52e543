"""The served hourly deployment on a real Prefect server: schedule, scheduler, runs, backfill."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.common import PROJECT_ROOT
from deployments.serve import STOP_SECONDS
from sales_etl.dates import scheduled_business_date
from tests.utils import (
    SERVER_START_SECONDS,
    Served,
    create_flow_run,
    loaded_rows,
    run_env,
    running_prefect_server,
    summary_metrics,
    wait_for,
    wait_for_final_state,
)

pytestmark = pytest.mark.e2e


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


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

    runs = wait_for(upcoming, 60, "three auto-scheduled runs of 'hourly'", interval=0.5)
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
    created = create_flow_run(
        served.server, served.deployment_id, {"parameters": {"run_date": day.isoformat()}}
    )
    assert created["parameters"] == {"run_date": day.isoformat(), "refresh": False}
    run = wait_for_final_state(served.server, created["id"])
    assert_loaded(served, run, day)


def test_a_run_scheduled_just_after_midnight_closes_the_previous_day(served: Served) -> None:
    # No run_date: the day comes from the scheduled start, 00:00 UTC -> the day before.
    scheduled = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    state = {"type": "SCHEDULED", "state_details": {"scheduled_time": scheduled.isoformat()}}
    created = create_flow_run(served.server, served.deployment_id, {"state": state})
    assert created["parameters"] == {"run_date": None, "refresh": False}
    run = wait_for_final_state(served.server, created["id"])
    assert scheduled_business_date(scheduled) == date(2026, 11, 21)
    assert_loaded(served, run, date(2026, 11, 21))


def backfill_deployment(served: Served) -> dict[str, Any]:
    with served.server.client() as client:
        response = client.get("/deployments/name/Daily Sales Backfill/backfill")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def backfill_children(served: Served, days: list[date]) -> dict[date, dict[str, Any]]:
    with served.server.client() as client:
        response = client.post(
            "/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": [f"backfill-{d.isoformat()}" for d in days]}}},
        )
    response.raise_for_status()
    return {date.fromisoformat(r["name"].removeprefix("backfill-")): r for r in response.json()}


def test_the_backfill_deployment_has_a_form(served: Served) -> None:
    deployment = backfill_deployment(served)
    assert deployment["entrypoint"] == "flows/backfill.py:daily_sales_backfill"
    assert deployment["parameters"] == {"deployment": "Daily Sales ETL/hourly"}
    assert deployment["schedules"] == []
    schema = deployment["parameter_openapi_schema"]
    assert schema["required"] == ["start", "end"]
    properties = schema["properties"]
    assert properties["start"]["format"] == properties["end"]["format"] == "date"
    assert properties["mode"]["enum"] == ["missing", "failed", "all"]
    assert properties["max_parallel"]["type"] == "integer"
    assert properties["dry_run"]["type"] == "boolean"


def test_the_housekeeping_deployment_runs_daily_with_a_form(served: Served) -> None:
    with served.server.client() as client:
        response = client.get("/deployments/name/Lake Housekeeping/housekeeping")
    response.raise_for_status()
    deployment = response.json()
    assert deployment["entrypoint"] == "flows/housekeeping.py:lake_housekeeping"
    assert deployment["tags"] == ["etl", "housekeeping"]
    [schedule] = deployment["schedules"]
    assert schedule["slug"] == "daily-housekeeping"
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("30 3 * * *", "UTC")
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert properties["dry_run"]["type"] == "boolean"
    assert {"type": "integer"} in properties["keep"]["anyOf"]


@pytest.mark.long
def test_a_missing_backfill_from_the_form_loads_exactly_the_missing_days(served: Served) -> None:
    days = [date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)]
    loaded = create_flow_run(
        served.server, served.deployment_id, {"parameters": {"run_date": days[1].isoformat()}}
    )
    assert_loaded(served, wait_for_final_state(served.server, loaded["id"]), days[1])
    form = {"start": days[0].isoformat(), "end": days[-1].isoformat(), "mode": "missing",
            "max_parallel": 2}  # fmt: skip
    deployment_id = backfill_deployment(served)["id"]
    with served.server.client() as client:
        response = client.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": form}
        )
    response.raise_for_status()
    run = wait_for_final_state(served.server, response.json()["id"], timeout=300)
    assert run["state"]["type"] == "COMPLETED", (run["state"], served.log.read_text()[-3000:])

    children = backfill_children(served, days)
    assert sorted(children) == [days[0], days[2]]  # exactly the missing days
    for day, child in children.items():
        assert child["idempotency_key"] == f"backfill:Daily Sales ETL/hourly:{day}:none"
        assert "backfill" in child["tags"]
        assert_loaded(served, wait_for_final_state(served.server, child["id"]), day)

    # Started again, the same backfill finds nothing missing and starts nothing.
    with served.server.client() as client:
        again = client.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": form}
        ).json()
    assert wait_for_final_state(served.server, again["id"])["state"]["type"] == "COMPLETED"
    assert backfill_children(served, days).keys() == children.keys()


@pytest.mark.timeout(900)  # a server of its own: its first start migrates a fresh database
def test_serve_stops_on_sigterm_after_the_server_went_away(
    pg_admin_url: str, tmp_path: Path
) -> None:
    """The Prefect server is gone: SIGTERM still ends ``make serve`` (its pausing of the
    schedules would retry the dead API for about a minute), by the bounded stop: exit 143."""
    # A fresh database: the server migrates it first (minutes on a busy machine).
    starting = running_prefect_server(pg_admin_url, start_timeout=3 * SERVER_START_SECONDS)
    with starting as (server, process):
        api = server.api_url
        log = tmp_path / "serve.log"
        env = run_env(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "home"))
        with log.open("wb") as out:
            serving = subprocess.Popen(
                [sys.executable, "-m", "deployments.serve"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
            )  # fmt: skip
        try:

            def ready() -> bool:  # the runner polls for runs: its SIGTERM handler is set
                assert serving.poll() is None, log.read_text(errors="replace")[-3000:]
                found = httpx.get(f"{api}/deployments/name/Daily Sales ETL/hourly", timeout=5)
                return found.status_code == 200 and found.json()["status"] == "READY"

            wait_for(ready, SERVER_START_SECONDS, "the served deployment to be READY", interval=0.5)
            os.killpg(process.pid, signal.SIGKILL)  # the server and its uvicorn child
            process.wait()
            serving.send_signal(signal.SIGTERM)
            code = serving.wait(timeout=STOP_SECONDS + 60)  # a hang fails here
        finally:
            serving.kill()
    text = log.read_text(errors="replace")
    assert code == 143, text[-3000:]
    assert "SIGTERM received" in text
