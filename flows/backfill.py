"""The Daily Sales Backfill flow: one child run of the daily flow per day, bounded in parallel.

Every day is an ordinary, idempotent run of ``Daily Sales ETL`` (cached extract, reused clean
snapshot, upsert that skips unchanged rows), so a backfill can be stopped and started again over
the same range. Run it locally (children are subflows in threads of this process)::

    python -m flows.backfill --start 2026-11-01 --end 2026-11-07 --max-parallel 3

or fan out to a deployment (each day becomes its own flow run on that deployment's work pool,
e.g. one Kubernetes pod per day)::

    python -m flows.backfill --start 2026-01-01 --end 2026-06-30 --max-parallel 20 \\
        --deployment "Daily Sales ETL/daily-sales-k8s"
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, cast

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.daily_sales import daily_sales, date_argument

FLOW_NAME = "Daily Sales Backfill"
# Unbounded threads: the flow itself keeps at most max_parallel days in flight.
_THREADS = cast(TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner())
MAX_DAYS = 3660
SUMMARY_COLUMNS = (
    "records_extracted",
    "clean",
    "rejected",
    "inserted",
    "updated",
    "unchanged",
    "rejected_rows",
)


class BackfillError(RuntimeError):
    """One or more days of a backfill did not complete."""


def days_between(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"backfill end {end} is before its start {start}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"backfill of {count} days exceeds the limit of {MAX_DAYS}")
    return [start + timedelta(days=i) for i in range(count)]


def summary_row(day: date, state: State[Any], seconds: float) -> dict[str, Any]:
    """One line of the backfill table from a child run's final state."""
    row: dict[str, Any] = {"day": day.isoformat(), "state": state.name, "status": "failed"}
    summary: Any = None
    if state.is_completed():
        try:
            summary = state.result()
        except Exception as exc:  # e.g. a deployment run whose result is not persisted
            row["status"] = "completed"
            row["message"] = f"result not readable here: {type(exc).__name__}"
    if isinstance(summary, dict):
        row["status"] = summary.get("status", "completed")
        row.update({name: summary.get(name, 0) for name in SUMMARY_COLUMNS})
        row["message"] = summary.get("message", "")
    elif not state.is_completed():
        lines = (state.message or "").strip().splitlines()
        row["message"] = lines[0][:200] if lines else ""
    row["seconds"] = round(seconds, 1)
    return row


@task(
    name="run-day",
    task_run_name="run-day-{day}",
    description="Run the Daily Sales ETL for one day, as a subflow or on a deployment.",
    tags=["etl", "backfill"],
    cache_policy=NO_CACHE,
)
def run_day(day: date, deployment: str | None = None, refresh: bool = False) -> dict[str, Any]:
    """Run ``day`` and return its summary row; a failed day is reported, not raised, here."""
    started = time.perf_counter()
    if deployment is None:
        state = cast(State[Any], daily_sales(run_date=day, refresh=refresh, return_state=True))
    else:
        flow_run = cast(
            FlowRun,
            run_deployment(
                name=deployment,
                parameters={"run_date": day.isoformat(), "refresh": refresh},
                timeout=None,
                as_subflow=True,
            ),
        )
        assert flow_run.state is not None
        state = flow_run.state
    return summary_row(day, state, time.perf_counter() - started)


@flow(
    name=FLOW_NAME,
    description="Run the Daily Sales ETL for every day of a date range, a few days at a time.",
    task_runner=_THREADS,
)
def daily_sales_backfill(
    start: date,
    end: date,
    max_parallel: int = 3,
    deployment: str | None = None,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """Backfill ``start``..``end`` (both included), at most ``max_parallel`` days at a time.

    Args:
        start: first business day.
        end: last business day.
        max_parallel: how many days run at once (threads here, or concurrent deployment runs).
        deployment: ``"flow name/deployment name"`` to run each day on a deployment's work
            pool; empty: each day runs as a subflow in this process.
        refresh: fetch every day from the API again instead of reusing cached extracts.

    Returns:
        One summary row per day (also published as the ``daily-sales-backfill`` table
        artifact). The run fails, after publishing the table, when any day failed.
    """
    logger = get_run_logger()
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    days = days_between(start, end)
    logger.info("Backfilling %d days (%s..%s), %d at a time", len(days), start, end, max_parallel)
    # A sliding window: a new day starts as soon as one finishes, never more than
    # max_parallel in flight (the thread pool itself is unbounded, see _THREADS).
    pending = list(days)
    in_flight: list[PrefectFuture[dict[str, Any]]] = []
    finished: list[PrefectFuture[dict[str, Any]]] = []
    while pending or in_flight:
        while pending and len(in_flight) < max_parallel:
            in_flight.append(run_day.submit(pending.pop(0), deployment, refresh))
        done = wait(in_flight, timeout=0.5).done
        finished += [f for f in in_flight if f in done]
        in_flight = [f for f in in_flight if f not in done]
    rows = sorted((future.result() for future in finished), key=lambda row: row["day"])
    failed = [row["day"] for row in rows if row["status"] == "failed"]
    create_table_artifact(
        key="daily-sales-backfill",
        table=rows,
        description=f"Daily Sales Backfill {start}..{end}: {len(days) - len(failed)} of "
        f"{len(days)} days completed",
    )
    if failed:
        raise BackfillError(f"{len(failed)} of {len(days)} days failed: {', '.join(failed)}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.backfill",
        description="Run the Daily Sales ETL for every day of a date range (both ends included).",
    )
    parser.add_argument("--start", type=date_argument, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date_argument, required=True, help="last day, YYYY-MM-DD")
    parser.add_argument(
        "--max-parallel", type=int, default=3, help="days running at once (default 3)"
    )
    parser.add_argument(
        "--deployment",
        default=None,
        help='run each day on this deployment ("flow name/deployment name") instead of '
        "as a subflow in this process",
    )
    parser.add_argument("--refresh", action="store_true", help="fetch every day from the API again")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: prints the per-day table; exit 1 when any day failed."""
    args = build_parser().parse_args(argv)
    if args.max_parallel < 1:
        print("--max-parallel must be at least 1", file=sys.stderr)
        return 2
    state: State[Any] = daily_sales_backfill(
        start=args.start,
        end=args.end,
        max_parallel=args.max_parallel,
        deployment=args.deployment,
        refresh=args.refresh,
        return_state=True,
    )
    if not state.is_completed():
        reason = (state.message or state.name or "failed").strip().splitlines()[0]
        print(f"Daily Sales Backfill failed: {reason}", file=sys.stderr)
        return 1
    for row in state.result():
        print(
            f"{row['day']}  {row['status']:<22} records={row.get('records_extracted', '-')} "
            f"valid={row.get('clean', '-')} inserted={row.get('inserted', '-')} "
            f"updated={row.get('updated', '-')} {row['seconds']} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
