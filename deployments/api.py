"""What the registration scripts do when the Prefect API does not answer: one line, exit 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from prefect.settings import PREFECT_API_URL


@contextmanager
def unreachable_api_in_one_line() -> Iterator[None]:
    """Turn a connection failure to the Prefect API into ``SystemExit`` with one line naming
    ``PREFECT_API_URL`` (instead of a page of httpx traceback)."""
    try:
        yield
    except httpx.TransportError as exc:
        raise SystemExit(
            f"cannot reach the Prefect API at PREFECT_API_URL={PREFECT_API_URL.value()} "
            f"({type(exc).__name__}: {exc}); start it (make server) or fix the URL"
        ) from None
