"""The project's own demo sales API: the contract of ``docs/sales-api.md``, with faults.

It is the embedded default of a local run (started in-process on a free loopback port), the test
fixture and the benchmark source (``python -m devharness.demo_api --port 8765 --rows 1000000``).

Data is either generated deterministically per day (``rows_per_day``) or given explicitly
(``records``). Faults are deterministic so tests can assert exact outcomes:

* ``error_5xx_every=N``: every Nth request to ``/sales`` answers 503;
* ``rate_limit_every=N``: every Nth request answers 429 with ``Retry-After``;
* ``reset_every=N``: every Nth request has its connection closed without an answer;
* ``broken_page_every=N``: every Nth request answers 200 with a body that is not JSON;
* ``slow_every=N`` / ``slow_seconds``: every Nth request answers late (a read timeout);
* ``duplicate_page_every=N`` (N >= 2): every Nth page is served twice (the same records again);
* ``malformed_every=N``: every Nth generated record is broken (the ways of
  :data:`MALFORMED_CYCLE`, from :data:`devharness.records.BREAKAGES`, in turn);
* ``update_every=N``: every Nth generated sale is sent again at the end with a newer version;
* ``permanent_status``: every ``/sales`` request answers this status (e.g. 403);
* ``new_field_from=N``: generated records from position N on carry a field outside the
  contract, ``channel`` (:data:`NEW_FIELD`): a source that starts sending it halfway through a day;
* ``dropped_field="customer_id"``: generated records no longer carry that field;
* ``retyped_field="amount"``: that field is sent as the other JSON type (a number as a string,
  a numeric string as a number);
* ``api_key``: requests without ``Authorization: Bearer <key>`` answer 401.

Realistic days (``DemoData(mix=DayMix(...), revision=r)``, see :mod:`devharness.demo_days`):
rejects spread over every reason code, duplicates, skewed stores and products, long ids, and
later revisions of a day (updates, voids, fixes, new and stale versions, malformed updates).

``updated_since`` (the contract's optional capability) is served by default; the
``updated_since`` switch of :func:`serve_demo_api` makes a server without it:

* ``"filter"``: ``/sales`` returns only records with ``updated_at >= updated_since``, the status
  counts those and says ``"updated_since": true``;
* ``"ignore"``: the parameter is ignored (the whole day), the status says ``false``;
* ``"ignore_unreported"``: ignored, and the status does not mention the capability;
* ``"reject"``: a request carrying the parameter answers 400; the status does not mention it.

``admin=True`` adds ``GET /_demo/stats`` (request counters) and ``POST /_demo/revision?revision=N``
(serve another revision of a realistic day, re-rendering the warmed pages) for benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

from devharness.demo_days import DayMix, day_plan
from devharness.records import EXTRA_FIELD, VERSION_DELAY, Variety, broken, draw_sales, render

NEW_FIELD = EXTRA_FIELD  # the field new_field_from adds
# The ways of devharness.records.BREAKAGES malformed_every cycles through, in this order: one per
# field it breaks; two of them (missing_sale_id, array) leave no usable sale_id.
MALFORMED_CYCLE: tuple[str, ...] = (
    "missing_sale_id",
    "bad_sale_date",
    "localised_amount",
    "unknown_currency",
    "negative_amount",
    "sql_store_id",
    "nul_product_id",
    "string_quantity",
    "huge_customer_id",
    "array",
)
SIMPLE = Variety()  # what the simple days draw: plain, uniform, 50 stores


@dataclass(frozen=True)
class Faults:
    """Deterministic fault switches; 0 means off."""

    error_5xx_every: int = 0
    rate_limit_every: int = 0
    retry_after_seconds: int = 1
    reset_every: int = 0
    broken_page_every: int = 0
    slow_every: int = 0
    slow_seconds: float = 0.0
    duplicate_page_every: int = 0
    permanent_status: int | None = None


UpdatedSinceMode = Literal["filter", "ignore", "ignore_unreported", "reject"]
UPDATED_SINCE_MODES: tuple[str, ...] = get_args(UpdatedSinceMode)


@dataclass(frozen=True)
class DemoData:
    """What the API serves: generated days and/or explicit records per day.

    Explicit ``records`` of a day win; else a realistic day when ``mix`` is set (at
    ``revision``); else the simple generated day (``rows_per_day``, ``malformed_every``, ...).
    """

    rows_per_day: int = 1000
    malformed_every: int = 0
    update_every: int = 0
    records: dict[str, Sequence[Any]] = field(default_factory=dict)
    skip_days: frozenset[str] = frozenset()
    mix: DayMix | None = None
    revision: int = 0
    # Changes of the records' shape (the schema contract's tests): see the module docstring.
    new_field_from: int | None = None
    dropped_field: str | None = None
    retyped_field: str | None = None

    def count(self, day: str, since: datetime | None = None) -> int:
        if since is not None:
            return len(self._positions(day, since))
        if day in self.records:
            return len(self.records[day])
        if self.mix is not None:
            return day_plan(self.mix, day, self.revision).count
        updates = self.rows_per_day // self.update_every if self.update_every else 0
        return self.rows_per_day + updates

    def page(self, day: str, offset: int, limit: int, since: datetime | None = None) -> list[Any]:
        if since is not None:
            return self._at(day, self._positions(day, since)[offset : offset + limit])
        if day in self.records:
            return list(self.records[day][offset : offset + limit])
        stop = min(offset + limit, self.count(day))
        if self.mix is not None:
            return day_plan(self.mix, day, self.revision).records(range(offset, stop))
        return self._generated(day, range(offset, stop))

    def _positions(self, day: str, since: datetime) -> Sequence[int]:
        """Positions of the records with ``updated_at >= since``.

        A record whose ``updated_at`` cannot be read is kept (the source cannot tell when it
        changed; sending it again is harmless, dropping it is not).
        """
        if day not in self.records and self.mix is not None:
            return day_plan(self.mix, day, self.revision).positions(since).tolist()
        records = self.page(day, 0, self.count(day))
        return [i for i, r in enumerate(records) if _changed_since(r, since)]

    def _at(self, day: str, positions: Sequence[int]) -> list[Any]:
        if day not in self.records and self.mix is not None:
            return day_plan(self.mix, day, self.revision).records(positions)
        return [self.page(day, p, 1)[0] for p in positions]

    def is_realistic(self, day: str) -> bool:
        return self.mix is not None and day not in self.records

    def generated(self, day: str, position: int) -> Any:
        """The record at ``position`` of a generated day's stream."""
        return self._generated(day, range(position, position + 1))[0]

    def _generated(self, day: str, positions: range) -> list[Any]:
        """The records at ``positions`` of a generated day's stream: the sales in order, then a
        tail re-sending every ``update_every``-th sale, changed and newer (version 2)."""
        n = self.rows_per_day
        numbers = [p if p < n else (p - n) * self.update_every for p in positions]
        versions = [1 if p < n else 2 for p in positions]
        records = generate_records(day, numbers, versions)
        return [
            self._malformed(self._reshaped(record, position), position)
            for record, position in zip(records, positions, strict=True)
        ]

    def _malformed(self, record: dict[str, Any], position: int) -> Any:
        """``record``, broken in the next way of :data:`MALFORMED_CYCLE` when it is one of every
        ``malformed_every`` sales (never in the tail of updates)."""
        every = self.malformed_every
        if every and position < self.rows_per_day and position % every == every - 1:
            way = MALFORMED_CYCLE[(position // every) % len(MALFORMED_CYCLE)]
            return broken(record, way)
        return record

    def _reshaped(self, record: dict[str, Any], position: int) -> dict[str, Any]:
        """``record`` with the shape switches applied (new, dropped, retyped field)."""
        if self.new_field_from is not None and position >= self.new_field_from:
            record[NEW_FIELD] = "web" if position % 2 else "store"
        if self.dropped_field is not None:
            record.pop(self.dropped_field, None)
        if self.retyped_field is not None and self.retyped_field in record:
            record[self.retyped_field] = _other_type(record[self.retyped_field])
        return record


def generate_record(day: str, i: int, version: int = 1) -> dict[str, Any]:
    """A valid, deterministic sale number ``i`` of ``day`` (version 2 is a later update)."""
    record: dict[str, Any] = generate_records(day, [i], [version])[0]
    return record


def generate_records(day: str, numbers: Sequence[int], versions: Sequence[int]) -> list[Any]:
    """The valid sales ``numbers`` of ``day`` at ``versions`` (:data:`SIMPLE`, drawn and rendered
    by :mod:`devharness.records`): a later version sells one more, five minutes later."""
    d = date.fromisoformat(day)
    drawn = draw_sales(d.isoformat(), np.asarray(numbers, dtype=np.int64), SIMPLE)
    version = np.asarray(versions, dtype=np.int64)
    drawn.quantity = drawn.quantity + version - 1
    return render(d, drawn, drawn.second + VERSION_DELAY * version)


def _other_type(value: Any) -> Any:
    """A number as its text, a numeric string as a number (exact: an int, or a float whose
    shortest text is the string's decimal value); anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value):
        return int(value) if value.lstrip("-").isdigit() else float(value)
    return value


def _changed_since(record: Any, since: datetime) -> bool:
    try:
        updated = datetime.fromisoformat(record["updated_at"])
    except (TypeError, KeyError, IndexError, ValueError):
        return True
    if updated.tzinfo is None:
        return True
    return updated >= since


def parse_updated_since(text: str) -> datetime:
    """An ``updated_since`` value: ISO-8601 with an offset (a ``+`` decoded as space is fixed)."""
    moment = datetime.fromisoformat(re.sub(r" (\d{2}:?\d{2})$", r"+\1", text.strip()))
    if moment.tzinfo is None:
        raise ValueError("updated_since must carry an offset")
    return moment


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("o:"):
        raise ValueError("bad cursor")
    return int(text[2:])


class DemoSalesApi:
    """A running demo API. Use :func:`serve_demo_api` to start one."""

    def __init__(
        self,
        data: DemoData,
        faults: Faults,
        api_key: str | None = None,
        *,
        updated_since: UpdatedSinceMode = "filter",
        admin: bool = False,
    ) -> None:
        if updated_since not in UPDATED_SINCE_MODES:
            raise ValueError(f"updated_since must be one of {UPDATED_SINCE_MODES}")
        self.data = data
        self.faults = faults
        self.api_key = api_key
        self.updated_since: UpdatedSinceMode = updated_since
        self.admin = admin
        self.requests = 0  # requests to /sales (pages), faults included
        self.status_requests = 0
        self.pages_served = 0
        self.sales_requests: list[str] = []
        # Rendered page bodies by (day, offset, limit, since); None = render every request.
        self.page_cache: dict[tuple[str, int, int, str | None], bytes] | None = None
        self._warmed: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_faults(self, **changes: Any) -> None:
        """Switch faults on or off while the server runs."""
        self.faults = replace(self.faults, **changes)

    def set_data(self, **changes: Any) -> None:
        """Change what is served (e.g. ``revision=1``); warmed days are rendered again."""
        self.data = replace(self.data, **changes)
        if self.page_cache is not None:
            self.page_cache.clear()
            for day, limit in sorted(self._warmed):
                self.warm(day, limit)

    def stats(self) -> dict[str, Any]:
        """Request counters (for tests and the benchmark's request counts)."""
        with self._lock:
            return {
                "sales_requests": self.requests,
                "status_requests": self.status_requests,
                "requests": self.requests + self.status_requests,
                "pages_served": self.pages_served,
                "revision": self.data.revision,
                "updated_since": self.updated_since,
            }

    def page_body(self, day: str, offset: int, limit: int, since: datetime | None = None) -> bytes:
        """The JSON body of the page at ``offset`` (from the page cache when it is on)."""
        key = (day, offset, limit, None if since is None else since.isoformat())
        cache = self.page_cache
        if cache is not None and key in cache:
            return cache[key]
        records = self.data.page(day, offset, limit, since)
        next_offset = offset + len(records)
        more = next_offset < self.data.count(day, since)
        envelope = {"data": records, "next_cursor": encode_cursor(next_offset) if more else None}
        # Realistic days hold nothing orjson refuses; explicit records may (NaN, huge integers).
        body = (
            orjson.dumps(envelope) if self.data.is_realistic(day) else json.dumps(envelope).encode()
        )
        if cache is not None:
            cache[key] = body
        return body

    def warm(self, day: str, limit: int) -> int:
        """Render every page of ``day`` at page size ``limit`` into the page cache, ahead of time.

        For benchmarks: the records are generated in Python on the fly, which would otherwise
        bound the throughput a client can measure. Returns the number of pages rendered.
        """
        if self.page_cache is None:
            self.page_cache = {}
        self._warmed.add((day, limit))
        pages = 0
        for offset in range(0, self.data.count(day), limit):
            self.page_body(day, offset, limit)
            pages += 1
        return pages

    def next_request_number(self, path: str) -> int:
        with self._lock:
            self.requests += 1
            self.sales_requests.append(path)
            return self.requests

    def count_status_request(self) -> None:
        with self._lock:
            self.status_requests += 1


def _handler_for(api: DemoSalesApi) -> type[BaseHTTPRequestHandler]:
    """The request handler class of one demo API (the HTTP server makes one per request)."""
    return type("Handler", (_DemoHandler,), {"api": api})


class _DemoHandler(BaseHTTPRequestHandler):
    """The demo API's endpoints (docs/sales-api.md): health, status, pages, and admin controls."""

    protocol_version = "HTTP/1.1"
    api: DemoSalesApi

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/health":
            self._json(200, {"status": "ok"})
            return
        if not self._authorised():
            return
        if parts.path == "/sales/status":
            self._status(query)
        elif parts.path == "/sales":
            self._sales(query)
        elif parts.path == "/_demo/stats" and self.api.admin:
            self._json(200, self.api.stats())
        else:
            self._json(404, {"error": f"no such endpoint {parts.path}"})

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not self._authorised():
            return
        if parts.path != "/_demo/revision" or not self.api.admin:
            self._json(404, {"error": f"no such endpoint {parts.path}"})
            return
        try:
            revision = int(query["revision"])
        except (KeyError, ValueError):
            self._json(400, {"error": "revision must be an integer"})
            return
        started = time.perf_counter()
        self.api.set_data(revision=revision)
        seconds = round(time.perf_counter() - started, 3)
        self._json(200, {"revision": revision, "render_seconds": seconds})

    def _authorised(self) -> bool:
        if self.api.api_key is not None and self.headers.get("Authorization") != (
            f"Bearer {self.api.api_key}"
        ):
            self._json(401, {"error": "missing or wrong API key"})
            return False
        return True

    def _since(self, query: dict[str, str]) -> tuple[bool, datetime | None]:
        """(acceptable, the updated_since to filter on); answers 400 when not acceptable."""
        if "updated_since" not in query:
            return True, None
        if self.api.updated_since == "reject":
            self._json(400, {"error": "unknown query parameter: updated_since"})
            return False, None
        if self.api.updated_since != "filter":
            return True, None
        try:
            return True, parse_updated_since(query["updated_since"])
        except ValueError:
            self._json(400, {"error": "updated_since must be ISO-8601 with an offset"})
            return False, None

    def _status(self, query: dict[str, str]) -> None:
        api = self.api
        api.count_status_request()
        day = _parse_day(query.get("date"))
        if day is None:
            self._json(400, {"error": "date must be YYYY-MM-DD"})
            return
        ok, since = self._since(query)
        if not ok:
            return
        count = api.data.count(day, since)
        should = day not in api.data.skip_days and count > 0
        body: dict[str, Any] = {"date": day, "should_process": should, "record_count": count}
        if api.updated_since in ("filter", "ignore"):
            body["updated_since"] = api.updated_since == "filter"
        self._json(200, body)

    def _sales(self, query: dict[str, str]) -> None:
        n = self.api.next_request_number(self.path)
        if self._fault(n):
            return
        request = self._page_request(query)
        if request is None:
            return
        day, offset, limit, since = request
        if _every(self.api.faults.broken_page_every, n):
            self._send(200, b"<html>502 Bad Gateway</html>", "application/json")
            return
        if self._duplicate_page() and offset > 0:
            # Serve the previous page again: the client sees the same records twice.
            records = self.api.data.page(day, max(0, offset - limit), limit, since)
            more = offset < self.api.data.count(day, since)
            next_cursor = encode_cursor(offset) if more else None
            self._json(200, {"data": records, "next_cursor": next_cursor})
            return
        self._send(200, self.api.page_body(day, offset, limit, since), "application/json")

    def _fault(self, n: int) -> bool:
        """Answer the ``n``-th page request with the fault the switches give it, if any."""
        faults = self.api.faults
        if faults.permanent_status is not None:
            self._json(faults.permanent_status, {"error": "permanent failure (demo fault)"})
        elif _every(faults.reset_every, n):
            self.close_connection = True
            self.connection.close()
        elif _every(faults.rate_limit_every, n):
            retry_after = {"Retry-After": str(faults.retry_after_seconds)}
            self._json(429, {"error": "slow down"}, headers=retry_after)
        elif _every(faults.error_5xx_every, n):
            self._json(503, {"error": "temporarily unavailable (demo fault)"})
        else:
            if _every(faults.slow_every, n):
                time.sleep(faults.slow_seconds)
            return False
        return True

    def _page_request(self, query: dict[str, str]) -> tuple[str, int, int, datetime | None] | None:
        """(day, offset, limit, updated_since) of a page request, or None once answered 4xx."""
        day = _parse_day(query.get("date"))
        try:
            limit = int(query.get("limit", "1000"))
            offset = decode_cursor(query["cursor"]) if "cursor" in query else 0
        except (ValueError, UnicodeDecodeError):
            self._json(400, {"error": "bad limit or cursor"})
            return None
        if day is None or not 1 <= limit <= 10_000:
            self._json(422, {"error": "date must be YYYY-MM-DD and 1 <= limit <= 10000"})
            return None
        ok, since = self._since(query)
        return (day, offset, limit, since) if ok else None

    def _duplicate_page(self) -> bool:
        """Whether this page is one the duplicate-page fault serves twice."""
        with self.api._lock:
            self.api.pages_served += 1
            page_number = self.api.pages_served
        return _every(self.api.faults.duplicate_page_every, page_number)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase if status in _PHRASES else "")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


_PHRASES = {s.value for s in HTTPStatus}


class _QuietServer(ThreadingHTTPServer):
    """A threaded server that does not print tracebacks when a client hangs up (timeouts)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


def _every(n: int, count: int) -> bool:
    return n > 0 and count % n == 0


def _parse_day(text: str | None) -> str | None:
    try:
        return date.fromisoformat(text or "").isoformat()
    except ValueError:
        return None


@contextmanager
def serve_demo_api(
    data: DemoData | None = None,
    faults: Faults | None = None,
    *,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    updated_since: UpdatedSinceMode = "filter",
    admin: bool = False,
) -> Iterator[DemoSalesApi]:
    """Run the demo API in a background thread for the duration of the ``with`` block.

    ``updated_since`` chooses how the server treats that parameter (module docstring);
    ``admin`` adds the ``/_demo/`` endpoints.
    """
    api = DemoSalesApi(
        data or DemoData(),
        faults or Faults(),
        api_key=api_key,
        updated_since=updated_since,
        admin=admin,
    )
    server = _QuietServer((host, port), _handler_for(api))
    api._server = server
    thread = threading.Thread(target=server.serve_forever, name="demo-sales-api", daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devharness.demo_api", description="Serve the demo sales API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rows", type=int, default=1000, help="generated sales per day")
    parser.add_argument("--malformed-every", type=int, default=0)
    parser.add_argument("--update-every", type=int, default=0)
    shape = parser.add_argument_group("a change of the records' shape (the schema contract)")
    shape.add_argument(
        "--new-field-from", type=int, default=None, help=f"records from here on carry {NEW_FIELD}"
    )
    shape.add_argument("--dropped-field", default=None, help="e.g. customer_id")
    shape.add_argument("--retyped-field", default=None, help="e.g. amount or quantity")
    parser.add_argument("--error-5xx-every", type=int, default=0)
    parser.add_argument("--rate-limit-every", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--warm-date",
        default=None,
        help="render every page of this day (YYYY-MM-DD) into memory before listening",
    )
    parser.add_argument("--warm-page-size", type=int, default=5000)
    realistic = parser.add_argument_group(
        "realistic days (devharness.demo_days; any of these switches them on)"
    )
    realistic.add_argument("--realistic", action="store_true", help="realistic days, clean")
    realistic.add_argument("--reject-rate", type=float, default=None, help="e.g. 0.1")
    realistic.add_argument("--duplicates", type=float, default=None, help="e.g. 0.05")
    realistic.add_argument("--skew", type=float, default=None, help="Zipf exponent, e.g. 1.1")
    realistic.add_argument("--long-ids", type=float, default=None, help="share of 64-char ids")
    realistic.add_argument("--seed", type=int, default=None)
    realistic.add_argument("--revision", type=int, default=None, help="revision served (0..)")
    realistic.add_argument(
        "--change-rate",
        type=float,
        default=None,
        help="share of the rows each revision changes (default 0.01)",
    )
    parser.add_argument(
        "--updated-since",
        choices=UPDATED_SINCE_MODES,
        default="filter",
        help="filter (the capability), ignore (status says false), ignore_unreported "
        "(status silent), reject (400 to the parameter)",
    )
    parser.add_argument(
        "--admin", action="store_true", help="serve GET /_demo/stats and POST /_demo/revision"
    )
    return parser


def mix_from_args(args: argparse.Namespace) -> DayMix | None:
    """The realistic mix the CLI options ask for, or None for the simple generated days."""
    options = ("reject_rate", "duplicates", "skew", "long_ids", "seed", "revision", "change_rate")
    if not args.realistic and all(getattr(args, name) is None for name in options):
        return None
    mix = DayMix(
        rows=args.rows,
        reject_rate=args.reject_rate or 0.0,
        duplicate_rate=args.duplicates or 0.0,
        skew=args.skew or 0.0,
        long_id_rate=args.long_ids or 0.0,
        seed=args.seed or 0,
    )
    return mix if args.change_rate is None else mix.with_change_rate(args.change_rate)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo API in the foreground (for benchmarks and manual exploration)."""
    args = build_parser().parse_args(argv)
    data = DemoData(
        rows_per_day=args.rows,
        malformed_every=args.malformed_every,
        update_every=args.update_every,
        mix=mix_from_args(args),
        revision=args.revision or 0,
        new_field_from=args.new_field_from,
        dropped_field=args.dropped_field,
        retyped_field=args.retyped_field,
    )
    faults = Faults(error_5xx_every=args.error_5xx_every, rate_limit_every=args.rate_limit_every)
    with serve_demo_api(
        data,
        faults,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        updated_since=args.updated_since,
        admin=args.admin,
    ) as api:
        if args.warm_date:
            started = time.perf_counter()
            pages = api.warm(args.warm_date, args.warm_page_size)
            print(
                f"rendered {pages} pages ({api.data.count(args.warm_date):,} records) of "
                f"{args.warm_date} into memory in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        print(f"demo sales API listening on {api.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
