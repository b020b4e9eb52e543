"""The hourly schedule and the business-date rule of its runs (no server needed)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta

import pytest

from deployments import common
from flows import backfill


def test_the_schedule_is_hourly_on_the_hour_utc() -> None:
    schedule = common.hourly_schedule()
    assert schedule.interval == timedelta(hours=1)
    assert schedule.anchor_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.timezone == "UTC"
    limit = common.concurrency_limit()
    assert limit.limit == 1
    assert limit.collision_strategy.value == "ENQUEUE"


def test_default_parameters_leave_blocks_to_the_environment() -> None:
    assert common.default_parameters() == {"run_date": None, "refresh": False}


def test_blocks_need_the_flows_block_parameters() -> None:
    import inspect

    from flows.daily_sales import daily_sales

    accepted = inspect.signature(daily_sales.fn).parameters
    if all(name in accepted for name in common.BLOCK_PARAMETERS):
        assert common.default_parameters("prod") == {
            "run_date": None,
            "refresh": False,
            "warehouse_block": "prod",
            "data_lake_block": "prod",
            "sales_api_block": "prod",
        }
    else:
        with pytest.raises(SystemExit, match="has no parameter"):
            common.default_parameters("prod")


def test_runtime_env_copies_only_non_secret_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://u:pw@h/db")
    monkeypatch.setenv("SALES_API_KEY", "sk-secret")
    monkeypatch.setenv("DATA_LAKE_URL", "s3://lake/x")
    assert common.runtime_env({"EXTRA": "1"}) == {
        "PREFECT_LOGGING_LEVEL": "INFO",
        "DATA_LAKE_URL": "s3://lake/x",
        "EXTRA": "1",
    }


def test_backfill_keys() -> None:
    key = backfill.idempotency_key("Daily Sales ETL/hourly", date(2026, 3, 1), None, None)
    assert key == "backfill:Daily Sales ETL/hourly:2026-03-01:none"
    again = backfill.idempotency_key("d/x", date(2026, 3, 1), "run-7", "r2")
    assert again == "backfill:d/x:2026-03-01:run-7:r2"


@pytest.mark.parametrize("module", ["serve", "docker", "kubernetes", "automations"])
def test_every_script_has_help(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    script = importlib.import_module(f"deployments.{module}")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m deployments." + module in capsys.readouterr().out


def test_automation_deadline_is_a_utc_time_of_day() -> None:
    from deployments.automations import parse_deadline

    assert parse_deadline("06:30") == timedelta(hours=6, minutes=30)
    assert parse_deadline("00:00:15") == timedelta(seconds=15)
    for bad in ("6", "24:00", "00:00:05"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_deadline(bad)
