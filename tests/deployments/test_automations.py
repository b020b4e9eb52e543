"""The Daily Sales automations on a real ``prefect server start``, notifying a loopback
HTTP receiver through a webhook block: each fires with the day in it; a late day that loads
before the deadline does not."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.utils import PrefectServer, Receiver, automations_cli, wait_for

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


def test_automations_fire_to_a_webhook_with_the_day(
    prefect_server: PrefectServer, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    # The deadline is 15 s after the day "closes" (the due event's time) in this test.
    first = automations_cli(prefect_server, "--webhook-url", url, "--deadline", "00:00:15")
    assert first.returncode == 0, first.stderr
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
    time.sleep(3)
    emit(prefect_server, "sales.day.loaded", "2026-10-02", datetime.now(UTC), valid=10)

    def alerts() -> dict[str, dict[str, Any]] | None:
        by_alert = {call["alert"]: call for call in receiver.calls}
        return by_alert if len(by_alert) == 3 else None

    by_alert = wait_for(alerts, 90, "three webhook calls", interval=1)
    assert by_alert["not-loaded"]["resource"] == "sales.day.2026-10-01"
    assert by_alert["not-loaded"]["detail"] == "not loaded by 00:00:15 UTC"
    assert by_alert["quality-degraded"]["resource"] == "sales.day.2026-10-03"
    assert by_alert["quality-degraded"]["detail"] == {"reject_rate": 0.4}
    assert by_alert["run-failed"]["resource"] == "sales.day.2026-10-04"
    assert by_alert["run-failed"]["detail"] == {"reason": "API answered 403"}
    # The late day that loaded before its deadline never fires, well past that deadline.
    time.sleep(max(0.0, (now + timedelta(seconds=25) - datetime.now(UTC)).total_seconds()))
    assert not [c for c in receiver.calls if c["resource"] == "sales.day.2026-10-02"]
    assert len(receiver.calls) == 3, receiver.calls
