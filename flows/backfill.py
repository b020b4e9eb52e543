"""The Daily Sales Backfill: one run of the daily flow per day of a range, chosen from the ledger.

One flow, also served as the deployment ``Daily Sales Backfill/backfill`` so it can be started
from the UI's run form. ``mode`` decides the days from the load ledger: ``missing`` (no load
attempt), ``failed`` (the newest attempt failed) or ``all``. Each day is an ordinary,
idempotent run of ``Daily Sales ETL``: a subflow in this process, or (``deployment``) a flow
run of that deployment, e.g. on a Kubernetes pool, with an idempotency key. A thin CLI
(``flows/cli.py``)::

    python -m flows.backfill --start 2026-11-01 --end 2026-11-07                 # missing days
    python -m flows.backfill --start 2026-11-01 --end 2026-11-07 --mode failed --dry-run
    python -m flows.backfill --start 2026-01-01 --end 2026-06-30 --mode all --max-parallel 4 \\
        --deployment "Daily Sales ETL/hourly"
"""

from __future__ import annotations

# The documented command runs the CLI first thing: its options are checked before Prefect and
# the flow's modules are imported (flows/cli.py imports this module again, by name, to run it).
if __name__ == "__main__":
    from flows.cli import backfill_main

    raise SystemExit(backfill_main())

import time
from datetime import date
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from blocks import WarehouseBlock
from flows.config import block_reference, resolve_configs, warehouse_endpoint
from flows.daily_sales import daily_sales
from sales_etl.ledger import BACKFILL_MODES, DayStatus, day_statuses, days_to_backfill
from sales_etl.report import RunSummary
from sales_etl.settings import WarehouseConfig, load_settings
from sales_etl.warehouse import tables_for, warehouse_engine

FLOW_NAME = "Daily Sales Backfill"
Mode = Literal["missing", "failed", "all"]
# Unbounded threads: the flow itself keeps at most max_parallel days in flight.
_THREADS = cast(TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner())


class BackfillError(RuntimeError):
    """One or more days of a backfill did not complete."""


def idempotency_key(deployment: str, day: date, basis: str | None, rerun: str | None) -> str:
    """The server-side key of a day's run: the same backfill started again finds the runs it
    already created instead of starting new ones. ``basis`` is the run id of the day's newest
    ledger row (None: no row yet), so a day that failed again gets a fresh key; ``rerun``
    forces new keys on purpose."""
    key = f"backfill:{deployment}:{day.isoformat()}:{basis or 'none'}"
    return f"{key}:{rerun}" if rerun else key


def summary_row(day: date, state: State[Any], seconds: float) -> dict[str, Any]:
    """One line of the backfill table from a child run's final state."""
    row: dict[str, Any] = {"day": day.isoformat(), "state": state.name, "status": "failed"}
    summary: Any = None
    if state.is_completed():
        row["status"] = "completed"
        try:
            summary = state.result()
        except Exception as exc:  # a deployment run whose result is not persisted here
            row["message"] = f"result not readable here: {type(exc).__name__}"
    if isinstance(summary, dict):
        typed = RunSummary.from_dict(summary)
        row.update(status=typed.status, **typed.brief(), message=typed.message)
    elif not state.is_completed():
        lines = (state.message or "").strip().splitlines()
        row["message"] = lines[0][:200] if lines else ""
    row["seconds"] = round(seconds, 1)
    return row


@task(
    name="run-day",
    task_run_name="run-day-{day}",
    description="Run the Daily Sales ETL for one day, as a subflow or on a deployment.",
    cache_policy=NO_CACHE,
)
def run_day(
    day: date,
    deployment: str | None,
    refresh: bool,
    key: str,
    warehouse_block: WarehouseBlock | None = None,
) -> dict[str, Any]:
    """Run ``day`` and return its summary row; a failed day is reported, not raised, here."""
    started = time.perf_counter()
    if deployment is None:
        state = cast(
            State[Any],
            daily_sales(
                run_date=day,
                refresh=refresh,
                # a saved block goes to the day's run as a reference, as the UI passes it
                warehouse_block=block_reference(warehouse_block),
                return_state=True,
            ),
        )
    else:
        flow_run = cast(
            FlowRun,
            run_deployment(
                name=deployment,
                parameters={"run_date": day.isoformat(), "refresh": refresh},
                idempotency_key=key,
                flow_run_name=f"backfill-{day.isoformat()}",
                tags=["backfill"],
                timeout=None,
                as_subflow=True,
            ),
        )
        assert flow_run.state is not None
        state = flow_run.state
    row = summary_row(day, state, time.perf_counter() - started)
    row["key"] = key if deployment else ""
    return row


def read_ledger(warehouse: WarehouseConfig, start: date, end: date) -> list[DayStatus]:
    with warehouse_engine(warehouse) as engine:
        return day_statuses(engine, tables_for(warehouse), start, end)


@flow(
    name=FLOW_NAME,
    description="Run the Daily Sales ETL for the missing, failed or all days of a date range.",
    task_runner=_THREADS,
)
def daily_sales_backfill(
    start: date,
    end: date,
    mode: Mode = "missing",
    max_parallel: int = 3,
    dry_run: bool = False,
    deployment: str | None = None,
    refresh: bool = False,
    rerun: str | None = None,
    warehouse_block: WarehouseBlock | None = None,
) -> list[dict[str, Any]]:
    """Backfill the days of ``start``..``end`` (both included) that ``mode`` selects.

    Args:
        start: first business day.
        end: last business day.
        mode: ``missing`` (no load attempt in the ledger), ``failed`` (newest attempt failed)
            or ``all``.
        max_parallel: how many days run at once.
        dry_run: only list the days that would run (the table artifact says which).
        deployment: ``"flow name/deployment name"`` to run each day on a deployment (with an
            idempotency key); empty: each day runs as a subflow in this process.
        refresh: fetch every day from the API again instead of reusing cached extracts.
        rerun: a tag that makes new idempotency keys, to run days again on purpose.
        warehouse_block: a saved Sales Warehouse block: the warehouse whose ledger decides
            the days (and, in process, the one loaded); None: the environment settings.

    Returns:
        One row per selected day (also the ``daily-sales-backfill`` table artifact). The run
        fails, after publishing the table, when any day failed.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    if mode not in BACKFILL_MODES:
        raise ValueError(f"mode must be one of {', '.join(BACKFILL_MODES)}, not {mode!r}")
    _, _, warehouse_config = resolve_configs(load_settings(), warehouse_block=warehouse_block)
    # The embedded warehouse (WAREHOUSE_URL unset) is started once for the whole backfill; the
    # days run in process attach to the same server.
    with warehouse_endpoint(warehouse_config) as (warehouse, _):
        return _backfill(
            warehouse, start, end, mode, max_parallel, dry_run, deployment, refresh, rerun,
            warehouse_block,
        )  # fmt: skip


def _backfill(
    warehouse: WarehouseConfig,
    start: date,
    end: date,
    mode: Mode,
    max_parallel: int,
    dry_run: bool,
    deployment: str | None,
    refresh: bool,
    rerun: str | None,
    warehouse_block: WarehouseBlock | None,
) -> list[dict[str, Any]]:
    """The backfill's steps once its warehouse is reachable: ledger, selection, runs, table."""
    logger = get_run_logger()
    statuses = {s.day: s for s in read_ledger(warehouse, start, end)}
    days = days_to_backfill(list(statuses.values()), mode)
    target = deployment or "in process"
    logger.info(
        "Backfill %s..%s, mode %s: %d of %d days to run (%s), %d at a time",
        start, end, mode, len(days), len(statuses), target, max_parallel,
    )  # fmt: skip
    keys = {
        day: idempotency_key(deployment or "", day, statuses[day].last_run_id, rerun)
        for day in days
    }
    if dry_run:
        rows = [
            {"day": d.isoformat(), "status": "would run", "ledger": statuses[d].status,
             "key": keys[d] if deployment else ""}
            for d in days
        ]  # fmt: skip
        _publish(rows, f"DRY RUN {start}..{end} ({mode}, {target}): {len(days)} days would run")
        return rows
    rows = _run_days(days, keys, deployment, refresh, warehouse_block, max_parallel)
    failed = [row["day"] for row in rows if row["status"] == "failed"]
    _publish(
        rows,
        f"Backfill {start}..{end} ({mode}, {target}): {len(days) - len(failed)} of "
        f"{len(days)} days completed",
    )
    if failed:
        raise BackfillError(f"{len(failed)} of {len(days)} days failed: {', '.join(failed)}")
    return rows


def _run_days(
    days: list[date],
    keys: dict[date, str],
    deployment: str | None,
    refresh: bool,
    warehouse_block: WarehouseBlock | None,
    max_parallel: int,
) -> list[dict[str, Any]]:
    """A sliding window of at most ``max_parallel`` days; a progress artifact follows it."""
    progress = cast(
        UUID,
        create_progress_artifact(
            progress=0.0, description=f"Daily Sales Backfill: 0 of {len(days)} days done"
        ),
    )
    pending = list(days)
    in_flight: list[PrefectFuture[dict[str, Any]]] = []
    finished: list[PrefectFuture[dict[str, Any]]] = []
    while pending or in_flight:
        while pending and len(in_flight) < max_parallel:
            day = pending.pop(0)
            in_flight.append(run_day.submit(day, deployment, refresh, keys[day], warehouse_block))
        done = wait(in_flight, timeout=0.5).done
        if done:
            finished += [f for f in in_flight if f in done]
            in_flight = [f for f in in_flight if f not in done]
            update_progress_artifact(
                progress,
                progress=100.0 * len(finished) / len(days),
                description=f"Daily Sales Backfill: {len(finished)} of {len(days)} days done",
            )
    if not days:
        update_progress_artifact(progress, progress=100.0, description="nothing to backfill")
    return sorted((future.result() for future in finished), key=lambda row: row["day"])


def _publish(rows: list[dict[str, Any]], description: str) -> None:
    table = rows or [{"day": "", "status": "nothing to run"}]
    create_table_artifact(key="daily-sales-backfill", table=table, description=description)
