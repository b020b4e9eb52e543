"""Register the flow as deployment "hourly" on a Prefect server and serve it from this process.

With ``prefect server start`` running (and ``PREFECT_API_URL`` pointing at it)::

    make serve                      # = python -m deployments.serve
    python -m deployments.serve --blocks prod

The process creates (or updates) the deployment ``Daily Sales ETL/hourly``: an hourly schedule
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

from deployments.common import add_common_arguments, deployment_options, enter_project_root
from flows.daily_sales import daily_sales

DEFAULT_NAME = "hourly"


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
    serve(deployment, limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
