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

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.utils import API_KEY, IMAGE, docker_client, unavailable


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


@pytest.fixture
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="etl-infra-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
