"""Source down: with a raw snapshot in the lake the run completes from it and says so; without
one it fails clearly and writes nothing."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

import flows.daily_sales as flow_module
from devharness.demo_api import Faults, serve_demo_api
from flows.daily_sales import daily_sales
from tasks.extract import extract_sales
from tests.utils import (
    DAY,
    REFERENCE_DATA,
    WarehouseContents,
    assert_only_the_failure_recorded,
    closed_port_url,
    contents,
    ledger_rows,
    manifests,
    pipeline_env,
    set_env,
)

pytestmark = pytest.mark.usefixtures("prefect_harness", "no_retry_delay")

FAST_FAIL = {"SALES_API_MAX_RETRIES": "1", "SALES_API_TIMEOUT_SECONDS": "2"}


def test_api_down_with_raw_snapshot_completes_from_snapshot(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, reference: WarehouseContents
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA) as api:
        url = api.url
        set_env(monkeypatch, pipeline_env(url, str(lake), pg_url, **FAST_FAIL))
        first = daily_sales(run_date=DAY, return_state=True)
    assert first.is_completed(), first.message
    [snapshot] = manifests(lake)

    # The API is gone entirely (its port now refuses connections).
    replayed: list[tuple[object, ...]] = []
    monkeypatch.setattr(flow_module, "emit_day_replayed", lambda *args: replayed.append(args))
    second = daily_sales(run_date=DAY, refresh=True, return_state=True)

    assert second.is_completed() and second.name == "Completed from snapshot", second
    summary = second.result()
    assert summary["status"] == "loaded_from_snapshot" and summary["fallback_used"]
    assert summary["snapshot_id"] in str(snapshot)
    assert url in summary["fallback_reason"]
    # Loud: the state's name, the summary and the sales.day.replayed event.
    [(day, snapshot_id, reason)] = replayed
    assert (day, snapshot_id) == (DAY, summary["snapshot_id"]) and url in str(reason)
    assert manifests(lake) == [snapshot]
    got = contents(pg_url)
    assert (got.sales, got.rejected) == (reference.sales, reference.rejected)


def test_sales_endpoint_failing_with_raw_snapshot_completes_from_snapshot(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path, reference: WarehouseContents
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(lake), pg_url, **FAST_FAIL))
        assert daily_sales(run_date=DAY, return_state=True).is_completed()
        api.set_faults(error_5xx_every=1)  # /sales answers 503 on every request
        state = daily_sales(run_date=DAY, refresh=True, return_state=True)

    assert state.name == "Completed from snapshot", state.message
    assert "503" in state.result()["fallback_reason"]
    assert len(manifests(lake)) == 1
    got = contents(pg_url)
    assert (got.sales, got.rejected) == (reference.sales, reference.rejected)


def test_api_down_without_snapshot_fails_clearly_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    url = closed_port_url()
    set_env(monkeypatch, pipeline_env(url, str(lake), pg_url, **FAST_FAIL))

    state = daily_sales(run_date=DAY, return_state=True)

    assert state.is_failed()
    assert f"{url}/sales" in state.message and "ConnectionError" in state.message, state.message
    assert not lake.exists() or not [p for p in lake.rglob("*") if p.is_file()]
    assert_only_the_failure_recorded(pg_url)


def test_sales_endpoint_failing_without_snapshot_fails_clearly_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA, Faults(error_5xx_every=1)) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(lake), pg_url, **FAST_FAIL))
        state = daily_sales(run_date=DAY, return_state=True)
        requests = len(api.sales_requests)

    assert state.is_failed()
    assert f"{api.url}/sales" in state.message and "503" in state.message, state.message
    assert requests == 3 * 2  # 3 task attempts (Prefect retries) x 2 client attempts
    assert not lake.exists() or not [p for p in lake.rglob("*") if p.is_file()]
    assert_only_the_failure_recorded(pg_url)


def test_a_partly_successful_extract_never_falls_back_to_an_older_snapshot(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(lake), pg_url, **FAST_FAIL))
        assert daily_sales(run_date=DAY, return_state=True).is_completed()
        [older] = manifests(lake)
        # One extract attempt: its first pages arrive, then every request answers 503.
        monkeypatch.setattr(flow_module, "extract_sales", extract_sales.with_options(retries=0))
        served = len(api.sales_requests)
        done = threading.Event()

        def break_after_two_pages() -> None:
            while not done.is_set():
                if len(api.sales_requests) >= served + 2:
                    api.set_faults(error_5xx_every=1)
                    return
                time.sleep(0.002)

        breaker = threading.Thread(target=break_after_two_pages, daemon=True)
        breaker.start()
        try:
            state = daily_sales(run_date=DAY, refresh=True, return_state=True)
        finally:
            done.set()
            breaker.join()

    assert state.is_failed(), state
    assert re.search(
        r"503 .* \(after \d+ pages, \d+ records of 2026-11-23 had arrived\)", str(state.message)
    ), state.message
    assert manifests(lake) == [older]  # nothing new committed, and the older one not replayed
    assert [status for status, _ in ledger_rows(pg_url)] == ["loaded", "failed"]
