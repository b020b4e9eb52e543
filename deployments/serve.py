"""Register the flow as deployment "hourly" on a Prefect server and serve it from this process.

With ``prefect server start`` running (and ``PREFECT_API_URL`` pointing at it)::

    make serve                      # = python -m deployments.serve
    python -m deployments.serve --blocks prod

It also serves ``Daily Sales Backfill/backfill`` (no schedule; its run form backfills a range,
see ``flows/backfill.py``) and ``Lake Housekeeping/housekeeping`` (daily at 03:30 UTC; see
``flows/housekeeping.py``). The process creates (or updates) the deployment
``Daily Sales ETL/hourly``: an hourly schedule
on the full hour UTC, tag ``etl``, a deployment concurrency limit of 1 and the default
parameters, then polls for its runs (scheduled, UI-triggered, backfill) and executes each one in
a subprocess with this process's environment (WAREHOUSE_URL, DATA_LAKE_URL, SALES_API_URL, ...).
Running it again updates the same deployment in place; Ctrl-C or SIGTERM pauses the schedule
and stops: within :data:`STOP_SECONDS` whatever the state of the Prefect server (a server that
went away would otherwise keep the pausing retrying for about a minute), exit 130 or 143.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, cast

from prefect.deployments.runner import RunnerDeployment
from prefect.logging import get_logger
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from deployments.common import (
    FLOW_NAME,
    add_common_arguments,
    deployment_options,
    enter_project_root,
    housekeeping_schedule,
)
from flows.backfill import daily_sales_backfill
from flows.daily_sales import daily_sales
from flows.housekeeping import lake_housekeeping
from sales_etl.memory import prefer_returning_allocator

DEFAULT_NAME = "hourly"
BACKFILL_NAME = "backfill"
HOUSEKEEPING_NAME = "housekeeping"
# After Ctrl-C or SIGTERM: how long the served runs' cancellation and the pausing of the
# schedules may take before the process exits anyway.
STOP_SECONDS = 10.0


def exit_after(seconds: float, code: int) -> None:
    """End the process with ``code`` in ``seconds`` unless it has ended by then (a daemon timer:
    a clean stop before it fires ends the process as usual)."""
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


class BoundedStopRunner(Runner):
    """Prefect's runner (what ``prefect.serve`` builds) whose stop on SIGTERM is bounded."""

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        exit_after(STOP_SECONDS, 128 + signal.SIGTERM)
        super().handle_sigterm(*args, **kwargs)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: bounded as SIGTERM is, then Python's KeyboardInterrupt."""
    exit_after(STOP_SECONDS, 128 + signal.SIGINT)
    signal.default_int_handler(signum, frame)


def serve_bounded(*deployments: RunnerDeployment, limit: int | None = None) -> None:
    """``prefect.serve(*deployments, limit=limit)`` with a bounded stop (:data:`STOP_SECONDS`)."""
    runner = BoundedStopRunner(pause_on_shutdown=True, limit=limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    signal.signal(signal.SIGINT, _interrupted)
    names = ", ".join(f"'{d.flow_name}/{d.name}'" for d in deployments)
    ui = PREFECT_UI_URL.value() or "(no UI: PREFECT_API_URL is not a server's)"
    get_logger("deployments.serve").info(
        "Serving %s on %s; the UI: %s; Ctrl-C stops", names, PREFECT_API_URL.value(), ui
    )
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        get_logger("deployments.serve").info("Interrupted: stopped")


def backfill_deployment(target: str) -> RunnerDeployment:
    """``Daily Sales Backfill/backfill``: no schedule, started from the UI's run form; by
    default each day runs on the served deployment ``target`` (idempotency keys)."""
    return cast(
        RunnerDeployment,
        daily_sales_backfill.to_deployment(
            BACKFILL_NAME,
            parameters={"deployment": target},
            tags=["etl", "backfill"],
            description=(
                "Backfill a date range: the missing, failed or all days of the load ledger. "
                f"Deployment empty: the days run inside this run; default: on {target!r}."
            ),
        ),
    )


def housekeeping_deployment() -> RunnerDeployment:
    """``Lake Housekeeping/housekeeping``: the whole lake, daily; its run form offers
    ``keep`` and ``dry_run``."""
    return cast(
        RunnerDeployment,
        lake_housekeeping.to_deployment(
            HOUSEKEEPING_NAME,
            schedules=[housekeeping_schedule()],
            concurrency_limit=1,
            tags=["etl", "housekeeping"],
            description=(
                "Compact each day's lake snapshots and remove those older than the newest "
                "LAKE_KEEP_SNAPSHOTS per day (never one a replay, the ledger or a running load "
                "needs). dry_run lists what it would remove."
            ),
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.serve",
        description=(
            "Create or update the hourly deployment of the Daily Sales ETL on the Prefect API "
            "(PREFECT_API_URL) and serve it from this process until interrupted."
        ),
    )
    add_common_arguments(parser, DEFAULT_NAME)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="most runs this process executes at once (default: no process limit; the "
        "deployment's own concurrency limit of 1 applies anyway)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enter_project_root()
    prefer_returning_allocator()  # for the flow runs this process starts (sales_etl/memory.py)
    # to_deployment is sync here (no running event loop); the cast narrows its dual type.
    deployment = cast(
        RunnerDeployment, daily_sales.to_deployment(args.name, **deployment_options(args.blocks))
    )
    serve_bounded(
        deployment,
        backfill_deployment(f"{FLOW_NAME}/{args.name}"),
        housekeeping_deployment(),
        limit=args.limit,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
