from __future__ import annotations

from datetime import date

import pytest

from sales_etl.demo_api import DemoData, DemoSalesApi, Faults, generate_record, serve_demo_api
from sales_etl.errors import PermanentSourceError, TransientSourceError
from sales_etl.settings import SourceConfig
from sales_etl.source import SalesApiClient, _retry_after
from tests.conftest import API_KEY

DAY = date(2026, 11, 23)


def all_records(client: SalesApiClient) -> list[dict[str, object]]:
    return [r for page in client.iter_pages(DAY) for r in page.records]


def test_pages_through_the_whole_day(source: SourceConfig) -> None:
    with SalesApiClient(source) as client:
        status = client.status(DAY)
        pages = list(client.iter_pages(DAY))
    assert status.should_process and status.record_count == 200
    assert len(pages) == 4 and pages[-1].next_cursor is None
    ids = [r["sale_id"] for p in pages for r in p.records]
    assert ids == [generate_record(DAY.isoformat(), i)["sale_id"] for i in range(200)]
    assert all(p.body.startswith(b'{"data"') for p in pages)


def test_retries_5xx_429_resets_broken_and_slow_pages(
    demo_api: DemoSalesApi, source: SourceConfig
) -> None:
    demo_api.set_faults(
        error_5xx_every=3,
        rate_limit_every=5,
        retry_after_seconds=0,
        reset_every=7,
        broken_page_every=11,
        slow_every=13,
        slow_seconds=1.5,
    )
    waits: list[float] = []
    config = source.model_copy(update={"timeout_seconds": 0.5, "max_retries": 6})
    with SalesApiClient(config, sleep=waits.append) as client:
        records = all_records(client)
    assert [r["sale_id"] for r in records] == [
        generate_record(DAY.isoformat(), i)["sale_id"] for i in range(200)
    ]
    assert client.retries >= 3
    assert len(waits) == client.retries
    assert max(waits) <= config.backoff_cap_seconds


def test_429_waits_retry_after_capped(demo_api: DemoSalesApi, source: SourceConfig) -> None:
    demo_api.set_faults(rate_limit_every=2, retry_after_seconds=7)
    waits: list[float] = []
    config = source.model_copy(update={"backoff_cap_seconds": 3.0})
    with SalesApiClient(config, sleep=waits.append) as client:
        all_records(client)
    assert waits and set(waits) == {3.0}


def test_gives_up_after_bounded_retries(demo_api: DemoSalesApi, source: SourceConfig) -> None:
    demo_api.set_faults(error_5xx_every=1)
    config = source.model_copy(update={"max_retries": 3})
    with (
        SalesApiClient(config, sleep=lambda s: None) as client,
        pytest.raises(TransientSourceError, match=r"/sales still failing after 4 attempts: 503"),
    ):
        all_records(client)
    assert demo_api.requests == 4


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_permanent_errors_fail_at_once(
    demo_api: DemoSalesApi, source: SourceConfig, status: int
) -> None:
    demo_api.set_faults(permanent_status=status)
    with (
        SalesApiClient(source, sleep=lambda s: None) as client,
        pytest.raises(
            PermanentSourceError, match=rf"GET {source.base_url}/sales answered {status}"
        ),
    ):
        all_records(client)
    assert demo_api.requests == 1


def test_api_key_is_sent_and_never_in_errors() -> None:
    with serve_demo_api(DemoData(rows_per_day=10), Faults(), api_key=API_KEY) as api:
        good = SourceConfig(base_url=api.url, api_key=API_KEY)
        with SalesApiClient(good) as client:
            assert len(all_records(client)) == 10
        wrong = SourceConfig(base_url=api.url, api_key="not-the-key")
        with SalesApiClient(wrong) as client, pytest.raises(PermanentSourceError) as info:
            client.status(DAY)
    assert "401" in str(info.value) and "/sales/status" in str(info.value)
    assert API_KEY not in str(info.value) and "not-the-key" not in str(info.value)
    assert API_KEY not in repr(good) and API_KEY not in str(good.model_dump())


def test_oversized_page_is_refused(demo_api: DemoSalesApi, source: SourceConfig) -> None:
    config = source.model_copy(update={"max_page_bytes": 2048})
    with SalesApiClient(config) as client, pytest.raises(PermanentSourceError, match="exceeds"):
        all_records(client)


def test_a_cursor_that_never_ends_is_stopped(demo_api: DemoSalesApi, source: SourceConfig) -> None:
    with SalesApiClient(source) as client, pytest.raises(PermanentSourceError, match="pages"):
        list(client.iter_pages(DAY, max_pages=2))


def test_retry_after_parses_seconds_and_dates() -> None:
    assert _retry_after("5") == 5.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _retry_after("soon") is None


def test_fast_envelope_parse_keeps_bodies_and_accepts_what_the_lossless_parser_accepts(
    demo_api: DemoSalesApi, source: SourceConfig
) -> None:
    # NaN literals and 40-digit integers are refused by orjson; the page must still pass.
    odd = [{"sale_id": "a", "amount": float("nan")}, {"sale_id": "b", "quantity": 10**40}]
    demo_api.set_data(records={DAY.isoformat(): odd})
    with SalesApiClient(source) as client:
        lossless = list(client.iter_pages(DAY))
        fast = list(client.iter_pages(DAY, lossless=False))
    assert [p.body for p in fast] == [p.body for p in lossless]
    assert [len(p.records) for p in fast] == [len(p.records) for p in lossless] == [2]
    assert fast[0].records[1]["quantity"] == "1" + "0" * 40  # the lossless fallback


def test_broken_page_is_retried_with_the_fast_parser(
    demo_api: DemoSalesApi, source: SourceConfig
) -> None:
    demo_api.set_faults(broken_page_every=2)
    with SalesApiClient(source) as client:
        pages = list(client.iter_pages(DAY, lossless=False))
        assert client.retries == 3  # requests 2, 4 and 6 of 7
    assert sum(len(p.records) for p in pages) == 200
