"""Secrets: with a recognisable API key and database password configured, no log line, artifact,
exception, repr or saved file holds them, on the success path and on every failure path."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import flows.daily_sales as flow_module
from devharness.demo_api import Faults, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.settings import load_settings
from sales_etl.source import SalesApiClient
from tasks.extract import extract_sales
from tasks.load import load_sales
from tests import postgres
from tests.utils import (
    API_KEY,
    DAY,
    DB_PASSWORD,
    REFERENCE_DATA,
    closed_port_url,
    pipeline_env,
    set_env,
    start_flow,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

SECRETS = (API_KEY, DB_PASSWORD)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"


def scan_files(root: Path, where: str) -> int:
    scanned = 0
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"a secret leaked into {where}: {path}"
            scanned += 1
    return scanned


def test_no_secret_on_the_success_path_of_the_cli(
    pg_password_url: str, tmp_path: Path, prefect_api_url: str
) -> None:
    lake = tmp_path / "lake"
    with serve_demo_api(REFERENCE_DATA, api_key=API_KEY) as api:
        env = pipeline_env(api.url, str(lake), pg_password_url, SALES_API_KEY=API_KEY)
        proc = start_flow(tmp_path, "secret-ok", env, prefect_api_url)
        assert proc.wait(timeout=180) == 0, proc.stderr[-3000:]
        assert api.requests > 0
    assert "LOADED" in proc.stdout
    assert_clean(proc.stdout, "stdout")
    assert_clean(proc.stderr, "stderr (logs)")
    assert scan_files(lake, "the lake") > 0


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        flow_module, "extract_sales", extract_sales.with_options(retry_delay_seconds=0)
    )
    monkeypatch.setattr(flow_module, "load_sales", load_sales.with_options(retry_delay_seconds=0))


FAILURES = {
    "permanent_4xx": {"faults": Faults(permanent_status=403), "says": "403 Forbidden"},
    "wrong_api_key": {"server_key": "another-key", "says": "401 Unauthorized"},
    "source_down_without_snapshot": {"api_down": True, "says": "ConnectionError"},
    "warehouse_refusing_connections": {"warehouse_down": True, "says": "Connection refused"},
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_no_secret_on_failure_paths(
    failure: str,
    fast_retries: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pg_password_url: str,
    tmp_path: Path,
) -> None:
    spec: dict[str, Any] = FAILURES[failure]
    caplog.set_level(logging.DEBUG)
    lake = tmp_path / "lake"
    warehouse = pg_password_url
    if spec.get("warehouse_down"):
        port = postgres.refused_port()
        warehouse = sa.make_url(pg_password_url).set(port=port).render_as_string(False)
        assert DB_PASSWORD in warehouse
    server_key = spec.get("server_key", API_KEY)
    with serve_demo_api(REFERENCE_DATA, spec.get("faults"), api_key=server_key) as api:
        url = closed_port_url() if spec.get("api_down") else api.url
        env = pipeline_env(url, str(lake), warehouse, SALES_API_KEY=API_KEY)
        env["SALES_API_MAX_RETRIES"] = "1"
        set_env(monkeypatch, env)
        state = daily_sales(run_date=DAY, return_state=True)

    assert state.is_failed(), state
    assert spec["says"] in (state.message or ""), state.message  # the failure meant, not another
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BaseException)
    assert_clean(state.message or "", "the state message")
    assert_clean(str(error) + repr(error) + repr(error.__cause__), "the exception")
    assert_clean(caplog.text, "the log records")
    for record in caplog.records:
        assert_clean(str(record.args) + str(record.exc_info), "log record arguments")
    # The configuration objects themselves never show their secrets.
    settings = load_settings()
    assert_clean(repr(settings) + str(settings.model_dump()), "the settings repr")
    assert_clean(repr(settings.source()) + repr(settings.warehouse()), "config reprs")
    with SalesApiClient(settings.source().model_copy(update={"base_url": url})) as client:
        assert_clean(repr(client), "the client repr")
    if lake.exists():
        scan_files(lake, "the lake")


def test_no_secret_in_artifacts_logs_or_prefect_files(prefect_harness: None) -> None:
    """Runs last in this module: everything the suite's runs stored in Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        logs = client.read_logs()
    assert artifacts, "the runs above published no artifacts"
    for artifact in artifacts:
        assert_clean(f"{artifact.data} {artifact.description} {artifact.key}", "an artifact")
    assert logs
    assert_clean("\n".join(log.message for log in logs), "the Prefect API logs")
    assert scan_files(Path(os.environ["PREFECT_HOME"]), "PREFECT_HOME") > 0
    database = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[-1]
    assert scan_files(Path(database).parent, "the Prefect database") > 0
