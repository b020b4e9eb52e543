"""Real Docker and Kubernetes for the deployment tests: what is reachable, and shared helpers.

These tests need a Docker engine (``DOCKER_HOST`` or the default socket) with the project image
(``DAILY_SALES_IMAGE``, default ``daily-sales-etl:0.1.0``) and, for the Kubernetes group, a
cluster (``KUBECONFIG``) whose node runs that image. Where those are missing the tests skip with
a one-line reason; in CI (``CI=true``, after ``.ci/run`` provisioned them) a skip is a failure.

Flow runs reach PostgreSQL (127.0.0.1:5432) and the test's Prefect server on the host's
loopback: Docker runs use ``network_mode: host`` and pods ``hostNetwork`` (no bridge, no pod
network on the CI machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from deployments.common import PROJECT_ROOT
from tests.conftest import API_KEY, run_env
from tests.deployments.conftest import (  # noqa: F401 - fixtures shared with tests/deployments
    PrefectServer,
    _stop,
    _tail,
    deployment_by_name,
    prefect_server,
    wait_for,
)

IMAGE = os.environ.get("DAILY_SALES_IMAGE", "daily-sales-etl:0.1.0")
IN_CI = os.environ.get("CI", "").lower() == "true"
# A demo day: 200 sales, the flow's embedded demo API (SALES_API_URL unset in the runs).
DAY = "2026-11-20"


def unavailable(reason: str) -> NoReturn:
    """Skip with a one-line reason; in CI, where .ci/run provisioned everything, fail."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=60)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A reachable Docker engine holding the project image, or a skip."""
    try:
        client = docker_client()
        client.ping()
    except Exception as exc:
        unavailable(f"no Docker engine reachable ({type(exc).__name__}); set DOCKER_HOST")
    try:
        client.images.get(IMAGE)
    except Exception:
        unavailable(f"image {IMAGE} not found: docker build -t {IMAGE} . (or DAILY_SALES_IMAGE)")
    yield client
    client.close()


def kubectl(*args: str, kubeconfig: str | None = None, check: bool = True, **kwargs: Any) -> str:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    done = subprocess.run(
        ["kubectl", *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="session")
def cluster() -> str:
    """The admin KUBECONFIG of a reachable cluster, or a skip."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        unavailable("no cluster: KUBECONFIG is not set")
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not installed")
    done = subprocess.run(
        ["kubectl", "get", "--raw", "/readyz"], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        unavailable(f"cluster in KUBECONFIG not reachable: {done.stderr.strip()[:120]}")
    return kubeconfig


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    log: Path


def start_worker(
    server: PrefectServer, pool: str, worker_type: str, home: Path, **env: str
) -> Worker:
    """``prefect worker start --pool POOL`` (the real CLI) polling every 2 seconds."""
    log = home / f"worker-{pool}.log"
    environment = run_env(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(home / "worker-home"),
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        **env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
             "--type", worker_type, "--name", f"test-{worker_type}-{uuid.uuid4().hex[:6]}"],
            env=environment, stdout=out, stderr=subprocess.STDOUT, cwd=home,
        )  # fmt: skip
    worker = Worker(process, log)

    def pool_exists() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the {worker_type} worker exited:\n{_tail(log)}")
        with server.client() as client:
            return client.get(f"/work_pools/{pool}").status_code == 200

    wait_for(pool_exists, 120, f"work pool {pool!r}", interval=0.5)
    return worker


def stop_worker(worker: Worker) -> None:
    _stop(worker.process, signal.SIGINT, grace=30)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="etl-infra-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def deploy(server: PrefectServer, script: str, *args: str) -> dict[str, Any]:
    """``python -m deployments.<script> ARGS`` against ``server``; returns the deployment."""
    env = run_env(PREFECT_API_URL=server.api_url)
    env.pop("ETL_BLOCKS", None)
    done = subprocess.run(
        [sys.executable, "-m", f"deployments.{script}", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    name = next(line for line in done.stdout.splitlines() if line.startswith("deployment "))
    deployment_name = name.split("/", 1)[1].split("'", 1)[0]
    deployment = deployment_by_name(server, deployment_name)
    assert deployment is not None
    pause_schedules(server, deployment)
    return deployment


def pause_schedules(server: PrefectServer, deployment: dict[str, Any]) -> None:
    """Only the runs a test creates may reach the worker: no hourly run on the full hour."""
    with server.client() as client:
        for schedule in deployment["schedules"]:
            client.patch(
                f"/deployments/{deployment['id']}/schedules/{schedule['id']}",
                json={"active": False},
            ).raise_for_status()
        response = client.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            },
        )
        response.raise_for_status()
        for run in response.json():
            if "auto-scheduled" in run["tags"]:
                client.delete(f"/flow_runs/{run['id']}").raise_for_status()


def create_flow_run(server: PrefectServer, deployment_id: str, **parameters: Any) -> dict:
    """POST /deployments/{id}/create_flow_run: what the UI's Run button sends."""
    with server.client() as client:
        response = client.post(
            f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters}
        )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def cancel_flow_run(server: PrefectServer, flow_run_id: str) -> None:
    """What the UI's Cancel does: propose CANCELLING; the worker stops the infrastructure."""
    with server.client() as client:
        response = client.post(
            f"/flow_runs/{flow_run_id}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
        )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def flow_run_state(server: PrefectServer, flow_run_id: str) -> str:
    with server.client() as client:
        response = client.get(f"/flow_runs/{flow_run_id}")
    response.raise_for_status()
    state: str = response.json()["state"]["type"]
    return state


def dump(value: Any) -> str:
    return json.dumps(value, default=str)


__all__ = ["_tail"]


def table_contents(warehouse_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``sales`` and ``sales_rejected`` without the per-run columns, sorted.

    Two loads of one day compare equal exactly when they left the same business data.
    """
    import sqlalchemy as sa

    per_run = {"run_id", "loaded_at", "rejected_at"}
    engine = sa.create_engine(warehouse_url)
    contents: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with engine.connect() as conn:
            for table in ("sales", "sales_rejected"):
                columns = [
                    column["name"]
                    for column in sa.inspect(conn).get_columns(table)
                    if column["name"] not in per_run
                ]
                selected = sa.select(*(sa.column(name) for name in columns)).select_from(
                    sa.table(table)
                )
                contents[table] = sorted((tuple(row) for row in conn.execute(selected)), key=repr)
    finally:
        engine.dispose()
    return contents


def kubernetes_api_port(kubeconfig: str) -> tuple[str, str]:
    """Host and port of the API server of the current context in ``kubeconfig``."""
    from urllib.parse import urlsplit

    server = kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    parts = urlsplit(server)
    return parts.hostname or "127.0.0.1", str(parts.port or 443)


SLOW_SECONDS = 60.0


@pytest.fixture(scope="module")
def slow_source() -> Iterator[Any]:
    """The demo API on the host's loopback serving the same day as the flow's embedded one.

    Cancellation tests switch on a one-minute delay per request, so the run is surely in the
    middle of its extract when it is cancelled, and switch it off for the rerun. It checks the
    API key, which the runs only get from their env file or Secret.
    """
    from devharness.demo_api import serve_demo_api
    from flows.config import DEMO_DATA

    with serve_demo_api(DEMO_DATA, api_key=API_KEY) as api:
        yield api
