"""Benchmark of the Daily Sales ETL on realistic days: ``make bench``, ``python -m benchmarks.run``.

For each scenario (a day of ``--rows`` sales with ``--reject-rate`` rejects spread over every
reason, ``--duplicates``, Zipf-skewed stores and products, long ids; by default 1M sales at 0%,
10% and 30% rejects, plus 5M at 30% with ``--large``):

1. Starts the demo API (``devharness.demo_api --admin``) in its own process on a free loopback
   port with the day rendered into memory first, and creates a throwaway PostgreSQL database.
2. Runs the real ``daily_sales`` flow in one fresh process (ephemeral Prefect, local lake), once
   per step of ``STEPS``: the first run; the rerun of the unchanged day; revision 1 of the day
   (newer versions, voids, fixes, new and stale sales arriving on a later run); revision 2, where
   ``--change-rate`` (1%) of the records changed since revision 1, run with the incremental
   parameters (``INCREMENTAL_PARAMS`` / ``--incremental-params``). The API switches revision
   between steps (not timed) and counts the requests each run makes.
3. Loads the same valid rows (the first run's, one per sale_id) with ``psql \\copy``, three
   times into a new table each time: the floor is the median.
   Transforms the first run's raw snapshot again, alone, on the part workers: the transform's
   own speed (in the flow it overlaps the extract).
4. With ``--compare``: on the first scenario pandas ``to_sql`` and dlt's Arrow-CSV path (the
   same valid rows); on every scenario dlt's ``rest_api`` source with ``merge`` end to end
   against the same API (revision 0) and database. A peer that fails on a day (dlt on a dirty
   day: a record without ``sale_id`` violates NOT NULL) is reported as that peer's result.
   ``--plain`` also runs the library functions without Prefect.

Prints first one table per scenario: its date, the load average before and after, the command,
and each target (flow/floor, load/floor, transform records/s, peak RSS, rerun/first,
incremental requests and wall vs the full run, vs to_sql, vs dlt) met or missed by how much;
the per-record cost at 5M over 1M; then the details: per run stage seconds, records/s, API
requests, peak RSS, the load's seconds per statement.
The databases are dropped and the work folder (``benchmarks/.work/``) removed unless ``--keep``.
``--markdown FILE`` appends the report to FILE; ``--json FILE`` writes the raw results.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.stages import RESULT_PREFIX, demo_call

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = "2026-11-01"

# PERF_NOTES.md's figures (seconds, 1M rows) for the "PERF_NOTES s" column.
REFERENCE = {
    "psql_copy": 1.23,
    "adbc": 2.2,
    "psycopg2_copy": 5.6,
    "staging_upsert": "~11 / ~15",
    "dlt_arrow": 10.97,
    "dlt_dicts": 82,
    "to_sql": 37.1,
    "to_sql_multi": "~160",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Scenario:
    """One benchmark day: its size and mix (see ``devharness.demo_days.DayMix``)."""

    rows: int
    reject_rate: float
    duplicates: float = 0.05
    skew: float = 1.1
    long_ids: float = 0.05
    seed: int = 0
    change_rate: float = 0.01

    @property
    def name(self) -> str:
        size = f"{self.rows / 1e6:g}M" if self.rows >= 1_000_000 else f"{self.rows / 1e3:g}k"
        return f"{size} sales, {self.reject_rate:.0%} rejects"

    @property
    def mix(self) -> str:
        return (
            f"{self.rows:,} sales, {self.reject_rate:.0%} rejects over every reason, "
            f"{self.duplicates:.0%} duplicates, Zipf skew {self.skew:g}, "
            f"{self.long_ids:.0%} 64-char ids, {self.change_rate:.0%} changed per revision"
        )

    def api_options(self) -> list[str]:
        return [
            "--rows",
            str(self.rows),
            "--reject-rate",
            str(self.reject_rate),
            "--duplicates",
            str(self.duplicates),
            "--skew",
            str(self.skew),
            "--long-ids",
            str(self.long_ids),
            "--seed",
            str(self.seed),
            "--change-rate",
            str(self.change_rate),
        ]


@dataclass(frozen=True)
class Step:
    """One run of the flow on the day, at a revision of it, with these flow parameters."""

    label: str
    revision: int
    params: dict[str, Any] = field(default_factory=dict)


# A run of a day the warehouse already holds is incremental by itself (the records changed
# since the day's high-water mark); full_extract makes it extract the whole day instead, as the
# run closing the day does. The incremental run is compared with the full "revision" run.
FULL: dict[str, Any] = {"full_extract": True}
INCREMENTAL_PARAMS: dict[str, Any] = {}
STEPS: tuple[Step, ...] = (
    Step("first", 0),
    Step("rerun", 0, FULL),  # the unchanged day again, whole: cached extract, ledger skip
    Step("revision", 1, FULL),  # newer versions arrive; the whole day extracted again
    Step("incremental", 2, INCREMENTAL_PARAMS),  # ~change_rate of the records changed since
)


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    mix = {
        "duplicates": args.duplicates,
        "skew": args.skew,
        "long_ids": args.long_ids,
        "seed": args.seed,
        "change_rate": args.change_rate,
    }
    chosen = [
        Scenario(rows=rows, reject_rate=rate, **mix)
        for rows in _numbers(args.rows, int)
        for rate in _numbers(args.reject_rate, float)
    ]
    if args.large:
        chosen.append(Scenario(rows=5_000_000, reject_rate=0.3, **mix))
    return chosen


def _numbers(text: str, kind: type[int] | type[float]) -> list[Any]:
    return [kind(float(part)) if kind is int else kind(part) for part in text.split(",") if part]


@contextmanager
def demo_api(scenario: Scenario, day: str, page_size: int) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "devharness.demo_api",
        "--port",
        str(port),
        *scenario.api_options(),
        "--admin",
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
            if "rendered" in line:
                log(f"demo API: {line.strip()}")
            if "listening on" in line:
                break
        else:
            raise RuntimeError("the demo API exited before listening")
        log(f"demo API on port {port} ready in {time.perf_counter() - started:.1f} s")
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


class JobFailed(RuntimeError):
    """A benchmark job that ended with an error; ``reason`` is its one-line cause."""

    def __init__(self, job: str, returncode: int, tail: str) -> None:
        super().__init__(f"benchmark job {job} failed (exit {returncode}):\n{tail}")
        self.reason = failure_reason(tail)


def failure_reason(tail: str) -> str:
    """The line of a job's output that says why it failed (a constraint, else the last error)."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for marker in ("violates", "Error", "error"):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1 if marker != "violates" else 0][:240]
    return lines[-1][:240] if lines else "no output"


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
        raise JobFailed(job, process.returncode, tail)
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


def _stage(run: dict[str, Any], stage: str) -> float:
    return float(run["summary"].get("timings", {}).get(stage, 0.0))


def _records(run: dict[str, Any]) -> int:
    return int(run["summary"].get("records_extracted", 0))


def _rate(records: int, seconds: float) -> str | int:
    return round(records / seconds) if seconds > 0 else ""


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def scenario_metrics(scenario: Scenario, results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue's targets are stated in, for one scenario."""
    runs = {run["label"]: run for run in results["flow"]["runs"]}
    first = runs.get("first") or results["flow"]["runs"][0]
    full = runs.get("revision") or first
    floor = results.get("psql_copy", {}).get("wall_s")
    incremental = runs.get("incremental")
    metrics: dict[str, Any] = {
        "scenario": scenario.name,
        "rows": scenario.rows,
        "reject_rate": scenario.reject_rate,
        "records": _records(first),
        "first_wall_s": first["wall_s"],
        "extract_s": _stage(first, "extract"),
        "transform_s": _stage(first, "transform"),
        "load_s": _stage(first, "load"),
        "load_steps": first["summary"].get("load_steps") or {},
        "floor_s": floor,
        "flow_over_floor": _ratio(first["wall_s"], floor),
        "load_over_floor": _ratio(_stage(first, "load"), floor),
        "transform_records_per_s": _ratio(
            results.get("transform", {}).get("records"), results.get("transform", {}).get("wall_s")
        ),
        "rerun_over_first": _ratio(runs["rerun"]["wall_s"], first["wall_s"])
        if "rerun" in runs
        else None,
        "peak_rss_mb": max(run["peak_rss_mb"] for run in results["flow"]["runs"]),
        "process_peak_rss_mb": results["flow"].get("peak_rss_mb"),
        "seconds_per_record": first["wall_s"] / max(1, _records(first)),
        "incremental_requests": incremental["requests"] if incremental else None,
        "full_requests": full["requests"],
        "incremental_requests_ratio": _ratio(incremental["requests"], full["requests"])
        if incremental
        else None,
        "incremental_pages_ratio": _ratio(incremental["sales_requests"], full["sales_requests"])
        if incremental
        else None,
        "incremental_wall_ratio": _ratio(incremental["wall_s"], full["wall_s"])
        if incremental
        else None,
        "machine": results.get("machine", {}),
        "failed": {
            job: r["failed"] for job, r in results.items() if isinstance(r, dict) and "failed" in r
        },
    }
    if "wall_s" in results.get("to_sql", {}):
        metrics["to_sql_over_load"] = _ratio(results["to_sql"]["wall_s"], _stage(first, "load"))
    if "wall_s" in results.get("dlt_rest_api", {}):
        metrics["dlt_over_flow"] = _ratio(results["dlt_rest_api"]["wall_s"], first["wall_s"])
    return metrics


def scenario_report(scenario: Scenario, results: dict[str, Any]) -> str:
    flow = results["flow"]
    out = [f"### {scenario.name}: {scenario.mix}\n"]
    rows = []
    for run in flow["runs"]:
        records = _records(run)
        stages = [_stage(run, s) for s in ("extract", "transform", "load")]
        rows.append(
            [
                run["label"],
                run["revision"],
                records,
                *stages,
                run["wall_s"],
                *(_rate(records, t) for t in (*stages, run["wall_s"])),
                f"{run['requests']} ({run['sales_requests']} /sales)",
                run["peak_rss_mb"],
            ]
        )
    out.append(
        table(
            [
                "run",
                "rev",
                "records",
                "extract s",
                "transform s",
                "load s",
                "wall s",
                "extract rec/s",
                "transform rec/s",
                "load rec/s",
                "wall rec/s",
                "API requests",
                "peak RSS MB",
            ],
            rows,
        )
    )
    first = flow["runs"][0]["summary"]
    out.append("")
    out.append(
        f"- first run: {first.get('records_extracted', 0):,} records, "
        f"{first.get('clean', 0):,} valid, {first.get('rejected', 0):,} rejected "
        f"({', '.join(f'{k}={v}' for k, v in sorted(first.get('rejected_by_reason', {}).items()))})"
        f", superseded {first.get('superseded', 0):,}, inserted {first.get('inserted', 0):,}"
    )
    for run in flow["runs"][1:]:
        summary = run["summary"]
        out.append(
            f"- {run['label']} (revision {run['revision']}, params {run['params'] or 'none'}): "
            f"inserted {summary.get('inserted', 0):,}, updated {summary.get('updated', 0):,}, "
            f"unchanged {summary.get('unchanged', 0):,}, rejected {summary.get('rejected', 0):,}"
        )
    for run in flow["runs"]:
        steps = run["summary"].get("load_steps") or {}
        if steps:
            out.append(
                f"- load steps, {run['label']} (s): "
                + ", ".join(f"{step} {seconds:.2f}" for step, seconds in steps.items())
            )
    for run in flow["runs"]:
        cpu = run.get("cpu_s")
        if cpu:
            total = sum(cpu.values())
            out.append(
                f"- CPU s during the {run['label']} run, machine-wide: "
                + ", ".join(
                    f"{name} {seconds:.1f}"
                    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
                )
                + f"; {total:.1f} in all over {run['wall_s']:.1f} s "
                f"({total / run['wall_s']:.2f} of {os.cpu_count()} cores)"
            )
    if "psql_copy" in results:
        floor = results["psql_copy"]
        out.append(
            f"- `psql \\copy` floor of the same valid rows ({floor['rows']:,}, one per sale_id): "
            f"{floor['wall_s']:.2f} s, the median of "
            f"{', '.join(f'{s:.2f}' for s in floor.get('walls_s', [floor['wall_s']]))}"
        )
    out.append(
        f"- Prefect: ephemeral server start {flow['server_start_s']:.1f} s, imports "
        f"{flow['import_s']:.1f} s; task runs per run "
        f"{', '.join(str(r.get('task_runs', '?')) for r in flow['runs'])}; process peak RSS "
        f"{flow.get('peak_rss_mb', 0):,.0f} MB (ephemeral server "
        f"{flow['server_peak_rss_mb']:,.0f} MB)"
    )
    if "transform" in results:
        alone = results["transform"]
        workers = f"{alone['workers']} part worker{'s' if alone['workers'] != 1 else ''}"
        out.append(
            f"- the transform alone ({workers}, the first run's raw "
            f"snapshot): {alone['wall_s']:.2f} s, {_rate(alone['records'], alone['wall_s']):,} "
            "records/s"
        )
    if "plain" in results:
        plain = results["plain"]["timings"]
        out.append(
            "- without Prefect: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in plain.items())
            + f", peak RSS {results['plain']['peak_rss_mb']:,.0f} MB"
        )
    if any(job in results for job in ("to_sql", "dlt_arrow", "dlt_rest_api")):
        out.append("\n" + peers_report(scenario, results))
    return "\n".join(out)


def peers_report(scenario: Scenario, results: dict[str, Any]) -> str:
    first = results["flow"]["runs"][0]
    floor = results.get("psql_copy", {}).get("wall_s")
    load = _stage(first, "load")
    rows: list[list[Any]] = []
    if floor:
        rows.append(
            ["`psql \\copy` of a ready CSV file (the floor)", REFERENCE["psql_copy"], floor, "n/a"]
        )
    rows.append(["**this project**: load step, first run", "", load, ""])
    for job, name in (
        ("dlt_arrow", "dlt, Arrow table through its CSV loader (its fastest path)"),
        ("to_sql", "pandas `to_sql` default (psycopg2)"),
    ):
        if "wall_s" in results.get(job, {}):
            peer = results[job]
            rows.append([name, REFERENCE[job], peer["wall_s"], peer.get("peak_rss_mb") or ""])
        elif job in results:
            rows.append([name, REFERENCE[job], f"failed: {results[job]['failed']}", ""])
    load_rows = [
        [name, ref, secs, secs / floor if floor and isinstance(secs, float) else "", rss]
        for name, ref, secs, rss in rows
    ]
    out = [f"#### Load step, {scenario.name}, same valid rows, same database\n"]
    out.append(
        table(
            ["way to load", "PERF_NOTES s", "measured s", "x psql \\copy", "client peak RSS MB"],
            load_rows,
        )
    )
    e2e = [["**this project**, flow run", first["wall_s"], _records(first) / first["wall_s"]]]
    dlt = results.get("dlt_rest_api", {})
    if "wall_s" in dlt:
        e2e.append(
            ["dlt `rest_api`, `merge` on `sale_id`", dlt["wall_s"], dlt["rows"] / dlt["wall_s"]]
        )
    elif "failed" in dlt:
        e2e.append(["dlt `rest_api`, `merge` on `sale_id`", f"failed: {dlt['failed']}", ""])
    out.append(f"\n#### End to end, {scenario.name}, same API (revision 0) and database\n")
    out.append(table(["pipeline", "wall s", "rows/s"], e2e))
    return "\n".join(out)


TARGETS: tuple[tuple[str, str, str, float, bool], ...] = (
    # key, label, target text, bound, bound is a maximum
    ("flow_over_floor", "flow run / `psql \\copy` floor", "<= 3x", 3.0, True),
    ("load_over_floor", "load / floor", "<= 2x", 2.0, True),
    ("transform_records_per_s", "transform records/s (alone)", ">= 300k", 300_000, False),
    ("peak_rss_mb", "peak RSS MB (pipeline process)", "<= 400", 400, True),
    ("rerun_over_first", "rerun / first run", "<= 5%", 0.05, True),
    ("incremental_requests_ratio", "incremental requests / full", "<= 2%", 0.02, True),
    ("incremental_pages_ratio", "incremental /sales requests / full", "<= 2%", 0.02, True),
    ("incremental_wall_ratio", "incremental wall / full", "<= 10%", 0.10, True),
    ("to_sql_over_load", "`to_sql` / load", ">= 10x", 10, False),
    ("dlt_over_flow", "dlt `rest_api` + merge / flow run", ">= 5x", 5, False),
)
PEER_OF_TARGET = {"to_sql_over_load": "to_sql", "dlt_over_flow": "dlt_rest_api"}


def shown(value: float, target: str, bound: float) -> str:
    if "%" in target:
        return f"{value:.1%}"
    return f"{value:,.0f}" if bound >= 100 else f"{value:.2f}x"


def verdict(value: float, bound: float, is_max: bool) -> str:
    """``met``, or ``MISSED`` and by how much (the factor between the value and its bound)."""
    if (value <= bound) if is_max else (value >= bound):
        return "met"
    factor = value / bound if is_max else bound / value if value else float("inf")
    return f"MISSED by {factor:.2f}x"


def target_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, label, target, bound, is_max in TARGETS:
        value = metrics.get(key)
        failed = metrics["failed"].get(PEER_OF_TARGET.get(key, ""))
        if failed:
            rows.append([label, target, "peer failed", f"`{failed}`"])
        elif value is not None:
            rows.append([label, target, shown(value, target, bound), verdict(value, bound, is_max)])
    return rows


def scenario_table(metrics: dict[str, Any], command: str) -> str:
    """The one current table of a scenario: when, on what machine state, how, targets."""
    machine = metrics["machine"]
    steps = metrics["load_steps"]
    slowest = sorted(steps.items(), key=lambda item: -item[1])[:4]
    figures = [
        [
            "`psql \\copy` floor s",
            "",
            fmt(metrics["floor_s"], 2),
            "same valid rows, same run, median of 3",
        ],
        [
            "flow run s (extract / transform / load)",
            "",
            f"{metrics['first_wall_s']:.1f} ({metrics['extract_s']:.1f} / "
            f"{metrics['transform_s']:.1f} / {metrics['load_s']:.1f})",
            "first run of the day; the parts are transformed while the extract runs: the "
            "transform stage is what is left after it",
        ],
        [
            "load's slowest statements s",
            "",
            ", ".join(f"{step} {sec:.2f}" for step, sec in slowest),
            "`load_steps` of the run summary",
        ],
    ]
    out = [
        f"### {metrics['scenario']}\n",
        f"{machine.get('date', '?')}; machine: {machine.get('machine', '?')}; load average "
        f"{machine.get('load_before', 0):.1f} before, {machine.get('load_after', 0):.1f} after; "
        f"`{command}`\n",
        table(["measure", "target", "measured", "verdict"], target_rows(metrics) + figures),
    ]
    return "\n".join(out)


def summary_report(metrics: Sequence[dict[str, Any]], command: str) -> str:
    out = [scenario_table(m, command) for m in metrics]
    scaling = per_record_scaling(metrics)
    if scaling:
        out.append("\n".join(scaling))
    return "\n\n".join(out)


def per_record_scaling(metrics: Sequence[dict[str, Any]]) -> list[str]:
    """Per-record cost of a larger day over the 1M day of the same mix (target: <= 1.2x)."""
    lines = []
    base = {m["reject_rate"]: m for m in metrics if m["rows"] == 1_000_000}
    for m in metrics:
        ref = base.get(m["reject_rate"])
        if ref is None or m["rows"] <= 1_000_000:
            continue
        ratio = m["seconds_per_record"] / ref["seconds_per_record"]
        lines.append(
            f"- per-record cost at {m['rows']:,} over 1,000,000 ({m['reject_rate']:.0%} "
            f"rejects): {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'MISSED'})"
        )
    return lines


def run_scenario(
    index: int,
    scenario: Scenario,
    args: argparse.Namespace,
    steps: Sequence[Step],
    work: Path,
    base_env: dict[str, str],
) -> dict[str, Any]:
    folder = work / f"scenario-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**base_env, "PREFECT_HOME": str(folder / "prefect-home")}
    results: dict[str, Any] = {}
    log(f"scenario {index + 1}: {scenario.mix}")
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    with demo_api(scenario, args.day, args.page_size) as api_url, database(args.admin_url) as db:
        common = {
            "api_url": api_url,
            "warehouse_url": db,
            "day": args.day,
            "page_size": args.page_size,
            "work": str(folder),
        }
        lake = str(folder / "lake")
        flow_steps = [{"label": s.label, "revision": s.revision, "params": s.params} for s in steps]
        results["flow"] = run_job("flow", {**common, "lake": lake, "steps": flow_steps}, env)
        first = results["flow"]["runs"][0]["summary"]
        clean_file = str(folder / "clean-rows.parquet")
        floor_args = {
            **common,
            "lake": lake,
            "snapshot_id": first.get("snapshot_id"),
            "clean_file": clean_file,
        }
        results["psql_copy"] = run_job("psql_copy", floor_args, env)
        results["transform"] = run_job("transform", floor_args, env)
        if args.plain:
            results["plain"] = run_job("plain", {**common, "lake": str(folder / "lake-plain")}, env)
        if args.compare:
            demo_call(api_url, "/_demo/revision?revision=0", "POST")
            results |= run_peers(peer_jobs(index, args), {**common, "clean_file": clean_file}, env)
    results["machine"] = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    return results


def peer_jobs(index: int, args: argparse.Namespace) -> list[str]:
    """The load peers (same valid rows) on the first scenario; dlt's end-to-end peer on every
    scenario, since whether it copes with a dirty day is part of its result."""
    jobs = ["to_sql", "dlt_arrow", "dlt_rest_api"] if index == 0 else ["dlt_rest_api"]
    if args.only:
        jobs = [j for j in jobs if j in args.only.split(",")]
    return jobs


def run_peers(jobs: list[str], job_args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Each peer's result, or ``{"failed": reason}`` when the peer itself fails on the day."""
    results: dict[str, Any] = {}
    for job in jobs:
        try:
            results[job] = run_job(job, job_args, env)
        except JobFailed as exc:
            log(f"peer {job} failed on this day: {exc.reason}")
            results[job] = {"failed": exc.reason}
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", default="1000000", help="sales per day, comma-separated list")
    parser.add_argument(
        "--reject-rate", default="0,0.1,0.3", help="share of rejects, comma-separated list"
    )
    parser.add_argument("--duplicates", type=float, default=0.05, help="share sent twice")
    parser.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of stores/products")
    parser.add_argument("--long-ids", type=float, default=0.05, help="share of 64-char sale ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--change-rate", type=float, default=0.01, help="share of records each revision changes"
    )
    parser.add_argument("--large", action="store_true", help="add the 5M day at 30%% rejects")
    parser.add_argument(
        "--steps",
        default=",".join(s.label for s in STEPS),
        help="runs of the flow per scenario, in order (default: all of %(default)s)",
    )
    parser.add_argument(
        "--incremental-params",
        default=None,
        help="JSON flow parameters of the incremental run (default: INCREMENTAL_PARAMS)",
    )
    parser.add_argument("--compare", action="store_true", help="also run the peers (scenario 1)")
    parser.add_argument("--plain", action="store_true", help="also run without Prefect")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--day", default=DAY)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL URL of a role that may create databases",
    )
    parser.add_argument("--only", default=None, help="comma-separated peers to run with --compare")
    parser.add_argument("--markdown", default=None, help="append the report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", default=None, help="write the raw results to this JSON file")
    return parser


def chosen_steps(args: argparse.Namespace) -> list[Step]:
    by_label = {s.label: s for s in STEPS}
    steps = []
    for label in args.steps.split(","):
        if label not in by_label:
            raise SystemExit(f"unknown step {label!r}; choose from {', '.join(by_label)}")
        step = by_label[label]
        if label == "incremental" and args.incremental_params is not None:
            step = Step(step.label, step.revision, json.loads(args.incremental_params))
        steps.append(step)
    return steps


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scenarios = scenarios_from(args)
    steps = chosen_steps(args)
    work = WORK / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "SALES_API", "WAREHOUSE_", "DATA_LAKE"))
    }
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    env["PYTHONPATH"] = str(ROOT)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        for index, scenario in enumerate(scenarios):
            results.append(run_scenario(index, scenario, args, steps, work, env))
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    metrics = [scenario_metrics(s, r) for s, r in zip(scenarios, results, strict=True)]
    if args.json:
        payload = {"scenarios": results, "metrics": metrics}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: targets per scenario\n\n"
        f"{platform.platform()}, Python {platform.python_version()}; benchmark took "
        f"{time.perf_counter() - started:.0f} s; page size {args.page_size:,}; steps "
        f"{', '.join(f'{s.label} (rev {s.revision}, params {s.params or {}})' for s in steps)}\n"
    )
    reports = [scenario_report(s, r) for s, r in zip(scenarios, results, strict=True)]
    text = "\n\n".join([summary_report(metrics, command.strip()), "## Details", *reports])
    print(header)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + header + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
