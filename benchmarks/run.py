"""Benchmark of the Daily Sales ETL: ``make bench`` or ``python -m benchmarks.run [--compare]``.

1. Starts the demo API in its own process on a free loopback port, with the day of ``--rows``
   records rendered into memory first (so the API's Python record generation does not bound
   what is measured), and creates a throwaway PostgreSQL database ``bench_<hex>``.
2. Runs the real ``daily_sales`` flow end to end in a fresh process (ephemeral Prefect, local
   lake), twice: the first run and a rerun of the unchanged day. Prints per-stage wall times,
   rows/s, the pipeline process's peak RSS, the ephemeral server start and the task-run count.
3. Runs the same library functions without Prefect in another process: the orchestration share
   is the difference.
4. With ``--compare``: loads the same clean rows with ``psql \\copy`` (the floor), pandas
   ``to_sql`` (the old guide), dlt's Arrow-CSV path, and runs dlt's ``rest_api`` source with
   ``merge`` on ``sale_id`` end to end against the same API and database. Each peer runs in its
   own process of the same process tree; the ratios are computed from this one run.

The database is dropped and the work folder (``benchmarks/.work/``) removed afterwards unless
``--keep``. ``--markdown FILE`` appends the printed tables to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.stages import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = "2026-11-01"

# The reference figures (seconds, 1M rows) for the "reference" column.
REFERENCE = {
    "psql_copy": 1.3,
    "adbc": 2.2,
    "psycopg2_copy": 5.6,
    "staging_upsert": "~11 / ~15",
    "dlt_arrow": 12.3,
    "dlt_dicts": 82,
    "to_sql": 37,
    "to_sql_multi": "~160",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo_api(rows: int, day: str, page_size: int) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "sales_etl.demo_api",
        "--port",
        str(port),
        "--rows",
        str(rows),
        "--warm-date",
        day,
        "--warm-page-size",
        str(page_size),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "listening on" in line:
                break
        else:
            raise RuntimeError("the demo API exited before listening")
        rendered = time.perf_counter() - started
        log(f"demo API on port {port}: {rows:,} rows rendered in {rendered:.1f} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def database(admin_url: str) -> Iterator[str]:
    name = f"bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield str(sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def run_job(job: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run one job in a fresh process and return its BENCH_RESULT (wall clock added)."""
    log(f"running {job} ...")
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", job, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    results = [
        json.loads(line[len(RESULT_PREFIX) :])
        for line in process.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if process.returncode != 0 or not results:
        tail = "\n".join((process.stderr or process.stdout).strip().splitlines()[-25:])
        raise RuntimeError(f"benchmark job {job} failed (exit {process.returncode}):\n{tail}")
    result = results[-1]
    result["process_s"] = elapsed
    log(f"{job} done in {elapsed:.1f} s")
    return result


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(rows: int, results: dict[str, dict[str, Any]], compare: bool) -> str:
    flow = results["flow"]
    first, rerun = flow["runs"]
    t1, t2 = first["summary"]["timings"], rerun["summary"]["timings"]
    plain = results["plain"]["timings"]
    out: list[str] = []

    stage_rows = [
        [
            stage,
            t1.get(stage, 0.0),
            rows / t1[stage] if t1.get(stage) else "",
            t2.get(stage, 0.0),
            plain.get(stage, 0.0),
        ]
        for stage in ("status", "extract", "transform", "load")
    ]
    stage_rows.append(
        [
            "flow run (wall)",
            first["wall_s"],
            rows / first["wall_s"],
            rerun["wall_s"],
            sum(plain[s] for s in ("extract", "transform", "load")),
        ]
    )
    out.append(
        f"### Pipeline, {rows:,} rows (demo API on loopback -> raw Parquet lake -> "
        "validated -> PostgreSQL)\n"
    )
    out.append(
        table(
            ["stage", "first run s", "rows/s", "rerun (unchanged day) s", "without Prefect s"],
            stage_rows,
        )
    )
    out.append("")
    out.append(
        f"- records: {first['summary']['records_extracted']:,} extracted, "
        f"{first['summary']['clean']:,} valid, {first['summary']['rejected']:,} rejected; "
        f"first run inserted {first['summary']['inserted']:,}, rerun "
        f"updated {rerun['summary']['updated']:,} / unchanged "
        f"{rerun['summary']['unchanged']:,}"
    )
    out.append(
        f"- rerun of the unchanged day: {rerun['wall_s']:.1f} s = "
        f"{rerun['wall_s'] / first['wall_s']:.0%} of the first run "
        "(cached extract, reused clean snapshot, IS DISTINCT FROM writes 0 rows)"
    )
    out.append(
        f"- peak RSS of the pipeline process: {flow['peak_rss_mb']:,.0f} MB "
        f"(without Prefect: {results['plain']['peak_rss_mb']:,.0f} MB; the ephemeral "
        f"Prefect server, a separate process: {flow['server_peak_rss_mb']:,.0f} MB)"
    )
    bookkeeping = first["wall_s"] - sum(t1.values())
    out.append(
        f"- Prefect: ephemeral server start {flow['server_start_s']:.1f} s (once per "
        f"process; imports {flow['import_s']:.1f} s), {first['task_runs']} task runs per "
        f"run ({', '.join(first['task_names'])}), independent of row count; run wall "
        f"minus stage walls {bookkeeping:.1f} s; flow run vs the same functions without "
        f"Prefect: {first['wall_s'] - stage_rows[-1][-1]:+.1f} s"
    )

    if compare:
        floor = results["psql_copy"]["wall_s"]
        ours_rerun, ours_first = t2["load"], t1["load"]
        load_rows = [
            [
                "`psql \\copy` of a ready CSV file (the floor)",
                REFERENCE["psql_copy"],
                floor,
                1.0,
                results["psql_copy"]["peak_rss_mb"] or "n/a",
            ],
            [
                "**this project**: load step, table already holds the day (rerun)",
                "",
                ours_rerun,
                ours_rerun / floor,
                "",
            ],
            [
                "**this project**: load step, empty table (first run)",
                "",
                ours_first,
                ours_first / floor,
                "",
            ],
            [
                "**this project**: load step without Prefect, empty / rerun",
                "",
                f"{plain['load']:.1f} / {plain['load_rerun']:.1f}",
                f"{plain['load'] / floor:.1f} / {plain['load_rerun'] / floor:.1f}",
                "",
            ],
            [
                "dlt, Arrow table through its CSV loader (its fastest path)",
                REFERENCE["dlt_arrow"],
                results["dlt_arrow"]["wall_s"],
                results["dlt_arrow"]["wall_s"] / floor,
                results["dlt_arrow"]["peak_rss_mb"],
            ],
            [
                "pandas `to_sql` default, as the old guide loads (psycopg2)",
                REFERENCE["to_sql"],
                results["to_sql"]["wall_s"],
                results["to_sql"]["wall_s"] / floor,
                results["to_sql"]["peak_rss_mb"],
            ],
        ]
        out.append(f"\n### Load step, {rows:,} rows, same clean rows, same database\n")
        out.append(
            table(
                [
                    "way to load",
                    "issue's reference s",
                    "measured s",
                    "x psql \\copy",
                    "client peak RSS MB",
                ],
                load_rows,
            )
        )
        e2e_dlt = results["dlt_rest_api"]["wall_s"]
        out.append(f"\n### End to end, {rows:,} rows, same API and database\n")
        out.append(
            table(
                ["pipeline", "wall s", "rows/s", "peak RSS MB"],
                [
                    [
                        "**this project**, flow run (server already up)",
                        first["wall_s"],
                        rows / first["wall_s"],
                        flow["peak_rss_mb"],
                    ],
                    [
                        "**this project**, whole process incl. imports and ephemeral server",
                        flow["import_s"] + flow["server_start_s"] + first["wall_s"],
                        rows / (flow["import_s"] + flow["server_start_s"] + first["wall_s"]),
                        "",
                    ],
                    [
                        "dlt `rest_api` source, `merge` on `sale_id`",
                        e2e_dlt,
                        rows / e2e_dlt,
                        results["dlt_rest_api"]["peak_rss_mb"],
                    ],
                ],
            )
        )
        out.append("\n### Ratios against the targets\n")
        checks = [
            ("load step (rerun) vs `to_sql`", results["to_sql"]["wall_s"] / ours_rerun, ">= 10x"),
            (
                "load step (rerun) vs dlt Arrow-CSV",
                results["dlt_arrow"]["wall_s"] / ours_rerun,
                "> 1x",
            ),
            ("load step (rerun) / `psql \\copy`", ours_rerun / floor, "<= 6x"),
            ("end to end: dlt / this project", e2e_dlt / first["wall_s"], ">= 2x"),
            ("end to end flow run, seconds", first["wall_s"], "< 30 s"),
            ("rerun / first run", rerun["wall_s"] / first["wall_s"], "small fraction"),
            ("peak RSS MB", flow["peak_rss_mb"], "< 1024"),
        ]
        out.append(
            table(
                ["ratio", "measured", "target"],
                [[name, f"{value:.2f}", target] for name, value, target in checks],
            )
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compare", action="store_true", help="also run the peers")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--day", default=DAY)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL URL of a role that may create databases",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated peer jobs to run with --compare (default: all)",
    )
    parser.add_argument("--markdown", default=None, help="append the report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", default=None, help="write the raw results to this JSON file")
    args = parser.parse_args(argv)

    work = WORK / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "SALES_API", "WAREHOUSE_", "DATA_LAKE"))
    }
    env["PREFECT_HOME"] = str(work / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    env["PYTHONPATH"] = str(ROOT)
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    try:
        with (
            demo_api(args.rows, args.day, args.page_size) as api_url,
            database(args.admin_url) as db,
        ):
            common = {
                "api_url": api_url,
                "warehouse_url": db,
                "day": args.day,
                "page_size": args.page_size,
                "work": str(work),
            }
            results["flow"] = run_job("flow", {**common, "lake": str(work / "lake")}, env)
            results["plain"] = run_job("plain", {**common, "lake": str(work / "lake-plain")}, env)
            if args.compare:
                peer_args = {
                    **common,
                    "lake": str(work / "lake-plain"),
                    "clean_parts": results["plain"]["clean_parts"],
                }
                jobs = ["psql_copy", "to_sql", "dlt_arrow", "dlt_rest_api"]
                if args.only:
                    jobs = [j for j in jobs if j in args.only.split(",")]
                for job in jobs:
                    try:
                        results[job] = run_job(job, peer_args, env)
                    except RuntimeError as exc:
                        log(str(exc))
                    if args.json:
                        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    compare = args.compare and all(
        j in results for j in ("psql_copy", "to_sql", "dlt_arrow", "dlt_rest_api")
    )
    text = report(args.rows, results, compare)
    header = (
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.rows:,} rows"
        f"{' with --compare' if args.compare else ''}\n\nMachine: {platform.node()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"benchmark took {time.perf_counter() - started:.0f} s\n"
    )
    print(header)
    print(text)
    if not compare and args.compare:
        print(
            "\n(peer results: "
            + json.dumps(
                {k: round(v.get("wall_s", 0), 2) for k, v in results.items() if "wall_s" in v}
            )
            + ")"
        )
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + header + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
