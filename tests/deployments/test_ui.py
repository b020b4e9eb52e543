"""The Prefect UI in a real browser: start runs of the served deployment, see them complete.

A quick run with the deployment's defaults, and a custom run whose three blocks are picked in
the run form's block pickers.

Headless Debian Chromium (``/usr/bin/chromium``; ``make test`` installs it as root), driven by
Playwright with ``executable_path``: Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from devharness.demo_api import DemoData, Faults, serve_demo_api
from sales_etl.dates import scheduled_business_date
from tests.utils import (
    API_KEY,
    Served,
    flow_run,
    loaded_rows,
    summary_metrics,
    wait_for_final_state,
)

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# The blocks' sales API: 230 sales, every 23rd one malformed: 220 rows, unlike the 4950 of the
# embedded demo API that the served environment would use.
BLOCK_DATA = DemoData(rows_per_day=230, malformed_every=23)
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


@contextmanager
def ui_page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A new page with generous waits (the UI is slow to render on a busy 2-core machine;
    ``expect`` defaults to 5 s); a failure leaves ``ui-failure.png`` in ``tmp_path``."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(90_000)
    expect.set_options(timeout=90_000)
    try:
        yield page
    except Exception:
        page.screenshot(path=str(tmp_path / "ui-failure.png"), full_page=True)
        raise
    finally:
        page.close()


def open_deployment(page: Any, served: Served, run: str) -> None:
    """The deployment's page, then Run -> ``run`` ("Quick run" or "Custom run")."""
    from playwright.sync_api import expect

    page.goto(f"{served.server.url}/deployments/deployment/{served.deployment_id}")
    expect(page.get_by_text("hourly").first).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text(run, exact=True).click()


def started_run(page: Any, served: Served) -> tuple[str, str]:
    """(name, id) of the run the UI just created, from its toast."""
    from playwright.sync_api import expect

    view_run = page.get_by_role("button", name="View run").first
    expect(view_run).to_be_visible()
    toast = " ".join(view_run.locator("xpath=..").inner_text().split())
    match = re.match(r"^(\S+) scheduled to start now", toast)
    assert match, toast
    return match.group(1), run_id_by_name(served, match.group(1))


def pick_block(page: Any, parameter: str, block: Block) -> None:
    """Choose the saved ``block`` in the run form's picker of ``parameter``."""
    from playwright.sync_api import expect

    label = page.get_by_text(f"{parameter} (Optional)", exact=True)
    field = page.locator(".schema-form-property").filter(has=label).last
    # The parameter is "block or None" (None selected): choose the block, and the picker shows.
    field.get_by_role("button", name=type(block).__name__, exact=True).click()
    picker = field.locator(".block-document-input .p-select-button__control")
    # A mouse click opens the picker's pop-over, but in headless Chromium Prefect's combobox
    # closes it again at once (focus goes to its search field and back to the button); the
    # keyboard opens it as for a user tabbing through the form.
    picker.focus()
    picker.press("ArrowDown")
    page.get_by_role("listbox").get_by_role("option", name=block._block_document_name).click()
    expect(picker).to_have_text(str(block._block_document_name))


def test_quick_run_from_the_deployment_page_completes(
    served: Served, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with ui_page(browser, tmp_path) as page:
        open_deployment(page, served, "Quick run")
        # The UI confirms with a toast naming the new run.
        name, run_id = started_run(page, served)
        page.goto(f"{served.server.url}/runs/flow-run/{run_id}")
        expect(page.get_by_text(name).first).to_be_visible()

        # The run page itself shows the run finishing.
        expect(page.get_by_text("Completed").first).to_be_visible(timeout=180_000)

    run = wait_for_final_state(served.server, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["deployment_id"] == served.deployment_id
    assert run["parameters"] == {"run_date": None, "refresh": False}
    assert "auto-scheduled" not in run["tags"]
    # A quick run has no run_date: its day comes from its scheduled start, like a scheduled run.
    started = datetime.fromisoformat(flow_run(served.server, run_id)["expected_start_time"])
    day = scheduled_business_date(started.astimezone(UTC))
    # Its summary names that day, now in the warehouse. (Not "rows with this run's id": another
    # test of this session's served deployment may have loaded the same day first, and a run
    # that finds the day unchanged writes nothing.)
    metrics = summary_metrics(served.server, run_id)
    assert metrics["description"].startswith(f"Daily Sales ETL {day.isoformat()}: ")
    assert metrics["sales of the day in the warehouse"] > 0


def test_custom_run_with_blocks_picked_in_the_form_loads_through_them(
    served: Served, browser: Any, pg_url: str, tmp_path: Path
) -> None:
    """Warehouse, lake and sales API picked in the Custom run form: the run stores the picks as
    block document references, loads them, and only they are used (a fresh database, a new
    lake, a sales API with a key; the served environment names other ones)."""
    prefix = f"ui-{uuid.uuid4().hex[:8]}"
    lake = tmp_path / "block-lake"
    with serve_demo_api(BLOCK_DATA, Faults(), api_key=API_KEY) as api:
        blocks: dict[str, Block] = {
            "warehouse_block": WarehouseBlock(connection_string=SecretStr(pg_url)),
            "data_lake_block": DataLakeBlock(path=str(lake)),
            "sales_api_block": SalesApiBlock(
                base_url=api.url, api_key=SecretStr(API_KEY), page_size=50
            ),
        }
        with temporary_settings({PREFECT_API_URL: served.server.api_url}):
            for parameter, block in blocks.items():
                name = f"{prefix}-{parameter.removesuffix('_block').replace('_', '-')}"
                # _sync: Playwright's sync API runs an event loop in this thread, under which
                # Prefect's save() would return an un-awaited coroutine.
                block.save(name, _sync=True)
        for block in blocks.values():  # saved where the UI lists them
            with served.server.client() as client:
                response = client.get(
                    f"/block_types/slug/{block.get_block_type_slug()}/block_documents"
                )
            response.raise_for_status()
            assert block._block_document_name in [d["name"] for d in response.json()]

        with ui_page(browser, tmp_path) as page:
            open_deployment(page, served, "Custom run")
            for parameter, block in blocks.items():
                pick_block(page, parameter, block)
            page.get_by_role("button", name="Submit", exact=True).click()
            _, run_id = started_run(page, served)
        run = wait_for_final_state(served.server, run_id)

    assert run["state"]["type"] == "COMPLETED", run["state"]
    references = {
        parameter: {"$ref": {"block_document_id": str(block._block_document_id)}}
        for parameter, block in blocks.items()
    }
    assert run["parameters"] == {
        "run_date": None, "refresh": False, "reload": False, "full_extract": False,
        "allow_future": False, **references,
    }  # fmt: skip
    day: date = scheduled_business_date(
        datetime.fromisoformat(run["expected_start_time"]).astimezone(UTC)
    )
    assert loaded_rows(pg_url, run_id) == [(day, 220)]
    assert loaded_rows(served.warehouse_url, run_id) == []
    assert sorted(p.name for p in lake.iterdir()) == ["clean", "raw"]
    assert (lake / "raw" / "sales" / f"date={day.isoformat()}").is_dir()
