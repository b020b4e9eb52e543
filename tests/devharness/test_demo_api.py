from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from devharness.demo_api import (
    MALFORMED_CYCLE,
    DemoData,
    Faults,
    decode_cursor,
    encode_cursor,
    serve_demo_api,
)
from devharness.demo_days import DayMix, day_records, revision_time
from sales_etl import jsontext
from sales_etl.validate import validate_records
from tests.utils import DAY_TEXT


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345


def test_generated_day_is_deterministic_and_valid() -> None:
    data = DemoData(rows_per_day=300)
    first = [data.generated("2026-11-23", i) for i in range(300)]
    assert first == [data.generated("2026-11-23", i) for i in range(300)]
    result = validate_records(jsontext.loads(json.dumps(first)), date(2026, 11, 23))
    assert len(result.clean) == 300, result.rejected[["reason", "detail"]]


def test_malformed_every_corrupts_every_nth_record_in_each_way() -> None:
    data = DemoData(rows_per_day=10 * len(MALFORMED_CYCLE), malformed_every=10)
    records = [data.generated("2026-11-23", i) for i in range(data.count("2026-11-23"))]
    result = validate_records(jsontext.loads(json.dumps(records)), date(2026, 11, 23))
    assert len(result.rejected) == len(MALFORMED_CYCLE)
    assert set(result.rejected["record_index"]) == {10 * k + 9 for k in range(len(MALFORMED_CYCLE))}


def test_status_health_and_skip_days() -> None:
    data = DemoData(rows_per_day=5, skip_days=frozenset({"2026-11-22"}))
    with serve_demo_api(data, Faults()) as api:
        assert requests.get(f"{api.url}/health", timeout=5).json() == {"status": "ok"}
        ok = requests.get(f"{api.url}/sales/status", params={"date": "2026-11-23"}, timeout=5)
        skip = requests.get(f"{api.url}/sales/status", params={"date": "2026-11-22"}, timeout=5)
        bad = requests.get(f"{api.url}/sales", params={"date": "x", "limit": 5}, timeout=5)
    assert ok.json() == {
        "date": "2026-11-23",
        "should_process": True,
        "record_count": 5,
        "updated_since": True,
    }
    assert skip.json()["should_process"] is False
    assert bad.status_code == 422


def test_warmed_page_cache_serves_the_same_bodies() -> None:
    day = "2026-11-23"
    data = DemoData(rows_per_day=120, malformed_every=7, update_every=10)
    with serve_demo_api(data) as api:
        url = f"{api.url}/sales"
        cold = [
            requests.get(
                url, params={"date": day, "limit": 50, "cursor": encode_cursor(o)}, timeout=5
            ).content
            for o in (0, 50, 100)
        ]
        assert api.warm(day, 50) == 3
        assert len(api.page_cache or {}) == 3
        warm = [
            requests.get(
                url, params={"date": day, "limit": 50, "cursor": encode_cursor(o)}, timeout=5
            ).content
            for o in (0, 50, 100)
        ]
    assert warm == cold
    assert json.loads(cold[-1])["next_cursor"] is None


MIX = DayMix(rows=400, reject_rate=0.1, duplicate_rate=0.05, skew=1.1, long_id_rate=0.1)
CHANGES = MIX.with_change_rate(0.05)


def fetch_day(url: str, limit: int, **params: Any) -> tuple[list[Any], int]:
    """Every record of DAY_TEXT through the cursor, and the number of pages it took."""
    records: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {
            "date": DAY_TEXT,
            "limit": limit,
            **params,
            **({"cursor": cursor} if cursor else {}),
        }
        response = requests.get(f"{url}/sales", params=query, timeout=5)
        response.raise_for_status()
        body = response.json()
        records += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return records, pages


def test_serves_a_realistic_day_and_its_revisions() -> None:
    with serve_demo_api(DemoData(mix=CHANGES)) as api:
        assert fetch_day(api.url, 100)[0] == json.loads(json.dumps(day_records(CHANGES, DAY_TEXT)))
        api.set_data(revision=2)
        served, _ = fetch_day(api.url, 100)
    assert served == json.loads(json.dumps(day_records(CHANGES, DAY_TEXT, 2)))


def test_updated_since_filters_exactly_and_pages() -> None:
    since = revision_time(DAY_TEXT, 2)
    expected = json.loads(json.dumps(day_records(CHANGES, DAY_TEXT, 2, since)))
    assert len(expected) > 15
    with serve_demo_api(DemoData(mix=CHANGES, revision=2)) as api:
        served, pages = fetch_day(api.url, 4, updated_since=since.isoformat())
        status = requests.get(
            f"{api.url}/sales/status",
            params={"date": DAY_TEXT, "updated_since": since.isoformat()},
            timeout=5,
        ).json()
        # a later moment in another offset: the same instant is the same filter
        later = (since + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=5, minutes=30)))
        half, _ = fetch_day(api.url, 4, updated_since=later.isoformat())
        assert api.stats()["status_requests"] == 1
    assert served == expected
    assert pages == -(-len(expected) // 4)
    assert status == {
        "date": DAY_TEXT,
        "should_process": True,
        "record_count": len(expected),
        "updated_since": True,
    }
    assert 0 < len(half) < len(expected)
    assert all(datetime.fromisoformat(r["updated_at"]) >= later for r in half)


def test_updated_since_filters_simple_and_explicit_days_by_their_updated_at() -> None:
    data = DemoData(rows_per_day=60, update_every=10, malformed_every=7)
    everything = [data.generated(DAY_TEXT, i) for i in range(data.count(DAY_TEXT))]
    since = datetime.fromisoformat("2026-11-23T12:00:00+00:00")

    def kept(record: Any) -> bool:
        try:
            return datetime.fromisoformat(record["updated_at"]) >= since
        except (TypeError, KeyError, IndexError, ValueError):
            return True  # no readable updated_at: sent again rather than lost

    with serve_demo_api(data) as api:
        served, _ = fetch_day(api.url, 8, updated_since=since.isoformat())
    assert served == json.loads(json.dumps([r for r in everything if kept(r)]))
    assert 0 < len(served) < len(everything)


@pytest.mark.parametrize(("mode", "status_says"), [("ignore", False), ("ignore_unreported", None)])
def test_a_server_that_ignores_updated_since(mode: str, status_says: bool | None) -> None:
    since = revision_time(DAY_TEXT, 1).isoformat()
    with serve_demo_api(DemoData(mix=CHANGES, revision=1), updated_since=mode) as api:  # type: ignore[arg-type]
        served, _ = fetch_day(api.url, 100, updated_since=since)
        status = requests.get(
            f"{api.url}/sales/status", params={"date": DAY_TEXT, "updated_since": since}, timeout=5
        ).json()
    assert served == json.loads(json.dumps(day_records(CHANGES, DAY_TEXT, 1)))
    assert status["record_count"] == len(served)
    assert status.get("updated_since") is status_says
    assert ("updated_since" in status) is (status_says is not None)


def test_a_server_that_answers_400_to_updated_since() -> None:
    since = revision_time(DAY_TEXT, 1).isoformat()
    with serve_demo_api(DemoData(mix=CHANGES, revision=1), updated_since="reject") as api:
        url = api.url
        refused = requests.get(
            f"{url}/sales",
            params={"date": DAY_TEXT, "limit": 10, "updated_since": since},
            timeout=5,
        )
        status_refused = requests.get(
            f"{url}/sales/status", params={"date": DAY_TEXT, "updated_since": since}, timeout=5
        )
        status = requests.get(f"{url}/sales/status", params={"date": DAY_TEXT}, timeout=5).json()
        served, _ = fetch_day(url, 100)
    assert refused.status_code == 400 and "updated_since" in refused.json()["error"]
    assert status_refused.status_code == 400
    assert "updated_since" not in status
    assert served == json.loads(json.dumps(day_records(CHANGES, DAY_TEXT, 1)))


@pytest.mark.parametrize("value", ["2026-11-24T01:00:00", "yesterday"])
def test_updated_since_without_an_offset_is_a_bad_request(value: str) -> None:
    with serve_demo_api(DemoData(mix=MIX)) as api:
        answer = requests.get(
            f"{api.url}/sales",
            params={"date": DAY_TEXT, "limit": 10, "updated_since": value},
            timeout=5,
        )
    assert answer.status_code == 400


def test_admin_counts_requests_and_switches_revision_of_warmed_pages() -> None:
    with serve_demo_api(DemoData(mix=CHANGES)) as plain:
        assert requests.get(f"{plain.url}/_demo/stats", timeout=5).status_code == 404
    with serve_demo_api(DemoData(mix=CHANGES), admin=True) as api:
        assert api.warm(DAY_TEXT, 100) == 5
        fetch_day(api.url, 100)
        requests.get(f"{api.url}/sales/status", params={"date": DAY_TEXT}, timeout=5)
        stats = requests.get(f"{api.url}/_demo/stats", timeout=5).json()
        switched = requests.post(f"{api.url}/_demo/revision", params={"revision": 1}, timeout=30)
        served, pages = fetch_day(api.url, 100)
        cached = len(api.page_cache or {})
    assert stats["sales_requests"] == 5 and stats["status_requests"] == 1
    assert stats["requests"] == 6 and stats["revision"] == 0
    assert switched.json()["revision"] == 1
    assert served == json.loads(json.dumps(day_records(CHANGES, DAY_TEXT, 1)))
    assert cached == pages  # the new revision's pages were rendered ahead of time
