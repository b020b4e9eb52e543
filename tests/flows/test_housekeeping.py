"""Lake housekeeping through the flows: refreshes and hourly increments keep the lake small, and
the lake alone still rebuilds the warehouse exactly; the CLI's dry run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable

import pytest

from devharness.demo_api import DemoData, DemoSalesApi, serve_demo_api
from devharness.demo_days import REALISTIC
from flows.daily_sales import daily_sales
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import list_snapshots
from tasks.extract import extract_sales
from tests.utils import DAY, REPO, closed_port_url, contents, query, run_env

MIX = dataclasses.replace(REALISTIC, rows=600).with_change_rate(0.05)


pytestmark = pytest.mark.usefixtures("prefect_harness", "no_retry_delay")


@pytest.fixture
def warehouses(new_database: Callable[[], str]) -> tuple[str, str]:
    """The warehouse the runs load, and an empty one the lake alone must rebuild."""
    return new_database(), new_database()


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, local_lake: LakeConfig) -> LakeConfig:
    monkeypatch.setenv("DATA_LAKE_URL", local_lake.url)
    monkeypatch.setenv("LAKE_KEEP_SNAPSHOTS", "2")
    return local_lake


def raw_ids(lake: LakeConfig, zone: str = "raw") -> list[str]:
    store = open_lake(lake)
    return [ref.snapshot_id for ref in list_snapshots(store, zone, DAY)]


def rebuild_from_the_lake(monkeypatch: pytest.MonkeyPatch, warehouse: str) -> None:
    """Run the day against ``warehouse`` with the source gone: the replay path."""
    monkeypatch.setenv("WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("SALES_API_URL", closed_port_url())
    monkeypatch.setenv("SALES_API_MAX_RETRIES", "0")
    monkeypatch.setattr(extract_sales, "retries", 0)
    state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed() and state.name == "Completed from snapshot", state.message


@pytest.mark.long
def test_four_refreshes_keep_two_snapshots_and_the_lake_rebuilds_the_warehouse(
    monkeypatch: pytest.MonkeyPatch,
    configured: LakeConfig,
    warehouses: tuple[str, str],
    demo_api: DemoSalesApi,
) -> None:
    loaded, rebuilt = warehouses
    monkeypatch.setenv("WAREHOUSE_URL", loaded)
    monkeypatch.setenv("SALES_API_URL", demo_api.url)
    snapshots = []
    for _ in range(4):
        state = daily_sales(run_date=DAY, refresh=True, return_state=True)
        assert state.is_completed(), state.message
        snapshots.append(state.result()["snapshot_id"])
    assert len(set(snapshots)) == 4
    assert raw_ids(configured) == raw_ids(configured, "clean") == snapshots[:1:-1]
    rebuild_from_the_lake(monkeypatch, rebuilt)
    assert contents(rebuilt) == contents(loaded)
    assert raw_ids(configured) == snapshots[:1:-1]

    # The CLI's dry run with --keep 1: the older of the two would go, nothing does.
    store = open_lake(configured)
    before = store.sizes("")
    older = [k for k in before if f"snapshot={snapshots[2]}/" in k]
    env = run_env(DATA_LAKE_URL=configured.url, WAREHOUSE_URL=loaded, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "flows.housekeeping", "--dry-run", "--keep", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        f"{DAY}  would remove clean/sales/date={DAY}/snapshot={snapshots[2]}/",
        f"{DAY}  would remove raw/sales/date={DAY}/snapshot={snapshots[2]}/",
        f"1 days: would remove 2 snapshot folders, {sum(before[k] for k in older)} bytes",
    ]
    assert store.sizes("") == before


def test_hourly_increments_are_compacted_and_the_lake_rebuilds_the_warehouse(
    monkeypatch: pytest.MonkeyPatch, configured: LakeConfig, warehouses: tuple[str, str]
) -> None:
    loaded, rebuilt = warehouses
    monkeypatch.setenv("WAREHOUSE_URL", loaded)
    monkeypatch.setenv("SALES_API_PAGE_SIZE", "200")
    snapshots = []
    with serve_demo_api(DemoData(mix=MIX)) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        for revision in range(4):
            api.set_data(revision=revision)
            state = daily_sales(run_date=DAY, return_state=True)
            assert state.is_completed(), state.message
            summary = state.result()
            assert summary["extract_mode"] == ("full" if revision == 0 else "incremental")
            snapshots.append(summary["snapshot_id"])
    # The third run's chain (full, 2 increments) was longer than 2: compacted into one. The
    # fourth's (that one, its increment) is not: kept as it is, and nothing else.
    compacted_id = f"{snapshots[2]}-c"
    assert raw_ids(configured) == raw_ids(configured, "clean") == [snapshots[3], compacted_id]
    store = open_lake(configured)
    (_, compacted) = list_snapshots(store, "raw", DAY)
    assert [s["snapshot_id"] for s in compacted.manifest["segments"]] == snapshots[:3]
    rebuild_from_the_lake(monkeypatch, rebuilt)
    assert contents(rebuilt) == contents(loaded)
    # The replay loaded each segment under its own id and mode, as the hourly runs had.
    ledger = "SELECT snapshot_id, mode FROM sales_load_ledger ORDER BY load_id"
    assert query(rebuilt, ledger) == query(loaded, ledger)
