"""Shared fixtures: real PostgreSQL, a real S3 endpoint (moto server), the demo API, Prefect."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from devharness.demo_api import DemoData, DemoSalesApi, Faults, serve_demo_api
from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig
from tests import postgres
from tests.utils import ENV_VARS, PrefectServer, password_database, running_prefect_server


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own pipeline settings or .env file."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with postgres.server_url() as url:
        yield url


@pytest.fixture
def pg_password_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database and a role with a (recognisable) password, for secret-leak tests."""
    with password_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"etl_test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_admin_url, name)
    yield url
    postgres.drop_database(pg_admin_url, name)


@pytest.fixture
def new_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of extra fresh databases (dropped after the test)."""
    made: list[str] = []

    def make() -> str:
        name = f"etl_extra_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return postgres.create_database(pg_admin_url, name)

    yield make
    for name in made:
        postgres.drop_database(pg_admin_url, name)


@pytest.fixture
def warehouse(pg_url: str) -> WarehouseConfig:
    return WarehouseConfig(url=SecretStr(pg_url))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port (a real HTTP endpoint, not a patched client)."""
    from moto.server import ThreadedMotoServer

    port = postgres.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> LakeConfig:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.close()
    return LakeConfig(url=f"s3://{bucket}/sales-lake", endpoint_url=s3_endpoint, region="us-east-1")


@pytest.fixture
def local_lake(tmp_path: Path) -> LakeConfig:
    return LakeConfig(url=str(tmp_path / "lake"))


@pytest.fixture
def demo_api() -> Iterator[DemoSalesApi]:
    with serve_demo_api(DemoData(rows_per_day=200), Faults()) as api:
        yield api


@pytest.fixture
def source(demo_api: DemoSalesApi) -> SourceConfig:
    return SourceConfig(
        base_url=demo_api.url,
        page_size=50,
        timeout_seconds=5,
        backoff_base_seconds=0.001,
        backoff_cap_seconds=0.01,
    )


def pytest_configure(config: pytest.Config) -> None:
    # Prefect writes nothing into the developer's ~/.prefect during tests (read before import).
    import tempfile

    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="etl-prefect-home-")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files holding a ``long`` test first (in collection order: by folder and name), then
    the others, most tests first (xdist's own order).

    The test workers take whole files in this order (``--dist loadfile`` with
    ``--no-loadscope-reorder``). A long test mostly waits on servers and processes: started first,
    it overlaps the short ones. In xdist's order the one-test file of the freshness automation
    (two and a half minutes) came last and ran alone to the end: 600 s for the suite.
    """
    tests_in: Counter[Path] = Counter(item.path for item in items)
    long_files = {item.path for item in items if item.get_closest_marker("long")}

    def order(item: pytest.Item) -> tuple[int, int]:
        return (0, 0) if item.path in long_files else (1, -tests_in[item.path])

    # A stable sort: each file's tests stay together and in their order.
    items.sort(key=order)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test API for the session (isolated PREFECT_HOME, see pytest_configure)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The harness API, so subprocess runs do not each start their own Prefect server."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness has no API URL"
    return str(url)


@pytest.fixture(scope="session")
def prefect_server(pg_admin_url: str) -> Iterator[PrefectServer]:
    """One ``prefect server start`` for the session (:func:`tests.utils.running_prefect_server`)."""
    with running_prefect_server(pg_admin_url) as (server, _process):
        yield server


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep Prefect's retries of the extract, without their minutes of waiting (production
    outages); the client's own retries stay on."""
    from tasks.extract import extract_sales

    monkeypatch.setattr(extract_sales, "retry_delay_seconds", 0)


@pytest.fixture
def emitted_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], list[Any]]]:
    """The events the flow emits, captured by Prefect's asserting client: call it with an event
    name prefix once, at the end of a test (a drain starts a new client)."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    def emitted(prefix: str) -> list[Any]:
        worker.drain()
        assert AssertingEventsClient.last is not None
        return [e for e in AssertingEventsClient.last.events if e.event.startswith(prefix)]

    yield emitted
    worker.drain()
