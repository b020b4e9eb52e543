"""Limits: a huge page or record is rejected or handled within bounds; every network call has a
timeout, so nothing can hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from devharness.demo_api import DemoData, generate_record, serve_demo_api
from flows.daily_sales import daily_sales
from sales_etl.errors import PermanentSourceError, TransientSourceError
from sales_etl.lake import S3Lake
from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig
from sales_etl.source import SalesApiClient
from sales_etl.validate import RAW_HEAD_CHARS
from sales_etl.warehouse import create_warehouse_engine
from tests.utils import DAY, DAY_TEXT, pipeline_env, query, row_counts, set_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

MB = 1024 * 1024


def test_a_page_over_the_byte_limit_is_refused_before_it_is_read() -> None:
    big = {**generate_record(DAY_TEXT, 0), "blob": "x" * (20 * MB)}
    with serve_demo_api(DemoData(records={DAY_TEXT: [big]})) as api:
        config = SourceConfig(base_url=api.url, max_page_bytes=4 * MB, max_retries=3)
        with SalesApiClient(config) as client, pytest.raises(PermanentSourceError) as caught:
            list(client.iter_pages(DAY))
        assert len(api.sales_requests) == 1  # refused at once, never retried
    message = str(caught.value)
    assert f"{api.url}/sales" in message and "exceeds the limit of 4,194,304" in message
    assert "page of 2" in message  # refused on the declared Content-Length, unread


def test_one_huge_record_is_rejected_and_the_rest_of_the_day_loads(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, tmp_path: Path
) -> None:
    records = [generate_record(DAY_TEXT, i) for i in range(20)]
    records[7] = {**records[7], "customer_id": "c" * (30 * MB)}
    with serve_demo_api(DemoData(records={DAY_TEXT: records})) as api:
        set_env(monkeypatch, pipeline_env(api.url, str(tmp_path / "lake"), pg_url))
        state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["rejected_by_reason"] == {"record_too_large": 1}
    assert row_counts(pg_url) == (19, 1)
    [(stored,)] = query(pg_url, "SELECT length(raw_record) FROM sales_rejected")
    assert stored is not None and stored < 2 * RAW_HEAD_CHARS  # its head, length and sha256


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


def test_a_silent_sales_api_times_out(blackhole: int) -> None:
    config = SourceConfig(
        base_url=f"http://127.0.0.1:{blackhole}",
        timeout_seconds=0.5,
        max_retries=1,
        backoff_base_seconds=0.01,
    )
    started = time.monotonic()
    with SalesApiClient(config) as client, pytest.raises(TransientSourceError, match="Timeout"):
        client.status(DAY)
    assert time.monotonic() - started < 5


def test_a_silent_warehouse_times_out(blackhole: int) -> None:
    config = WarehouseConfig(url=SecretStr(f"postgresql://etl@127.0.0.1:{blackhole}/warehouse"))
    engine = create_warehouse_engine(config)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="timeout"):
        engine.connect()
    engine.dispose()
    assert time.monotonic() - started < 20  # connect_timeout=10


def test_the_s3_lake_client_has_finite_timeouts() -> None:
    lake = S3Lake(LakeConfig(url="s3://bucket/prefix", endpoint_url="http://127.0.0.1:9"))
    config = lake._client.meta.config
    assert 0 < config.connect_timeout <= 60 and 0 < config.read_timeout <= 60
    lake.close()
