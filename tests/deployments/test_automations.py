"""The Daily Sales automations on a real ``prefect server start``, notifying a loopback
HTTP receiver through a webhook block: each fires with the day in it; a late day that loads
before the deadline does not."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import (
    BUCKET_BUFFER_SETTING,
    LATE_START_BUFFER,
    late_start_server_env,
    late_start_warning,
    server_bucket_buffer,
)
from tests.utils import REPO, PrefectServer, Receiver, automations_cli, wait_for

pytestmark = pytest.mark.e2e


def emit(server: PrefectServer, name: str, day: str, occurred: datetime, **payload: Any) -> None:
    """POST one event to the server's events API, as a flow run's events client does."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": occurred.isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": f"sales.day.{day}", "sales.day": day},
        "payload": payload,
    }
    with server.client() as client:
        client.post("/events", json=[event]).raise_for_status()


@pytest.mark.long
def test_automations_fire_to_a_webhook_with_the_day(
    prefect_server: PrefectServer, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    # The deadline is 15 s after the day "closes" (the due event's time) in this test.
    first = automations_cli(prefect_server, "--webhook-url", url, "--deadline", "00:00:15")
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr  # the session server keeps expired windows a day
    assert [line.split(" automation ")[0] for line in first.stdout.splitlines()] == ["created"] * 4
    again = automations_cli(prefect_server, "--deadline", "00:00:15")  # the saved block
    assert again.returncode == 0, again.stderr
    assert [line.split(" automation ")[0] for line in again.stdout.splitlines()] == ["updated"] * 4
    with prefect_server.client() as client:
        found = client.post("/automations/filter", json={}).json()
    names = sorted(a["name"] for a in found if "daily-sales" in a["tags"])
    assert names == [
        "Daily Sales: day not loaded by the deadline",
        "Daily Sales: quality degraded",
        "Daily Sales: run failed",
        "Daily Sales: warehouse asset not fresh",
    ]

    # Automations load into the triggers service asynchronously: give it a moment.
    time.sleep(5)
    now = datetime.now(UTC)
    # 2026-10-01 closes now and never loads; 2026-10-02 closes now and loads 3 s later.
    emit(prefect_server, "sales.day.due", "2026-10-01", now)
    emit(prefect_server, "sales.day.due", "2026-10-02", now)
    emit(prefect_server, "sales.day.quality-degraded", "2026-10-03", now, reject_rate=0.4)
    emit(prefect_server, "sales.day.failed", "2026-10-04", now, reason="API answered 403")
    # A run that starts long after its day's deadline: its window closed ten minutes ago. The
    # server keeps it (PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER), so it still fires; with
    # Prefect's default (60 s) the 5-second sweep removes it first and nothing ever fires.
    emit(prefect_server, "sales.day.due", "2026-10-05", now - timedelta(minutes=10))
    time.sleep(3)
    emit(prefect_server, "sales.day.loaded", "2026-10-02", datetime.now(UTC), valid=10)

    def alerts() -> dict[str, dict[str, Any]] | None:
        by_resource = {call["resource"]: call for call in receiver.calls}
        return by_resource if len(by_resource) == 4 else None

    by_resource = wait_for(alerts, 90, "four webhook calls", interval=1)
    for day in ("2026-10-01", "2026-10-05"):
        assert by_resource[f"sales.day.{day}"]["alert"] == "not-loaded"
        assert by_resource[f"sales.day.{day}"]["detail"] == "not loaded by 00:00:15 UTC"
    assert by_resource["sales.day.2026-10-03"]["alert"] == "quality-degraded"
    assert by_resource["sales.day.2026-10-03"]["detail"] == {"reject_rate": 0.4}
    assert by_resource["sales.day.2026-10-04"]["alert"] == "run-failed"
    assert by_resource["sales.day.2026-10-04"]["detail"] == {"reason": "API answered 403"}
    # The late day that loaded before its deadline never fires, well past that deadline.
    time.sleep(max(0.0, (now + timedelta(seconds=25) - datetime.now(UTC)).total_seconds()))
    assert not [c for c in receiver.calls if c["resource"] == "sales.day.2026-10-02"]
    assert len(receiver.calls) == 4, receiver.calls


def test_a_server_that_sweeps_expired_windows_soon_gets_a_warning() -> None:
    assert late_start_warning(None) is None  # Prefect Cloud: no settings to read
    assert late_start_warning(LATE_START_BUFFER) is None
    warning = late_start_warning(timedelta(seconds=60))
    assert warning is not None
    assert "60 s" in warning
    assert "PREFECT_SERVER_EVENTS_EXPIRED_BUCKET_BUFFER=P1D" in warning


def test_the_script_reads_the_servers_bucket_buffer(prefect_server: PrefectServer) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        assert server_bucket_buffer() == LATE_START_BUFFER  # the session server's setting


def test_make_server_keeps_expired_windows_as_the_script_expects() -> None:
    [(setting, value)] = late_start_server_env().items()
    assert setting == BUCKET_BUFFER_SETTING
    assert f"{setting}={value} " in (REPO / "Makefile").read_text()
