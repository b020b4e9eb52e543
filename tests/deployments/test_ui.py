"""The Prefect UI in a real browser: start a run of the served deployment, see it complete.

Headless Debian Chromium (``/usr/bin/chromium``; ``make test`` installs it as root), driven by
Playwright with ``executable_path``: Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sales_etl.dates import scheduled_business_date
from tests.deployments.conftest import Served, flow_run, loaded_rows, wait_for_final_state

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out of this closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"No Chromium at {CHROMIUM}: the UI test needs Debian's chromium "
            "(`apt-get install -y chromium`, which `make test` runs when it is root) or "
            "CHROMIUM_PATH pointing at a Chromium binary."
        )
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="etl-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def run_id_by_name(served: Served, name: str) -> str:
    with served.server.client() as client:
        response = client.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [served.deployment_id]}},
                "flow_runs": {"name": {"any_": [name]}},
            },
        )
    response.raise_for_status()
    [run] = response.json()
    return str(run["id"])


def test_quick_run_from_the_deployment_page_completes(
    served: Served, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    # Generous waits: the UI is slow to render on a busy 2-core machine (expect defaults to 5 s).
    page.set_default_timeout(90_000)
    expect.set_options(timeout=90_000)
    try:
        page.goto(f"{served.server.url}/deployments/deployment/{served.deployment_id}")
        expect(page.get_by_text("hourly").first).to_be_visible()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run", exact=True).click()

        # The UI confirms with a toast naming the new run.
        view_run = page.get_by_role("button", name="View run").first
        expect(view_run).to_be_visible()
        toast = " ".join(view_run.locator("xpath=..").inner_text().split())
        match = re.match(r"^(\S+) scheduled to start now", toast)
        assert match, toast
        run_id = run_id_by_name(served, match.group(1))
        page.goto(f"{served.server.url}/runs/flow-run/{run_id}")
        expect(page.get_by_text(match.group(1)).first).to_be_visible()

        # The run page itself shows the run finishing.
        expect(page.get_by_text("Completed").first).to_be_visible(timeout=180_000)
    except Exception:
        page.screenshot(path=str(tmp_path / "ui-failure.png"), full_page=True)
        raise
    finally:
        page.close()

    run = wait_for_final_state(served.server, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["deployment_id"] == served.deployment_id
    assert run["parameters"] == {"run_date": None, "refresh": False}
    assert "auto-scheduled" not in run["tags"]
    # A quick run has no run_date: its day comes from its scheduled start, like a scheduled run.
    started = datetime.fromisoformat(flow_run(served.server, run_id)["expected_start_time"])
    day = scheduled_business_date(started.astimezone(UTC))
    [(loaded_day, count)] = loaded_rows(served.warehouse_url, run_id)
    assert loaded_day == day
    assert count > 0
