"""Register the flow as deployment "hourly" on a Prefect server and serve it from this process.

With ``prefect server start`` running (and ``PREFECT_API_URL`` pointing at it)::

    make serve                      # = python -m deployments.serve
    python -m deployments.serve --blocks prod

It also serves ``Daily Sales Backfill/backfill`` (no schedule; its run form backfills a range,
see ``flows/backfill.py``). The process creates (or updates) the deployment
``Daily Sales ETL/hourly``: an hourly schedule
on the full hour UTC, tag ``etl``, a deployment concurrency limit of 1 and the default
parameters, then polls for its runs (scheduled, UI-triggered, backfill) and executes each one in
a subprocess with this process's environment (WAREHOUSE_URL, DATA_LAKE_URL, SALES_API_URL, ...).
Running it again updates the same deployment in place; Ctrl-C pauses the schedule.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from deployments.common import (
    FLOW_NAME,
    add_common_arguments,
    deployment_options,
    enter_project_root,
)
from flows.backfill import daily_sales_backfill
from flows.daily_sales import daily_sales

DEFAULT_NAME = "hourly"
BACKFILL_NAME = "backfill"


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
    # to_deployment is sync here (no running event loop); the cast narrows its dual type.
    deployment = cast(
        RunnerDeployment, daily_sales.to_deployment(args.name, **deployment_options(args.blocks))
    )
    serve(deployment, backfill_deployment(f"{FLOW_NAME}/{args.name}"), limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
