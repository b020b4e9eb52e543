"""Killed with SIGKILL mid-load (at several points of the warehouse transaction) and mid lake
write: a rerun ends exactly as one clean run; nothing partial or torn is ever read back.

The flow runs as the real CLI in a subprocess. To stop it at a known point without any hook in
the product, the test holds a PostgreSQL lock the load needs next and waits until
``pg_stat_activity`` shows the pipeline's backend blocked on exactly that statement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devharness.demo_api import DemoData, Faults, generate_record, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.lake import LocalLake
from sales_etl.snapshots import list_snapshots, read_parquet
from tests.utils import (
    DAY,
    DAY_LOCK,
    REFERENCE_DATA,
    WarehouseContents,
    admin_engine,
    blocked_etl_backends,
    contents,
    create_tables,
    database_name,
    etl_backends,
    holding,
    manifests,
    pipeline_env,
    row_counts,
    set_env,
    start_flow,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

# point -> (what the test holds, the statement the load is then blocked in)
KILL_POINTS = {
    "waiting_for_the_day_lock": (DAY_LOCK, f"%daily_sales_etl:public.sales:{DAY}%"),
    # The day's versions are staged and its winners picked in the transaction; the COPY of the
    # new sales (the first statement that writes sales) waits for the table.
    "staged_copying_sales": (
        "LOCK TABLE sales IN EXCLUSIVE MODE",
        "COPY public.sales (%",
    ),
    "sales_upserted_replacing_rejects": (
        "LOCK TABLE sales_rejected IN EXCLUSIVE MODE",
        "%DELETE FROM public.sales_rejected%",
    ),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_mid_load_then_rerun_equals_one_clean_run(
    point: str,
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    pg_admin_url: str,
    tmp_path: Path,
    prefect_api_url: str,
    reference: WarehouseContents,
) -> None:
    lock, blocked_in = KILL_POINTS[point]
    lake = tmp_path / "lake"
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    db = database_name(pg_url)
    with serve_demo_api(REFERENCE_DATA) as api:
        env = pipeline_env(api.url, str(lake), pg_url)
        with holding(pg_url, lock):
            proc = start_flow(tmp_path, "killed", env, prefect_api_url)
            try:
                wait_for(
                    lambda: blocked_etl_backends(admin, db, blocked_in),
                    timeout=120,
                    what=f"the load to block at {point}",
                    process=proc,
                )
            finally:
                proc.kill()
        assert proc.proc.returncode == -9
        # The orphaned backend finishes its statement, finds its client gone and rolls back.
        wait_for(lambda: not etl_backends(admin, db), timeout=60, what="the backend to go")
        admin.dispose()
        assert row_counts(pg_url) == (0, 0), "a killed load left part of the day behind"
        assert len(manifests(lake)) == 1  # the extract had committed its raw snapshot

        fetched = len(api.sales_requests)
        set_env(monkeypatch, env)
        state = daily_sales(run_date=DAY, return_state=True)
        assert state.is_completed(), state.message
        assert len(api.sales_requests) == fetched, "the rerun fetched the day from the API again"

    got = contents(pg_url)
    assert got == reference


BLOB = 9 * 1024 * 1024  # one record of ~9 MB per page: four pages fill a 32 MB raw part


def test_sigkill_mid_lake_write_never_reads_a_torn_snapshot(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, prefect_api_url: str
) -> None:
    blob = "x" * BLOB
    records = [{**generate_record(DAY.isoformat(), i), "blob": blob} for i in range(6)]
    data = DemoData(records={DAY.isoformat(): records})
    lake = tmp_path / "lake"
    snapshots = lake / "raw" / "sales" / f"date={DAY}"
    # Page 5 hangs: by then four pages (36 MB) have been written as part-00000 of the snapshot.
    with serve_demo_api(data, Faults(slow_every=5, slow_seconds=120)) as api:
        env = pipeline_env(
            api.url, str(lake), pg_url, SALES_API_PAGE_SIZE="1", SALES_API_TIMEOUT_SECONDS="200"
        )
        proc = start_flow(tmp_path, "killed-lake", env, prefect_api_url)
        try:
            wait_for(
                lambda: (
                    list(snapshots.glob("snapshot=*/part-00000.parquet"))
                    and len(api.sales_requests) >= 5
                ),
                timeout=120,
                what="the first raw part to be written",
                process=proc,
            )
        finally:
            proc.kill()
    [killed] = list(snapshots.glob("snapshot=*"))
    assert not (killed / "_manifest.json").exists()
    assert [p.name for p in killed.iterdir()] == ["part-00000.parquet"]

    # What a kill inside a non-atomic write would leave: a torn part in a newer snapshot.
    store = LocalLake(lake)
    whole = (killed / "part-00000.parquet").read_bytes()
    torn = snapshots / "snapshot=99991231T235959999999Z-deadbeef"
    torn.mkdir()
    (torn / "part-00000.parquet").write_bytes(whole[: len(whole) // 2])
    assert list_snapshots(store, "raw", DAY) == []  # never picked without a manifest
    with pytest.raises(Exception, match="not a readable Parquet"):
        read_parquet(store, f"raw/sales/date={DAY}/{torn.name}/part-00000.parquet")

    with serve_demo_api(data) as api:
        # Every ~9 MB record is a record_too_large reject (limit 64 KiB): a 100% reject rate.
        rerun_env = {"SALES_API_URL": api.url, "SALES_API_TIMEOUT_SECONDS": "30"}
        set_env(monkeypatch, {**env, **rerun_env, "QUALITY_FAIL_REJECT_RATE": "1.0"})
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    summary = state.result()
    [committed] = list_snapshots(store, "raw", DAY)
    assert summary["snapshot_id"] == committed.snapshot_id not in (killed.name, torn.name)
    assert summary["records_extracted"] == 6 and summary["clean"] == 0
    assert summary["rejected_by_reason"] == {"record_too_large": 6}
    assert row_counts(pg_url) == (0, 6)
