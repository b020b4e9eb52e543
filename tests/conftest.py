"""Shared fixtures: real PostgreSQL, a real S3 endpoint (moto server), the demo API, Prefect."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from devharness.demo_api import DemoData, DemoSalesApi, Faults, serve_demo_api
from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig
from tests import postgres

# Recognisable secrets: tests assert they never leak.
API_KEY = "sk-live-SECRET-api-key-7f3a9c"
DB_PASSWORD = "pw-SECRET-db-9d2e1b"
ENV_VARS = (
    "SALES_API_URL",
    "SALES_API_KEY",
    "DATA_LAKE_URL",
    "WAREHOUSE_URL",
    "WAREHOUSE_SCHEMA",
    "AWS_ENDPOINT_URL",
    "LAKE_KEEP_SNAPSHOTS",
)


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


@contextmanager
def password_database(admin_url: str) -> Iterator[str]:
    """A fresh database and a role with a (recognisable) password; dropped on exit."""
    role = f"etl_{secrets.token_hex(4)}"
    name = f"etl_pw_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}'"))
    engine.dispose()
    postgres.create_database(admin_url, name)
    engine = sa.create_engine(
        sa.make_url(admin_url).set(database=name), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(sa.text(f"GRANT ALL ON SCHEMA public TO {role}"))
    engine.dispose()
    url = sa.make_url(admin_url).set(database=name, username=role, password=DB_PASSWORD)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        postgres.drop_database(admin_url, name)
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        engine.dispose()


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


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test API for the session (isolated PREFECT_HOME, see pytest_configure)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_env(**overrides: str) -> dict[str, str]:
    """Environment for running the pipeline in a subprocess, with pipeline settings replaced."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    env.update(overrides)
    return env
