from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import date

import pytest
from prefect.states import State

from devharness.demo_api import DemoData, serve_demo_api
from devharness.embedded_postgres import embedded_postgres
from flows import backfill as backfill_module
from flows.backfill import daily_sales_backfill
from flows.cli import backfill_main as main
from flows.daily_sales import daily_sales
from sales_etl import jsontext
from sales_etl.settings import LakeConfig
from sales_etl.validate import validate_records
from tests import postgres
from tests.utils import query

DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
DATA = DemoData(rows_per_day=120, malformed_every=9, update_every=15)


pytestmark = pytest.mark.usefixtures("prefect_harness")
# Sales rows per UTC business day.
SALES_PER_DAY = (
    "SELECT to_char(sale_date AT TIME ZONE 'UTC', 'YYYY-MM-DD'), count(*) "
    "FROM sales GROUP BY 1 ORDER BY 1"
)


def expected_sales(day: date) -> int:
    """Distinct sale_ids with at least one valid version: the rows the day must leave."""
    text = day.isoformat()
    records = jsontext.loads(json.dumps(DATA.page(text, 0, DATA.count(text))))
    return validate_records(records, day).clean["sale_id"].nunique()


def test_backfill_fans_out_one_idempotent_run_per_day(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, local_lake: LakeConfig
) -> None:
    # Count children in flight to check that max_parallel bounds the fan-out.
    lock, running, peak = threading.Lock(), [0], [0]
    real_daily_sales = backfill_module.daily_sales

    def counting_daily_sales(**kwargs):  # type: ignore[no-untyped-def]
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real_daily_sales(**kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(backfill_module, "daily_sales", counting_daily_sales)
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        monkeypatch.setenv("SALES_API_PAGE_SIZE", "50")
        monkeypatch.setenv("WAREHOUSE_URL", pg_url)
        monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
        first: State = daily_sales_backfill(
            start=DAYS[0], end=DAYS[-1], max_parallel=2, return_state=True
        )
        assert first.is_completed(), first.message
        # Nothing is missing any more: a missing backfill runs nothing; "all" runs every day.
        nothing: State = daily_sales_backfill(start=DAYS[0], end=DAYS[-1], return_state=True)
        assert nothing.result() == []
        rerun: State = daily_sales_backfill(
            start=DAYS[0], end=DAYS[-1], mode="all", max_parallel=3, return_state=True
        )
        assert rerun.is_completed(), rerun.message

    expected = {day.isoformat(): expected_sales(day) for day in DAYS}
    assert dict(query(pg_url, SALES_PER_DAY)) == expected
    assert 1 <= peak[0] <= 3

    rows = first.result()
    assert [row["day"] for row in rows] == list(expected)
    assert Counter(row["status"] for row in rows) == {"loaded": 4}
    for row in rows:
        assert row["records_extracted"] == DATA.count(row["day"])
        assert row["inserted"] == expected[row["day"]]
        assert row["clean"] + row["rejected"] == row["records_extracted"]

    again = rerun.result()
    assert [(r["inserted"], r["updated"]) for r in again] == [(0, 0)] * 4
    # The hourly reruns extract incrementally (records changed since the day's high-water
    # mark): what they bring is unchanged, and the warehouse still holds every sale once.
    assert all(r["unchanged"] <= expected[r["day"]] for r in again)


def test_backfill_fails_after_reporting_when_a_day_fails(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, local_lake: LakeConfig
) -> None:
    with serve_demo_api(DATA) as api:
        api.set_faults(permanent_status=403)
        monkeypatch.setenv("SALES_API_URL", api.url)
        monkeypatch.setenv("WAREHOUSE_URL", pg_url)
        monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
        state: State = daily_sales_backfill(
            start=DAYS[0], end=DAYS[1], max_parallel=2, return_state=True
        )
    assert state.is_failed()
    assert "2 of 2 days failed: 2026-11-01, 2026-11-02" in (state.message or "")


def test_missing_and_failed_modes_and_dry_run_follow_the_ledger(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    local_lake: LakeConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        assert daily_sales(run_date=DAYS[0], return_state=True).is_completed()
        api.set_faults(permanent_status=403)
        assert daily_sales(run_date=DAYS[2], return_state=True).is_failed()
        api.set_faults(permanent_status=None)
        # Dry runs list the days and touch nothing.
        assert main(["--start", "2026-11-01", "--end", "2026-11-04", "--dry-run"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "2026-11-02  would run",
            "2026-11-04  would run",
            "2 days would run",
        ]
        assert main(["--start", "2026-11-01", "--end", "2026-11-04", "--dry-run",
                     "--mode", "failed"]) == 0  # fmt: skip
        assert capsys.readouterr().out.splitlines()[-2:] == [
            "2026-11-03  would run",
            "1 days would run",
        ]
        assert dict(query(pg_url, SALES_PER_DAY)) == {"2026-11-01": expected_sales(DAYS[0])}
        # The missing backfill loads exactly the missing days; then the failed one.
        missing: State = daily_sales_backfill(start=DAYS[0], end=DAYS[-1], return_state=True)
        assert [row["day"] for row in missing.result()] == ["2026-11-02", "2026-11-04"]
        failed: State = daily_sales_backfill(
            start=DAYS[0], end=DAYS[-1], mode="failed", return_state=True
        )
        assert [row["day"] for row in failed.result()] == ["2026-11-03"]
    assert dict(query(pg_url, SALES_PER_DAY)) == {
        day.isoformat(): expected_sales(day) for day in DAYS
    }


def test_backfill_on_the_defaults_uses_the_embedded_warehouse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No WAREHOUSE_URL (nor any other setting): the CLI's dry run, a backfill of two days and
    the flow as a deployment runs it all use the embedded PostgreSQL in ./.data/postgres."""
    for name in ("WAREHOUSE_URL", "DATA_LAKE_URL", "SALES_API_URL"):
        monkeypatch.delenv(name, raising=False)
    with postgres.reachable_tmp_dir("etl-backfill-") as workdir:
        monkeypatch.chdir(workdir)
        days = ["--start", "2026-11-20", "--end", "2026-11-22"]
        assert main([*days, "--dry-run"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "2026-11-20  would run",
            "2026-11-21  would run",
            "2026-11-22  would run",
            "3 days would run",
        ]
        assert main(["--start", "2026-11-21", "--end", "2026-11-22", "--max-parallel", "2"]) == 0
        lines = capsys.readouterr().out.splitlines()  # the days' summaries (printed), then
        assert [line.split()[:2] for line in lines if line.startswith("2026-11-2")] == [
            ["2026-11-21", "loaded"],
            ["2026-11-22", "loaded"],
        ]
        assert lines[-1] == "2 days completed"
        # As the served deployment runs it (the flow, in its working folder): one day left.
        state: State = daily_sales_backfill(
            start=date(2026, 11, 20), end=date(2026, 11, 22), dry_run=True, return_state=True
        )
        assert [row["day"] for row in state.result()] == ["2026-11-20"]
        with embedded_postgres(workdir / ".data" / "postgres") as server:
            assert dict(query(server.url, SALES_PER_DAY)) == {
                "2026-11-21": 4950,
                "2026-11-22": 4950,
            }
