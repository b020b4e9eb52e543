from __future__ import annotations

import json
from datetime import date

import requests

from sales_etl import jsontext
from sales_etl.demo_api import (
    CORRUPTIONS,
    DemoData,
    Faults,
    decode_cursor,
    encode_cursor,
    serve_demo_api,
)
from sales_etl.validate import validate_records


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345


def test_generated_day_is_deterministic_and_valid() -> None:
    data = DemoData(rows_per_day=300)
    first = [data.generated("2026-11-23", i) for i in range(300)]
    assert first == [data.generated("2026-11-23", i) for i in range(300)]
    result = validate_records(jsontext.loads(json.dumps(first)), date(2026, 11, 23))
    assert len(result.clean) == 300, result.rejected[["reason", "detail"]]


def test_malformed_every_corrupts_every_nth_record_in_each_way() -> None:
    data = DemoData(rows_per_day=10 * len(CORRUPTIONS), malformed_every=10)
    records = [data.generated("2026-11-23", i) for i in range(data.count("2026-11-23"))]
    result = validate_records(jsontext.loads(json.dumps(records)), date(2026, 11, 23))
    assert len(result.rejected) == len(CORRUPTIONS)
    assert set(result.rejected["record_index"]) == {10 * k + 9 for k in range(len(CORRUPTIONS))}


def test_status_health_and_skip_days() -> None:
    data = DemoData(rows_per_day=5, skip_days=frozenset({"2026-11-22"}))
    with serve_demo_api(data, Faults()) as api:
        assert requests.get(f"{api.url}/health", timeout=5).json() == {"status": "ok"}
        ok = requests.get(f"{api.url}/sales/status", params={"date": "2026-11-23"}, timeout=5)
        skip = requests.get(f"{api.url}/sales/status", params={"date": "2026-11-22"}, timeout=5)
        bad = requests.get(f"{api.url}/sales", params={"date": "x", "limit": 5}, timeout=5)
    assert ok.json() == {"date": "2026-11-23", "should_process": True, "record_count": 5}
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
