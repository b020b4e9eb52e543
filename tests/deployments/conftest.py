"""A real ``prefect server start`` and a real ``make serve`` process for the deployment tests.

One server and one serve process for the whole session, each in its own PREFECT_HOME; the served
runs load a session database on the test PostgreSQL and a temporary local lake, with the
embedded demo API (SALES_API_URL unset). Tests talk to the server over HTTP, like the UI.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from deployments.common import FLOW_NAME, PROJECT_ROOT
from tests import postgres
from tests.conftest import run_env
from tests.utils import wait_for

SERVER_START_SECONDS = 120
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class RetryingClient(httpx.Client):
    """Retries 503/429 like Prefect's own client (a busy server may answer either)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        for attempt in range(6):
            response = super().send(request, **kwargs)
            if response.status_code not in (429, 503) or attempt == 5:
                return response
            response.close()
            time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class PrefectServer:
    url: str
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def client(self) -> httpx.Client:
        return RetryingClient(base_url=self.api_url, timeout=30)


@dataclass(frozen=True)
class Served:
    server: PrefectServer
    deployment: dict[str, Any]
    warehouse_url: str
    lake: Path
    log: Path

    @property
    def deployment_id(self) -> str:
        return str(self.deployment["id"])


def _stop(process: subprocess.Popen[bytes], first: int = signal.SIGINT, grace: float = 20) -> None:
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def prefect_database_url(warehouse_url: str) -> str:
    """The same database for Prefect's server, through its async driver (asyncpg)."""
    url = sa.make_url(warehouse_url).set(drivername="postgresql+asyncpg")
    return str(url.render_as_string(hide_password=False))


@contextmanager
def running_prefect_server(
    pg_admin_url: str,
) -> Iterator[tuple[PrefectServer, subprocess.Popen[bytes]]]:
    """``prefect server start`` on a free loopback port, UI included, own PREFECT_HOME, in a
    session of its own (``os.killpg`` of its pid stops the server and its uvicorn child).

    Its database is a fresh one on the suite's PostgreSQL, as in production: on SQLite the
    server answers ``503 database is locked`` while it writes events, which the Python client
    retries but the UI shows as "Oops. Something went wrong." (seen in the browser tests when
    the machine was loaded).
    """
    home = Path(tempfile.mkdtemp(prefix="etl-prefect-server-"))
    database = f"etl_prefect_{uuid.uuid4().hex[:12]}"
    database_url = prefect_database_url(postgres.create_database(pg_admin_url, database))
    port = postgres.free_port()
    url = f"http://127.0.0.1:{port}"
    env = run_env(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"{url}/api",
        # Let the scheduler fill the upcoming runs within seconds, not a minute.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
        )  # fmt: skip
    server = PrefectServer(url=url, home=home, log=log)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}:\n{_tail(log)}")
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, SERVER_START_SECONDS, "prefect server /api/health", interval=0.5)
        yield server, process
    finally:
        _stop(process, signal.SIGTERM)
        postgres.drop_database(pg_admin_url, database)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server(pg_admin_url: str) -> Iterator[PrefectServer]:
    """One ``prefect server start`` for the session (:func:`running_prefect_server`)."""
    with running_prefect_server(pg_admin_url) as (server, _process):
        yield server


def deployment_by_name(server: PrefectServer, name: str) -> dict[str, Any] | None:
    with server.client() as client:
        response = client.get(f"/deployments/name/{quote(FLOW_NAME)}/{quote(name)}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def flow_run(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/flow_runs/{flow_run_id}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def wait_for_final_state(server: PrefectServer, flow_run_id: str, timeout: float = 180) -> dict:
    def final() -> dict[str, Any] | None:
        run = flow_run(server, flow_run_id)
        return run if run["state"]["type"] in TERMINAL_STATES else None

    result: dict[str, Any] = wait_for(final, timeout, f"flow run {flow_run_id} to finish")
    return result


@pytest.fixture(scope="session")
def served(prefect_server: PrefectServer, pg_admin_url: str) -> Iterator[Served]:
    """``python -m deployments.serve`` (what ``make serve`` runs) against the session server."""
    root = Path(tempfile.mkdtemp(prefix="etl-serve-"))
    database = f"etl_serve_{uuid.uuid4().hex[:12]}"
    warehouse_url = postgres.create_database(pg_admin_url, database)
    lake = root / "lake"
    env = run_env(
        PREFECT_API_URL=prefect_server.api_url,
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        WAREHOUSE_URL=warehouse_url,
        DATA_LAKE_URL=str(lake),
    )
    env.pop("ETL_BLOCKS", None)
    log = root / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
        )  # fmt: skip

    def registered() -> dict[str, Any] | None:
        if process.poll() is not None:
            pytest.fail(f"deployments.serve exited with {process.returncode}:\n{_tail(log)}")
        deployment = deployment_by_name(prefect_server, "hourly")
        # READY once the serve process polls for its runs.
        return deployment if deployment and deployment.get("status") == "READY" else None

    try:
        deployment = wait_for(registered, 90, "the served deployment 'hourly' to be READY")
        yield Served(prefect_server, deployment, warehouse_url, lake, log)
    finally:
        _stop(process, signal.SIGINT)
        postgres.drop_database(pg_admin_url, database)
        shutil.rmtree(root, ignore_errors=True)


def create_flow_run(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """POST /deployments/{id}/create_flow_run: what the UI's Run button sends."""
    with served.server.client() as client:
        response = client.post(f"/deployments/{served.deployment_id}/create_flow_run", json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def loaded_rows(warehouse_url: str, flow_run_id: str) -> list[tuple[Any, int]]:
    """(UTC business day, row count) of the sales rows a flow run wrote."""
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT (sale_date AT TIME ZONE 'UTC')::date AS day, count(*) FROM sales "
                    "WHERE run_id = :run_id GROUP BY 1 ORDER BY 1"
                ),
                {"run_id": flow_run_id},
            ).all()
    finally:
        engine.dispose()
    return [(row[0], int(row[1])) for row in rows]


def summary_metrics(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    """The run's ``daily-sales-summary`` table artifact as {metric: value} (+ its description)."""
    with server.client() as client:
        response = client.post(
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "type": {"any_": ["table"]}}
            },
        )
    response.raise_for_status()
    artifacts = [a for a in response.json() if a.get("key") == "daily-sales-summary"]
    assert len(artifacts) == 1, artifacts
    data = artifacts[0]["data"]
    rows = data if isinstance(data, list) else json.loads(data)
    metrics = {row["metric"]: row["value"] for row in rows}
    metrics["description"] = artifacts[0]["description"]
    return metrics


class Receiver(ThreadingHTTPServer):
    calls: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.calls.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), _Handler)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def automations_cli(server: PrefectServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = run_env(PREFECT_API_URL=server.api_url)
    return subprocess.run(
        [sys.executable, "-m", "deployments.automations", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
