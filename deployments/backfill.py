"""Backfill a date range through a deployment: one flow run per day, a bounded number in flight.

    python -m deployments.backfill --start 2026-11-01 --end 2026-11-07
    python -m deployments.backfill --start 2026-11-01 --end 2026-11-07 --max-in-flight 3 \
        --deployment "Daily Sales ETL/hourly-kubernetes"

Each day becomes ``run_deployment(..., parameters={"run_date": day}, idempotency_key=...)`` with
the key ``backfill:<deployment>:<day>[:<rerun>]``: running the same backfill again returns the
runs that already exist instead of creating new ones, so an interrupted backfill is resumed by
running it again. ``--rerun TAG`` gives new keys, to reload days on purpose (the load itself is
idempotent either way). At most ``--max-in-flight`` runs are submitted and awaited at a time;
the deployment's concurrency limit of 1 still serialises their execution. Exits 1 if any day's
run did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import date, timedelta

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import arun_deployment

from deployments.common import FLOW_NAME
from flows.daily_sales import date_argument

DEFAULT_DEPLOYMENT = f"{FLOW_NAME}/hourly"
MAX_DAYS = 366


def days_between(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"{count} days is more than {MAX_DAYS}; split the backfill")
    return [start + timedelta(days=offset) for offset in range(count)]


def idempotency_key(deployment: str, day: date, rerun: str | None = None) -> str:
    """The key that makes a day's backfill run unique on the server."""
    key = f"backfill:{deployment}:{day.isoformat()}"
    return f"{key}:{rerun}" if rerun else key


async def backfill(
    deployment: str,
    days: Sequence[date],
    *,
    max_in_flight: int = 2,
    refresh: bool = False,
    rerun: str | None = None,
    timeout: float | None = None,
    poll_interval: float = 5,
) -> dict[date, FlowRun]:
    """Run ``deployment`` once per day, at most ``max_in_flight`` at a time; wait for all.

    Returns:
        The final flow run of each day (whatever its state).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    slots = asyncio.Semaphore(max_in_flight)

    async def run_day(day: date) -> tuple[date, FlowRun]:
        async with slots:
            flow_run = await arun_deployment(
                deployment,
                parameters={"run_date": day.isoformat(), "refresh": refresh},
                idempotency_key=idempotency_key(deployment, day, rerun),
                flow_run_name=f"backfill-{day.isoformat()}",
                tags=["backfill"],
                timeout=timeout,
                poll_interval=poll_interval,
                as_subflow=False,
            )
            return day, flow_run

    results = await asyncio.gather(*(run_day(day) for day in days))
    return dict(results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.backfill",
        description=(
            "Run the Daily Sales ETL deployment once per business day in a date range (both "
            "ends included), with an idempotency key per day and a bounded number of runs in "
            "flight. Something must execute the runs: `make serve` or a worker of the pool."
        ),
    )
    parser.add_argument("--start", type=date_argument, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date_argument, required=True, help="last day, YYYY-MM-DD")
    parser.add_argument(
        "--deployment",
        default=DEFAULT_DEPLOYMENT,
        help=f"'flow name/deployment name' (default: {DEFAULT_DEPLOYMENT!r})",
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=2, help="runs submitted at once (default: 2)"
    )
    parser.add_argument("--refresh", action="store_true", help="re-fetch days from the API")
    parser.add_argument(
        "--rerun", metavar="TAG", default=None, help="new idempotency keys: run days again"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for each run (default: until it finishes)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        days = days_between(args.start, args.end)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_in_flight < 1:
        parser.error("--max-in-flight must be at least 1")
    runs = asyncio.run(
        backfill(
            args.deployment,
            days,
            max_in_flight=args.max_in_flight,
            refresh=args.refresh,
            rerun=args.rerun,
            timeout=args.timeout,
        )
    )
    failed = 0
    for day in days:
        flow_run = runs[day]
        state = flow_run.state.name if flow_run.state else "unknown"
        completed = flow_run.state is not None and flow_run.state.is_completed()
        failed += not completed
        print(f"{day.isoformat()}  {state:<24} {flow_run.name}  {flow_run.id}")
    print(f"{len(days) - failed} of {len(days)} days completed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
