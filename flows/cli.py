"""The command lines of the flows, run in this process on an ephemeral or configured Prefect.

    python -m flows.daily_sales --date 2026-11-23 [--warehouse-block NAME ...]
    python -m flows.backfill --start 2026-11-01 --end 2026-11-07 [--mode failed --dry-run ...]
    python -m flows.housekeeping [--dry-run] [--keep N]

Each parses and checks its options before importing Prefect (a bad date is refused at once, exit
2), loads the blocks named by ``--*-block NAME`` (a missing one is a one-line error saying how to
create it) and passes them to the flow as references to the saved blocks, as the UI does, calls
its flow (Ctrl-C and SIGTERM handled by :func:`flows.termination.stoppable_run`) and turns the final
state into output and an exit code (docs/errors.md):

- 0: done; the verdict line on stdout;
- 1: the run failed, or the configuration is wrong: one line ``<flow> failed: <reason>`` on
  stderr (for a configuration error, the reason starts with the setting to fix, and its
  traceback goes to the run's log in the Prefect API, not to the terminal);
- 2: a bad option (argparse), dates included, refused before Prefect is imported.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from sales_etl.dates import MAX_RANGE_DAYS, business_date_problem, date_argument
from sales_etl.errors import ConfigError, is_permanent
from sales_etl.memory import prefer_returning_allocator

if TYPE_CHECKING:
    from prefect.states import State

# The flows' block parameters and the block type each one takes (flows.config.BLOCK_PARAMETERS
# holds the classes; named here too so that --help and bad options need no Prefect import).
BLOCK_TYPES = {
    "warehouse_block": "Sales Warehouse",
    "data_lake_block": "Sales Data Lake",
    "sales_api_block": "Sales API",
}
BACKFILL_BLOCK_PARAMETERS = ("warehouse_block",)
HOUSEKEEPING_BLOCK_PARAMETERS = ("warehouse_block", "data_lake_block")
# sales_etl.ledger.BACKFILL_MODES (a test keeps them equal): that module imports pandas.
BACKFILL_MODES = ("missing", "failed", "all")
EXIT_FAILED = 1  # argparse exits 2 for a bad option


def build_parser() -> argparse.ArgumentParser:
    """``python -m flows.daily_sales``: one day."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.daily_sales",
        description=(
            "Run the Daily Sales ETL for one day: sales API -> raw Parquet in the lake -> "
            "validated frame -> idempotent load into the warehouse. Configuration comes from "
            "the environment (SALES_API_URL, SALES_API_KEY, DATA_LAKE_URL, WAREHOUSE_URL, "
            "WAREHOUSE_SCHEMA); unset, it runs on the embedded demo API, ./.data/lake and an "
            "embedded PostgreSQL server in ./.data/postgres. Exit codes: 0 done, 1 the run "
            "failed or a setting is wrong (the message names it), 2 a bad option."
        ),
    )
    parser.add_argument(
        "--date",
        type=date_argument,
        default=None,
        help="business day to process, YYYY-MM-DD (UTC); default: yesterday",
    )
    parser.add_argument(
        "--allow-future",
        action="store_true",
        help="load a day after today (UTC); refused otherwise: the source has no complete "
        "data for it yet",
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
    _add_block_options(parser, BLOCK_TYPES)
    return parser


def build_backfill_parser() -> argparse.ArgumentParser:
    """``python -m flows.backfill``: the days of a range that the ledger selects."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.backfill",
        description=(
            "Run the Daily Sales ETL for the missing, failed or all days of a date range (both "
            "ends included, none after today), as decided from the load ledger. Exit codes: 0 "
            "done, 1 a day failed or a setting is wrong, 2 a bad option."
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


def build_housekeeping_parser() -> argparse.ArgumentParser:
    """``python -m flows.housekeeping``: compact and prune every day of the lake."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.housekeeping",
        description=(
            "Compact each day's raw and clean snapshots and remove those older than the newest "
            "LAKE_KEEP_SNAPSHOTS per day (never one that replay, the ledger's newest load or a "
            "running load needs). Exit codes: 0 done, 1 failed, 2 a bad option."
        ),
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=None,
        help="raw snapshots kept per day (default: LAKE_KEEP_SNAPSHOTS, or 3)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: list what would be removed and the bytes it would free",
    )
    _add_block_options(parser, HOUSEKEEPING_BLOCK_PARAMETERS)
    return parser


def parse_args(argv: Sequence[str] | None, today: date | None = None) -> argparse.Namespace:
    """The daily command's options, checked (a day outside the sane window or in the future
    without ``--allow-future`` is a usage error, exit 2, before any import of Prefect)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.date is not None:
        problem = business_date_problem(args.date, today or _today(), args.allow_future)
        if problem is not None:
            future = args.date > (today or _today()) and "in the future" in problem
            parser.error(
                f"--date {problem}" + ("; --allow-future loads it anyway" if future else "")
            )
    return args


def parse_backfill_args(
    argv: Sequence[str] | None, today: date | None = None
) -> argparse.Namespace:
    """The backfill's options, checked: both ends in the sane window and not in the future,
    ``--start`` not after ``--end``, at most ten years, ``--max-parallel`` >= 1."""
    parser = build_backfill_parser()
    args = parser.parse_args(argv)
    for option, day in (("--start", args.start), ("--end", args.end)):
        problem = business_date_problem(day, today or _today())
        if problem is not None:
            parser.error(f"{option} {problem}")
    if args.start > args.end:
        parser.error(f"--start {args.start} is after --end {args.end}")
    if (args.end - args.start).days + 1 > MAX_RANGE_DAYS:
        parser.error(f"more than {MAX_RANGE_DAYS} days: split the range")
    if args.max_parallel < 1:
        parser.error("--max-parallel must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.daily_sales``: prints the verdict line (the whole summary is in the
    run's logs); exit 0 on success, 1 with a one-line reason on failure, 2 on a bad option."""
    args = parse_args(argv)
    prefer_returning_allocator()  # before pyarrow is imported (sales_etl/memory.py)
    from flows.daily_sales import FLOW_NAME, daily_sales  # Prefect: after the options are good
    from sales_etl.dates import run_business_date
    from sales_etl.report import RunSummary

    day = run_business_date(args.date, scheduled=None)  # a CLI run is never scheduled
    run = partial(
        daily_sales,
        run_date=day,
        refresh=args.refresh,
        reload=args.reload,
        full_extract=args.full,
        allow_future=args.allow_future,
        return_state=True,
    )
    code, result = _run_flow(f"{FLOW_NAME} {day}", run, args, BLOCK_TYPES)
    if code:
        return code
    summary = RunSummary.from_dict(result)
    print(summary.headline())
    return 0


def backfill_main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.backfill``: prints one line per day; exit 1 when any day failed."""
    args = parse_backfill_args(argv)
    prefer_returning_allocator()  # before pyarrow is imported (sales_etl/memory.py)
    from flows.backfill import FLOW_NAME as BACKFILL_FLOW_NAME
    from flows.backfill import daily_sales_backfill

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
    code, rows = _run_flow(BACKFILL_FLOW_NAME, run, args, BACKFILL_BLOCK_PARAMETERS)
    if code:
        return code
    for row in rows:
        print(f"{row['day']}  {row['status']:<22} {row.get('message', '')}".rstrip())
    print(f"{len(rows)} days {'would run' if args.dry_run else 'completed'}")
    return 0


def housekeeping_main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.housekeeping``: one line per day that had something to remove (all of
    them with ``--dry-run``), then the total; exit 1 when the run failed."""
    parser = build_housekeeping_parser()
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep < 1:
        parser.error("--keep must be at least 1")
    from flows.housekeeping import FLOW_NAME as HOUSEKEEPING_FLOW_NAME
    from flows.housekeeping import lake_housekeeping

    run = partial(lake_housekeeping, keep=args.keep, dry_run=args.dry_run, return_state=True)
    code, rows = _run_flow(HOUSEKEEPING_FLOW_NAME, run, args, HOUSEKEEPING_BLOCK_PARAMETERS)
    if code:
        return code
    verb = "would remove" if args.dry_run else "removed"
    for row in rows:
        for folder in row["removed folders"]:
            print(f"{row['day']}  {verb} {folder}")
    folders = sum(row["removed"] for row in rows)
    freed = sum(row["bytes freed"] for row in rows)
    print(f"{len(rows)} days: {verb} {folders} snapshot folders, {freed} bytes")
    return 0


def _today() -> date:
    return datetime.now(UTC).date()


def _add_block_options(parser: argparse.ArgumentParser, parameters: Iterable[str]) -> None:
    """``--warehouse-block NAME`` etc., one per block parameter of the flow."""
    for parameter in parameters:
        parser.add_argument(
            "--" + parameter.replace("_", "-"),
            metavar="NAME",
            default=None,
            help=f"name of a saved {BLOCK_TYPES[parameter]} block to use instead of the "
            "environment settings",
        )


def _block_references(args: argparse.Namespace, parameters: Iterable[str]) -> dict[str, Any]:
    """The blocks named by ``--*-block NAME``, as the flow's block parameters: each is loaded
    (a missing one raises :class:`ConfigError`) and passed as a reference to the saved block
    document, so the flow run's parameters hold the reference, never the block's values."""
    from flows.config import BLOCK_PARAMETERS, block_reference, load_block

    blocks: dict[str, Any] = {}
    for parameter in parameters:
        name = getattr(args, parameter)
        block = load_block(BLOCK_PARAMETERS[parameter], name) if name else None
        blocks[parameter] = block_reference(block)
    return blocks


def _run_flow(
    label: str, run: Callable[..., Any], args: argparse.Namespace, parameters: Iterable[str]
) -> tuple[int, Any]:
    """Load the blocks named on the command line, run the flow with them (``run`` returns its
    final state); returns (0, its result), or (exit code, None) after printing
    ``<label> failed: <reason>`` to stderr."""
    from flows.termination import ApiStartError, line_tracked_stderr, status_line, stoppable_run

    # Ctrl-C / SIGTERM: SQL cancelled, workers stopped, one line, exit 130 / 143; Prefect's
    # temporary API server shielded from Ctrl-C and tied to this process (flows.termination).
    with line_tracked_stderr():
        try:
            with stoppable_run(label):
                try:
                    blocks = _block_references(args, parameters)
                except ConfigError as exc:  # a named block that does not exist: no run started
                    status_line(f"{label} failed: {exc}")
                    return EXIT_FAILED, None
                with _no_permanent_tracebacks_on_the_terminal():
                    state = cast("State[Any]", run(**blocks))
        except ApiStartError as exc:  # no run was started: the server's own error is above
            status_line(f"{label} failed: {exc}")
            return EXIT_FAILED, None
        if state.is_completed():
            return 0, state.result()
        status_line(f"{label} failed: {_failure_reason(state)}")
    return EXIT_FAILED, None


def _failure_reason(state: State[Any]) -> str:
    """The first line of why a run failed: a permanent error's type and message, else the
    state's message."""
    error = _exception_of(state)
    if error is not None and is_permanent(error):
        reason = f"{type(error).__name__}: {error}"
    else:
        reason = (state.message or state.name or "failed").strip()
    return reason.splitlines()[0]


def _exception_of(state: State[Any]) -> BaseException | None:
    """The exception a failed run raised, when this process can read it back."""
    try:
        found = state.result(raise_on_failure=False)
    except Exception:  # a result stored elsewhere: the state message says enough
        return None
    return found if isinstance(found, BaseException) else None


class _DropPermanentTracebacks(logging.Formatter):
    """The console formatter, minus the traceback of a permanent error (its one line says what
    to do; the traceback stays in the run's log in the Prefect API)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_permanent(exc):
            return self.inner.format(record)
        bare = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(bare)


@contextmanager
def _no_permanent_tracebacks_on_the_terminal() -> Iterator[None]:
    """While the flow runs, the terminal handlers of the root logger (Prefect's console
    handler) print a permanent error without its traceback."""
    saved = [
        (handler, handler.formatter)
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    for handler, formatter in saved:
        handler.setFormatter(_DropPermanentTracebacks(formatter))
    try:
        yield
    finally:
        for handler, formatter in saved:
            handler.setFormatter(formatter)
