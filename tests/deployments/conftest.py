"""The session's ``make serve`` process for the deployment tests (the server it registers with:
the ``prefect_server`` fixture of tests/conftest.py).

One server and one serve process for the whole session, each in its own PREFECT_HOME; the served
runs load a session database on the test PostgreSQL and a temporary local lake, with the
embedded demo API (SALES_API_URL unset). Tests talk to the server over HTTP, like the UI.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import postgres
from tests.utils import (
    REPO,
    PrefectServer,
    Receiver,
    Served,
    deployment_by_name,
    log_tail,
    run_env,
    running_receiver,
    stop_process,
    wait_for,
)


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
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip

    def registered() -> dict[str, Any] | None:
        if process.poll() is not None:
            pytest.fail(f"deployments.serve exited with {process.returncode}:\n{log_tail(log)}")
        deployment = deployment_by_name(prefect_server, "hourly")
        # READY once the serve process polls for its runs.
        return deployment if deployment and deployment.get("status") == "READY" else None

    try:
        deployment = wait_for(
            registered, 90, "the served deployment 'hourly' to be READY", interval=0.5
        )
        yield Served(prefect_server, deployment, warehouse_url, lake, log)
    finally:
        stop_process(process, signal.SIGINT)
        postgres.drop_database(pg_admin_url, database)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback webhook receiver (:class:`tests.utils.Receiver`) for the test."""
    with running_receiver() as server:
        yield server
