from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
import pytest

from devharness.demo_api import (
    UPDATED_SINCE_MODES,
    DemoData,
    DemoSalesApi,
    Faults,
    UpdatedSinceMode,
    generate_record,
    serve_demo_api,
)
from devharness.demo_days import DayMix, day_records, revision_time
from sales_etl import jsontext
from sales_etl.errors import PermanentSourceError, TransientSourceError
from sales_etl.settings import SourceConfig
from sales_etl.source import SalesApiClient, SourceStatus, _retry_after
from tests.utils import API_KEY, DAY


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


# --- updated_since: incremental extraction against servers with and without the capability ---

MIX = DayMix(rows=300, reject_rate=0.1, duplicate_rate=0.05).with_change_rate(0.1)
SINCE = revision_time(DAY, 1)


def served(revision: int, since: datetime | None = None) -> list[Any]:
    return jsontext.loads(orjson.dumps(day_records(MIX, DAY.isoformat(), revision, since)))


@contextmanager
def server(mode: UpdatedSinceMode, **faults: Any) -> Iterator[tuple[DemoSalesApi, SourceConfig]]:
    data = DemoData(mix=MIX, revision=1)
    with serve_demo_api(data, Faults(**faults), api_key=API_KEY, updated_since=mode) as api:
        yield api, SourceConfig(base_url=api.url, api_key=API_KEY, page_size=10, max_retries=2)


def test_status_says_whether_updated_since_is_supported() -> None:
    expected_delta = len(served(1, SINCE))
    answers: dict[str, tuple[SourceStatus, SourceStatus]] = {}
    for mode in UPDATED_SINCE_MODES:
        with server(mode) as (api, config), SalesApiClient(config) as client:  # type: ignore[arg-type]
            answers[mode] = (client.status(DAY), client.status(DAY, updated_since=SINCE))
            assert api.status_requests == (3 if mode == "reject" else 2)
    full = len(served(1))
    assert answers["filter"][0].supports_updated_since is True
    assert answers["filter"][0].record_count == full
    assert answers["filter"][1].record_count == expected_delta < full
    assert answers["filter"][1].updated_since == SINCE
    for mode in ("ignore", "ignore_unreported", "reject"):
        for status in answers[mode]:
            assert status.supports_updated_since is False and status.record_count == full
            assert status.updated_since is None


def test_iter_pages_sends_updated_since_and_pages_the_delta_exactly() -> None:
    with server("filter") as (api, config), SalesApiClient(config) as client:
        pages = list(client.iter_pages(DAY, lossless=True, updated_since=SINCE))
        assert client.mode == "incremental" and not client.updated_since_refused
        assert all("updated_since=" in path for path in api.sales_requests)
        full = list(client.iter_pages(DAY))
        assert client.mode == "full"
        assert not any("updated_since=" in path for path in api.sales_requests[len(pages) :])
    delta = served(1, SINCE)
    assert len(pages) == -(-len(delta) // 10) > 1
    assert [r for p in pages for r in p.records] == delta
    assert [r for p in full for r in p.records] == served(1)


@pytest.mark.parametrize("mode", ["ignore", "ignore_unreported"])
def test_a_server_that_ignores_updated_since_gives_the_whole_day(mode: UpdatedSinceMode) -> None:
    with server(mode) as (_, config), SalesApiClient(config) as client:
        records = [r for p in client.iter_pages(DAY, updated_since=SINCE) for r in p.records]
    assert records == served(1)  # correct either way: versions merge by updated_at


def test_400_to_updated_since_falls_back_to_the_whole_day() -> None:
    with server("reject") as (api, config), SalesApiClient(config) as client:
        pages = list(client.iter_pages(DAY, lossless=False, updated_since=SINCE))
        assert client.mode == "full" and client.updated_since_refused
        assert client.requests_made == len(pages) + 1 == api.requests  # one refused request
        assert client.retries == 0
        assert "updated_since=" in api.sales_requests[0]
        assert not any("updated_since=" in path for path in api.sales_requests[1:])
    assert sum(len(p.records) for p in pages) == len(served(1))
    assert [p.number for p in pages] == list(range(len(pages)))


def test_400_for_another_reason_still_fails_naming_status_and_endpoint() -> None:
    with (
        server("filter", permanent_status=400) as (api, config),
        SalesApiClient(config) as client,
        pytest.raises(PermanentSourceError, match=r"GET http://\S+/sales answered 400") as info,
    ):
        list(client.iter_pages(DAY, updated_since=SINCE))
    assert api.requests == 2  # the refused delta, then the whole day: no loop, no retry
    assert API_KEY not in str(info.value)


def test_a_naive_updated_since_is_refused_before_any_request() -> None:
    with server("filter") as (api, config), SalesApiClient(config) as client:
        with pytest.raises(ValueError, match="timezone-aware"):
            list(client.iter_pages(DAY, updated_since=datetime(2026, 11, 24, 1)))
        assert api.requests == 0


@pytest.mark.parametrize("lossless", [True, False])
def test_a_record_nested_100000_deep_is_a_record_not_a_broken_page(lossless: bool) -> None:
    """The page is read in one request; the deep record is kept as its text for the transform."""
    good = [generate_record(DAY.isoformat(), i) for i in range(3)]
    deep = '{"sale_id":"DEEP","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    body = (
        '{"data": ['
        + orjson.dumps(good[0]).decode()
        + ", "
        + deep
        + ", "
        + ", ".join(orjson.dumps(r).decode() for r in good[1:])
        + '], "next_cursor": null}'
    ).encode()
    with serve_demo_api(DemoData(records={DAY.isoformat(): [*good, None]})) as api:
        api.page_cache = {(DAY.isoformat(), 0, 50, None): body}
        config = SourceConfig(base_url=api.url, page_size=50, max_retries=2)
        with SalesApiClient(config) as client:
            pages = list(client.iter_pages(DAY, lossless=lossless))
            assert client.retries == 0
    assert [p.body for p in pages] == [body]
    records = pages[0].records
    assert len(records) == 4
    assert isinstance(records[1], jsontext.DeepRecord)
    assert (records[1].text, records[1].depth) == (deep, 100_001)
    assert [records[i]["sale_id"] for i in (0, 2, 3)] == [r["sale_id"] for r in good]


def test_a_page_that_is_not_json_is_still_broken() -> None:
    with pytest.raises(ValueError, match="nested too deeply outside"):
        jsontext.loads_page('{"data": [], "x": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(ValueError):
        jsontext.loads_page('{"data": [1, ' + "[" * 5000 + "]" * 4999 + "}")
