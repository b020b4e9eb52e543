"""Benchmark of the transform alone: a realistic raw day -> clean snapshot.

``python -m benchmarks.transform --help``. Writes a realistic day into a throwaway local lake
(:mod:`devharness.raw_days`: about 10% rejects over every reason code, duplicates, NaN
literals), then transforms it in fresh processes and prints records/s and peak RSS:

* ``sequential``: :func:`sales_etl.transform.transform_snapshot`, one process;
* ``parallel``: the per-part tasks of :func:`sales_etl.transform.transform_part` on a
  ``dask.distributed`` cluster with 1 and then 2 single-threaded worker processes.

``--pages N`` prints instead where one page's time goes, in this process: each step of the
strict path (:mod:`sales_etl.arrow_parse`: the scan, setting aside, Arrow's reader; then the
rules and the rejects, :func:`sales_etl.transform.judge_page`) and the per-record path, the
fastest of a few passes over ``N`` realistic pages (:func:`devharness.raw_days.realistic_pages`).

The generator is :func:`devharness.raw_days.write_realistic_day`, shared with the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from devharness.raw_days import realistic_pages, write_realistic_day
from sales_etl.snapshots import SnapshotRef

DAY = date(2026, 11, 23)
RESULT_PREFIX = "TRANSFORM_RESULT "

# --- measuring: one job per fresh process, so each peak RSS is its own ---------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _raw(lake_dir: str) -> tuple[Any, SnapshotRef]:
    from sales_etl.lake import LocalLake
    from sales_etl.snapshots import list_snapshots

    store = LocalLake(lake_dir)
    return store, list_snapshots(store, "raw", DAY)[0]


def job_generate(args: dict[str, Any]) -> dict[str, Any]:
    from sales_etl.lake import LocalLake

    started = time.perf_counter()
    raw = write_realistic_day(
        LocalLake(args["lake"]), DAY, args["records"], reject_share=args.get("reject_share", 0.1)
    )
    return {"parts": len(raw.manifest["parts"]), "seconds": time.perf_counter() - started}


def job_sequential(args: dict[str, Any]) -> dict[str, Any]:
    """transform_snapshot in this process (what TASK_RUNNER=auto with one part does)."""
    from sales_etl.transform import transform_snapshot

    store, raw = _raw(args["lake"])
    started, cpu = time.perf_counter(), time.process_time()
    clean = transform_snapshot(store, raw, strict=args.get("strict", True))
    seconds = time.perf_counter() - started
    return {
        "records": clean.manifest["records"],
        "rejected": clean.manifest["rejected"],
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "records_per_s": clean.manifest["records"] / seconds,
    }


def job_dask(args: dict[str, Any]) -> dict[str, Any]:
    """The per-part functions of the ``transform-part`` tasks on a local dask.distributed
    cluster of ``workers`` single-threaded worker processes (no Prefect: its ~5 ms per task
    run is the same on any runner)."""
    from distributed import Client, LocalCluster

    from sales_etl.transform import commit_clean_snapshot, plan_parts

    store, raw = _raw(args["lake"])
    with (
        LocalCluster(
            n_workers=args["workers"], threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_worker)
        cpu_before = client.run(time.process_time)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        parts = plan_parts(store, raw)
        futures = [
            client.submit(_transform_part_on_worker, args["lake"], part, pure=False)
            for part in parts
        ]
        written = client.gather(futures)
        clean = commit_clean_snapshot(store, raw, written)
        seconds = time.perf_counter() - started
        cpu = client.run(time.process_time)
        worker_rss = client.run(_peak_rss_mb)
    worker_cpu = [cpu[w] - cpu_before[w] for w in cpu]
    return {
        # CPU seconds of the busiest worker: the wall time this split would take with a core
        # per worker to itself (the machine may be shared).
        "worker_cpu_seconds": worker_cpu,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "records": clean.manifest["records"],
        "workers": args["workers"],
        "parts": len(parts),
        "seconds": seconds,
        "records_per_s": clean.manifest["records"] / seconds,
        "worker_peak_rss_mb": max(worker_rss.values()),
    }


def _warm_worker() -> None:
    import sales_etl.transform  # noqa: F401  (imports are not part of the measured time)


def _transform_part_on_worker(lake_dir: str, part: Any) -> Any:
    from sales_etl.lake import LocalLake
    from sales_etl.transform import transform_part

    return transform_part(LocalLake(lake_dir), part)


def _median(rows: list[dict[str, Any]], records: int, variant: str) -> tuple[float, float] | None:
    """Median (wall seconds, busiest worker's CPU seconds) of a variant's runs."""
    runs = [r for r in rows if r["records"] == records and r["variant"] == variant]
    if not runs:
        return None
    walls = sorted(r["seconds"] for r in runs)
    cpus = sorted(max(r["worker_cpu_seconds"]) for r in runs)
    return walls[len(walls) // 2], cpus[len(cpus) // 2]


def page_costs(
    pages: int, page_size: int, reject_share: float, passes: int = 5
) -> list[tuple[str, float]]:
    """(step, milliseconds a page) of the transform's steps on ``pages`` realistic pages of
    ``page_size`` records: the fastest of ``passes`` passes over them, in this process. The
    strict read's three steps add up to the strict read; "judged" is the whole strict way of
    a page (read, rules, rejects), "per record" the other way for the same page."""
    from sales_etl import arrow_parse, transform

    bodies = [
        body
        for _, body in realistic_pages(
            DAY, pages * page_size, page_size=page_size, reject_share=reject_share
        )
    ]
    scans = []
    for body in bodies:
        scan = arrow_parse._Scan.of(body)
        if scan is None:
            raise SystemExit("a realistic page is not of the plain layout: no breakdown")
        scans.append(scan)
    spans = [scan.item_spans() for scan in scans]
    kept = [
        np.flatnonzero(~scan.set_aside(starts)[0])
        for scan, (starts, _) in zip(scans, spans, strict=True)
    ]
    steps: dict[str, Callable[[int], object]] = {
        "scan (brackets, commas, keys outside strings)": lambda i: arrow_parse._Scan.of(bodies[i]),
        "set aside (what the reader would read otherwise)": lambda i: scans[i].set_aside(
            spans[i][0]
        ),
        "Arrow's reader (the records kept)": lambda i: arrow_parse._read_records(
            bodies[i], *spans[i], kept[i]
        ),
        "strict read (the three above)": lambda i: arrow_parse.read_strict(bodies[i]),
        "judged the strict way (read, rules, rejects)": lambda i: transform.judge_page(
            bodies[i], DAY, 0
        ),
        "judged record by record (lossless parse, rules...)": lambda i: transform.judge_page(
            bodies[i], DAY, 0, strict=False
        ),
    }
    costs = []
    for name, step in steps.items():
        best = float("inf")
        for _ in range(passes):
            started = time.perf_counter()
            for i in range(len(bodies)):
                step(i)
            best = min(best, time.perf_counter() - started)
        costs.append((name, best / len(bodies) * 1000))
    return costs


JOBS = {"generate": job_generate, "sequential": job_sequential, "dask": job_dask}


def run_job(job: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter; its result includes that process's peak RSS."""
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.transform", "--job", job, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(x for x in output.splitlines() if x.startswith(RESULT_PREFIX))
    result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transform",
        description="Transform benchmark on a realistic day (10%% rejects over every reason, "
        "5%% duplicates, long ids): records/s and peak RSS, in one process and on a local "
        "dask.distributed cluster of 1 and 2 worker processes.",
    )
    parser.add_argument("--records", default="1000000,5000000", help="day sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts, comma-separated")
    parser.add_argument(
        "--parallel-min",
        type=int,
        default=5_000_000,
        help="run the Dask variants only for days of at least this size",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each Dask variant, alternating (median)"
    )
    parser.add_argument("--workdir", default=None, help="where the throwaway lakes go")
    parser.add_argument("--reject-share", type=float, default=0.1, help="share of bad records")
    parser.add_argument(
        "--per-record",
        action="store_true",
        help="also run the sequential transform with every page judged record by record",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=0,
        help="instead: where a page's time goes, step by step, over this many realistic pages",
    )
    parser.add_argument("--page-size", type=int, default=5_000, help="records a page (--pages)")
    parser.add_argument("--job", nargs=2, metavar=("JOB", "ARGS"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.pages:
        print(
            f"{options.pages} realistic pages of {options.page_size:,} records, "
            f"{options.reject_share:.0%} rejects; the fastest of 5 passes, in this process"
        )
        for name, ms in page_costs(options.pages, options.page_size, options.reject_share):
            per_record = ms * 1000 / options.page_size
            print(f"  {name:<52} {ms:8.2f} ms a page {per_record:6.2f} us a record")
        return 0
    if options.job:
        name, raw_args = options.job
        result = JOBS[name](json.loads(raw_args))
        result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    work = Path(tempfile.mkdtemp(prefix="transform-bench-", dir=options.workdir))
    rows: list[dict[str, Any]] = []
    try:
        for records in (int(x) for x in options.records.split(",")):
            lake = str(work / f"lake-{records}")
            generated = run_job(
                "generate",
                {"lake": lake, "records": records, "reject_share": options.reject_share},
            )
            print(
                f"{records:,} records: {generated['parts']} raw parts "
                f"(generated in {generated['seconds']:.0f} s)",
                flush=True,
            )
            variants: list[tuple[str, str, dict[str, Any]]] = [("sequential", "sequential", {})]
            if options.per_record:
                variants.append(("sequential, per-record", "sequential", {"strict": False}))
            if records >= options.parallel_min:
                variants += [
                    (f"dask, {n} worker{'s' if n > 1 else ''}", "dask", {"workers": n})
                    for n in (int(x) for x in options.workers.split(","))
                ]
            runs = [variants[0]] + variants[1:] * options.repeat
            if options.per_record:
                runs = variants[:2] + variants[2:] * options.repeat
            for label, job, extra in runs:
                shutil.rmtree(Path(lake) / "clean", ignore_errors=True)
                result = run_job(job, {"lake": lake, **extra})
                rows.append({"records": records, "variant": label, **result})
                rss = result.get("worker_peak_rss_mb")
                cpu = result.get("worker_cpu_seconds")
                print(
                    f"  {label:<18} {result['seconds']:7.1f} s  "
                    f"{result['records_per_s']:>9,.0f} records/s  peak RSS "
                    f"{result['peak_rss_mb']:.0f} MB"
                    + (f" (driver), {rss:.0f} MB (largest worker)" if rss else "")
                    + (f"; worker CPU s {[round(c, 1) for c in cpu]}" if cpu else "")
                    + (f"; load {result['load_average']}" if cpu else ""),
                    flush=True,
                )
        for records in sorted({r["records"] for r in rows}):
            one = _median(rows, records, "dask, 1 worker")
            two = _median(rows, records, "dask, 2 workers")
            if one and two:
                print(
                    f"{records:,} records, median of {options.repeat}: 2 workers / 1 worker = "
                    f"{one[0] / two[0]:.2f}x wall, {one[1] / two[1]:.2f}x busiest-worker CPU"
                )
        print("JSON " + json.dumps(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
