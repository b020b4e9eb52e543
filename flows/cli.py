"""The command lines of the two flows, run in this process on an ephemeral or configured Prefect.

    python -m flows.daily_sales --date 2026-11-23 [--warehouse-block NAME ...]
    python -m flows.backfill --start 2026-11-01 --end 2026-11-07 [--mode failed --dry-run ...]

Each parses its options, loads the blocks named by ``--*-block NAME`` (a missing one is a
one-line error saying how to create it), calls its flow with them (SIGTERM handled by
:func:`flows.termination.graceful_termination`) and turns the final state into output and an
exit code: 0, or 1 with ``<flow> failed: <reason>`` on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, cast

from prefect.states import State

from flows.backfill import FLOW_NAME as BACKFILL_FLOW_NAME
from flows.backfill import daily_sales_backfill
from flows.config import BLOCK_PARAMETERS, load_block
from flows.daily_sales import FLOW_NAME, daily_sales
from flows.termination import stoppable_run
from sales_etl.dates import date_argument, default_business_date
from sales_etl.errors import ConfigError
from sales_etl.ledger import BACKFILL_MODES
from sales_etl.report import RunSummary

BACKFILL_BLOCK_PARAMETERS = ("warehouse_block",)


def build_parser() -> argparse.ArgumentParser:
    """``python -m flows.daily_sales``: one day."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.daily_sales",
        description=(
            "Run the Daily Sales ETL for one day: sales API -> raw Parquet in the lake -> "
            "validated frame -> idempotent load into the warehouse. Configuration comes from "
            "the environment (SALES_API_URL, SALES_API_KEY, DATA_LAKE_URL, WAREHOUSE_URL, "
            "WAREHOUSE_SCHEMA); unset, it runs on the embedded demo API, ./.data/lake and an "
            "embedded PostgreSQL server in ./.data/postgres."
        ),
    )
    parser.add_argument(
        "--date",
        type=date_argument,
        default=None,
        help="business day to process, YYYY-MM-DD (UTC); default: yesterday",
    )
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="fetch the day from the API again even if a cached extract exists",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="extract the whole day even when the warehouse has a high-water mark for it",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="load the snapshot again even if the load ledger says it is already loaded",
    )
    _add_block_options(parser, BLOCK_PARAMETERS)
    return parser


def build_backfill_parser() -> argparse.ArgumentParser:
    """``python -m flows.backfill``: the days of a range that the ledger selects."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.backfill",
        description=(
            "Run the Daily Sales ETL for the missing, failed or all days of a date range (both "
            "ends included), as decided from the load ledger."
        ),
    )
    parser.add_argument("--start", type=date_argument, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date_argument, required=True, help="last day, YYYY-MM-DD")
    parser.add_argument(
        "--mode", choices=BACKFILL_MODES, default="missing", help="which days (default: missing)"
    )
    parser.add_argument(
        "--max-parallel", type=int, default=3, help="days running at once (default 3)"
    )
    parser.add_argument("--dry-run", action="store_true", help="only list the days it would run")
    parser.add_argument(
        "--deployment",
        default=None,
        help='run each day on this deployment ("flow name/deployment name", with idempotency '
        "keys) instead of as a subflow in this process",
    )
    parser.add_argument("--refresh", action="store_true", help="fetch every day from the API again")
    parser.add_argument(
        "--rerun", metavar="TAG", default=None, help="new idempotency keys: run days again"
    )
    _add_block_options(parser, BACKFILL_BLOCK_PARAMETERS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.daily_sales``: prints the verdict line (the whole summary is in the
    run's logs); exit 0 on success, 1 with a one-line reason on failure."""
    args = build_parser().parse_args(argv)
    day = args.date or default_business_date()
    run = partial(
        daily_sales,
        run_date=day,
        refresh=args.refresh,
        reload=args.reload,
        full_extract=args.full,
        return_state=True,
    )
    result = _run_flow(f"{FLOW_NAME} {day}", run, args, BLOCK_PARAMETERS)
    if result is None:
        return 1
    summary = RunSummary(**{k: v for k, v in result.items() if k != "rejected"})
    print(summary.headline())
    return 0


def backfill_main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.backfill``: prints one line per day; exit 1 when any day failed."""
    parser = build_backfill_parser()
    args = parser.parse_args(argv)
    if args.max_parallel < 1:
        parser.error("--max-parallel must be at least 1")
    run = partial(
        daily_sales_backfill,
        start=args.start,
        end=args.end,
        mode=args.mode,
        max_parallel=args.max_parallel,
        dry_run=args.dry_run,
        deployment=args.deployment,
        refresh=args.refresh,
        rerun=args.rerun,
        return_state=True,
    )
    rows = _run_flow(BACKFILL_FLOW_NAME, run, args, BACKFILL_BLOCK_PARAMETERS)
    if rows is None:
        return 1
    for row in rows:
        print(f"{row['day']}  {row['status']:<22} {row.get('message', '')}".rstrip())
    print(f"{len(rows)} days {'would run' if args.dry_run else 'completed'}")
    return 0


def _add_block_options(parser: argparse.ArgumentParser, parameters: Iterable[str]) -> None:
    """``--warehouse-block NAME`` etc., one per block parameter of the flow."""
    for parameter in parameters:
        parser.add_argument(
            "--" + parameter.replace("_", "-"),
            metavar="NAME",
            default=None,
            help=f"name of a saved {BLOCK_PARAMETERS[parameter].__name__} to use instead of "
            "the environment settings",
        )


def _named_blocks(args: argparse.Namespace, parameters: Iterable[str]) -> dict[str, Any]:
    """The blocks named by ``--*-block NAME``, loaded, as the flow's block parameters."""
    blocks: dict[str, Any] = {}
    for parameter in parameters:
        name = getattr(args, parameter)
        blocks[parameter] = load_block(BLOCK_PARAMETERS[parameter], name) if name else None
    return blocks


def _run_flow(
    label: str, run: Callable[..., Any], args: argparse.Namespace, parameters: Iterable[str]
) -> Any | None:
    """Load the blocks named on the command line, run the flow with them (``run`` returns its
    final state) and return its result; on failure print ``<label> failed: <reason>`` to
    stderr and return None."""
    # Ctrl-C / SIGTERM: SQL cancelled, workers stopped, one line, exit 130 / 143; Prefect's
    # temporary API server shielded from Ctrl-C and tied to this process (flows.termination).
    with stoppable_run(label):
        try:
            blocks = _named_blocks(args, parameters)
        except ConfigError as exc:  # a named block that does not exist: no run is started
            print(f"{label} failed: {exc}", file=sys.stderr)
            return None
        state = cast(State[Any], run(**blocks))
    if not state.is_completed():
        reason = (state.message or state.name or "failed").strip().splitlines()[0]
        print(f"{label} failed: {reason}", file=sys.stderr)
        return None
    return state.result()
