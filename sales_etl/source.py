"""The sales API client: cursor pagination, timeouts, retries with backoff and jitter.

Errors follow the contract (``docs/sales-api.md``): 429 waits ``Retry-After`` (capped); 5xx,
connection resets, read timeouts and broken pages are retried with exponential backoff and full
jitter a bounded number of times; 400/401/403/404/422 fail at once. Messages name the status
and the endpoint, never the API key (it travels only in the ``Authorization`` header).

Incremental extraction: ``status(day, updated_since)`` tells whether the server filters by
``updated_since``; ``iter_pages(day, updated_since=...)`` sends it only when given. A server that
answers 400 to a request carrying it gets the whole day instead (``client.mode == "full"``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import orjson
import requests

from sales_etl import jsontext
from sales_etl.errors import PermanentSourceError, TransientSourceError
from sales_etl.settings import SourceConfig

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
RATE_LIMITED = 429
BAD_REQUEST = 400

ExtractMode = Literal["full", "incremental"]


@dataclass(frozen=True)
class SourceStatus:
    """The answer of ``/sales/status`` for one day.

    ``supports_updated_since``: the server says it filters ``/sales`` by ``updated_since``
    (false when it says false or nothing). ``updated_since``: the value ``record_count`` was
    counted for; None when the whole day was counted (not asked, or the server refused it).
    """

    day: date
    should_process: bool
    record_count: int
    supports_updated_since: bool = False
    updated_since: datetime | None = None


@dataclass(frozen=True)
class Page:
    """One page as received: the raw body (the lake keeps it byte for byte) and its records."""

    number: int
    body: bytes
    records: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class _Failed:
    """Why one attempt failed, and how long the server asked to wait (429 Retry-After)."""

    problem: str
    wait: float | None = None


class SalesApiClient:
    """A narrow client of the sales API. Open with ``with SalesApiClient(config) as client``."""

    def __init__(
        self,
        config: SourceConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if config.base_url is None:
            raise ValueError("SourceConfig.base_url must be set (the flow starts the demo API)")
        self._config = config
        self._base_url = config.base_url
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session = requests.Session()
        if config.api_key is not None:
            self._session.headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._session.headers["Accept"] = "application/json"
        self.requests_made = 0
        self.retries = 0
        # What the last iter_pages extracted: "incremental" when updated_since was sent and
        # accepted, "full" otherwise (not given, or refused with 400 and fallen back).
        self.mode: ExtractMode = "full"
        self.updated_since_refused = False

    def __enter__(self) -> SalesApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SalesApiClient(base_url={self._base_url!r})"

    def close(self) -> None:
        self._session.close()

    def status(self, day: date, updated_since: datetime | None = None) -> SourceStatus:
        """Ask whether ``day`` has data worth processing (since ``updated_since``, if given).

        A server that answers 400 to ``updated_since`` is asked again without it: the status
        then counts the whole day and says the capability is not supported.
        """
        params: dict[str, Any] = {"date": day.isoformat()}
        if updated_since is not None:
            params["updated_since"] = _iso(updated_since)
        try:
            _, body = self._get("/sales/status", params)
        except PermanentSourceError as exc:
            if updated_since is None or exc.status != BAD_REQUEST:
                raise
            self._refused("/sales/status", exc)
            return self.status(day)
        if not isinstance(body, dict) or not isinstance(body.get("should_process"), bool):
            raise PermanentSourceError(
                f"GET {self._base_url}/sales/status answered without a boolean should_process"
            )
        try:
            count = int(body.get("record_count", 0))
        except (TypeError, ValueError):
            count = 0
        supported = body.get("updated_since") is True
        return SourceStatus(
            day=day,
            should_process=body["should_process"],
            record_count=count,
            supports_updated_since=supported,
            updated_since=updated_since if supported else None,
        )

    def iter_pages(
        self,
        day: date,
        max_pages: int | None = None,
        *,
        lossless: bool = True,
        updated_since: datetime | None = None,
    ) -> Iterator[Page]:
        """Yield every page of ``day`` in order until ``next_cursor`` is null.

        ``updated_since`` (sent only when given) asks for the records changed since then. If
        the server answers 400 to the first page carrying it, the whole day is extracted
        instead; :attr:`mode` says which one the pages are ("incremental" or "full").

        ``lossless=False`` is for callers that keep ``Page.body`` and only count the records
        (the extract): the envelope is then parsed with orjson, numbers in ``Page.records``
        become int/float, and a body orjson refuses (NaN literals, integers beyond 64 bits,
        lone surrogates) is parsed the lossless way, so the same pages pass or fail either way.
        """
        self.mode = "full" if updated_since is None else "incremental"
        cursor: str | None = None
        number = 0
        while True:
            page = self._fetch_page(day, number, cursor, updated_since, lossless)
            yield page
            number += 1
            if page.next_cursor is None:
                return
            self._check_page_limit(day, number, max_pages)
            cursor = page.next_cursor

    def _fetch_page(
        self,
        day: date,
        number: int,
        cursor: str | None,
        updated_since: datetime | None,
        lossless: bool,
    ) -> Page:
        """Page ``number`` of ``day`` (at ``cursor``); fetched again as a full extract when the
        server refuses ``updated_since`` on the first page."""
        params = self._page_params(day, cursor, updated_since)
        try:
            raw, body = self._get("/sales", params, page=True, lossless=lossless)
        except PermanentSourceError as exc:
            if not self._fell_back_to_full(exc, number):
                raise
            return self._fetch_page(day, number, cursor, updated_since, lossless)
        return self._page(number, raw, body)

    def _page_params(
        self, day: date, cursor: str | None, updated_since: datetime | None
    ) -> dict[str, str | int]:
        """The query of a page request: the day, the page size, the cursor after the first page,
        and ``updated_since`` while the extract is incremental."""
        params: dict[str, str | int] = {"date": day.isoformat(), "limit": self._config.page_size}
        if cursor is not None:
            params["cursor"] = cursor
        if self.mode == "incremental" and updated_since is not None:
            params["updated_since"] = _iso(updated_since)
        return params

    def _fell_back_to_full(self, exc: PermanentSourceError, number: int) -> bool:
        """Whether ``exc`` (a failed page ``number``) switched the extract to a full one.

        Only the first page can fall back: after it, the server has accepted the parameter, and
        a later 400 is an error like any other.
        """
        if self.mode != "incremental" or number or exc.status != BAD_REQUEST:
            return False
        self._refused("/sales", exc)
        self.mode = "full"
        return True

    def _check_page_limit(self, day: date, pages: int, max_pages: int | None) -> None:
        """Refuse a day whose cursor has not ended after ``max_pages`` pages."""
        if max_pages is not None and pages >= max_pages:
            raise PermanentSourceError(
                f"GET {self._base_url}/sales returned more than {max_pages} pages for {day}; "
                "the cursor does not seem to end"
            )

    def _page(self, number: int, raw: bytes, body: Any) -> Page:
        next_cursor = body.get("next_cursor")
        if next_cursor is not None and not isinstance(next_cursor, str):
            raise PermanentSourceError(
                f"GET {self._base_url}/sales page {number} has a next_cursor that is not a "
                "string or null"
            )
        return Page(number=number, body=raw, records=body["data"], next_cursor=next_cursor)

    def _refused(self, path: str, exc: PermanentSourceError) -> None:
        self.updated_since_refused = True
        log.warning(
            "GET %s%s refused updated_since (%s); extracting the whole day instead",
            self._base_url,
            path,
            exc,
        )

    def _get(
        self, path: str, params: dict[str, Any], *, page: bool = False, lossless: bool = True
    ) -> tuple[bytes, Any]:
        """GET with the retry policy of the contract; returns (raw body, parsed JSON)."""
        endpoint = f"{self._base_url}{path}"
        attempts = self._config.max_retries + 1
        failed = _Failed("no attempt made")
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
            self.requests_made += 1
            outcome = self._attempt(endpoint, params, page=page, lossless=lossless)
            if not isinstance(outcome, _Failed):
                return outcome
            failed = outcome
            if attempt < attempts - 1:
                self._pause(endpoint, failed, attempt, attempts)
        raise TransientSourceError(
            f"GET {endpoint} still failing after {attempts} attempts: {failed.problem}"
        )

    def _attempt(
        self, endpoint: str, params: dict[str, Any], *, page: bool, lossless: bool
    ) -> tuple[bytes, Any] | _Failed:
        """One GET: (raw body, parsed JSON), or why it failed and may be retried. A status no
        retry can fix raises :class:`PermanentSourceError`."""
        timeout = (min(10.0, self._config.timeout_seconds), self._config.timeout_seconds)
        try:
            response = self._session.get(endpoint, params=params, timeout=timeout, stream=True)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return _Failed(type(exc).__name__)
        with response:
            status = response.status_code
            if status == 200:
                return self._read_page(response, endpoint, page=page, lossless=lossless)
            if status == RATE_LIMITED:
                wait = _retry_after(response.headers.get("Retry-After"))
                return _Failed("429 Too Many Requests", wait)
            if status in TRANSIENT_STATUSES:
                return _Failed(f"{status} {response.reason}")
            raise PermanentSourceError(
                f"GET {endpoint} answered {status} {response.reason}: "
                f"{self._redact(_error_text(response))}",
                status=status,
            )

    def _read_page(
        self, response: requests.Response, endpoint: str, *, page: bool, lossless: bool
    ) -> tuple[bytes, Any] | _Failed:
        """The body of a 200 answer, parsed; a body cut short or not JSON may be retried."""
        try:
            raw = self._read_body(response, endpoint)
            body = jsontext.loads_page(raw) if lossless else _fast_loads(raw)
            if page and not _is_page(body):
                raise ValueError("body lacks a 'data' list")
            return raw, body
        except ValueError as exc:  # not JSON at all: perhaps cut short
            return _Failed(f"broken page ({str(exc)[:80]})")
        except (requests.ConnectionError, requests.Timeout) as exc:
            return _Failed(f"{type(exc).__name__} while reading the body")

    def _pause(self, endpoint: str, failed: _Failed, attempt: int, attempts: int) -> None:
        """Wait before the next attempt: the server's Retry-After (capped), else the backoff."""
        cap = self._config.backoff_cap_seconds
        delay = self._backoff(attempt) if failed.wait is None else min(failed.wait, cap)
        log.warning(
            "GET %s failed (%s); retry %d/%d in %.2fs",
            endpoint,
            failed.problem,
            attempt + 1,
            attempts - 1,
            delay,
        )
        self._sleep(delay)

    def _redact(self, text: str) -> str:
        """Remove the API key from server-provided text (a hostile server may echo it)."""
        key = self._config.api_key.get_secret_value() if self._config.api_key else ""
        return text.replace(key, "***") if key else text

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
        ceiling = min(
            self._config.backoff_cap_seconds, self._config.backoff_base_seconds * 2**attempt
        )
        return self._rng.uniform(0, ceiling)

    def _read_body(self, response: requests.Response, endpoint: str) -> bytes:
        limit = self._config.max_page_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PermanentSourceError(
                f"GET {endpoint} page of {int(declared):,} bytes exceeds the limit of {limit:,}"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=1 << 20):
            size += len(chunk)
            if size > limit:
                raise PermanentSourceError(
                    f"GET {endpoint} page exceeds the limit of {limit:,} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def max_pages_for(record_count: int, page_size: int) -> int:
    """A generous bound on the pages of a day, so a cursor that never ends cannot run forever."""
    return 2 * math.ceil(max(record_count, 1) / page_size) + 100


def _fast_loads(raw: bytes) -> Any:
    """orjson where it agrees with the lossless parser on validity, else the lossless parser.

    A record nested deeper than either parser goes is a :class:`~sales_etl.jsontext.DeepRecord`
    (the transform rejects it), not a broken page.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return jsontext.loads_page(raw)


def _iso(moment: datetime) -> str:
    """``updated_since`` as the contract wants it: ISO-8601 with an offset (naive is refused)."""
    if moment.tzinfo is None:
        raise ValueError(f"updated_since must be timezone-aware, got {moment!r}")
    return moment.isoformat()


def _is_page(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("data"), list)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_text(response: requests.Response) -> str:
    """A short, printable excerpt of an error body (the server's words, not ours)."""
    try:
        text = response.raw.read(300, decode_content=True).decode("utf-8", "replace")
    except Exception:
        return "(no body)"
    return " ".join(text.split())[:200] or "(empty body)"
