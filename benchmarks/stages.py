"""One measured job per process: ``python -m benchmarks.stages JOB '<json args>'``.

Each job runs in a fresh process so its peak RSS (``ru_maxrss``) is its own, and prints one line
``BENCH_RESULT {...}`` that :mod:`benchmarks.run` collects. Jobs:

* ``flow``: the real ``daily_sales`` flow (ephemeral Prefect), one run per step of the scenario
  (first run, rerun of the unchanged day, a later revision of the day, an incremental run):
  before a step the demo API is switched to the step's revision (``POST /_demo/revision``, not
  timed); per run: the flow's summary, wall time, API requests (``GET /_demo/stats`` before and
  after) and peak RSS (sampled); also times the ephemeral server start and counts task runs.
* ``plain``: the same library functions the tasks call, without Prefect (the orchestration-free
  baseline).
* ``transform``: the transform alone, as the flow's part workers do it, on a copy of the first
  run's raw snapshot (in the flow the parts are transformed while the extract runs, so the
  flow's transform stage is only what is left after the extract: not the transform's speed).
* ``psql_copy``: ``psql \\copy`` of a ready CSV file into an empty keyed table, the median of
  :data:`FLOOR_RUNS` copies into a new table each (the floor); the
  rows are the valid rows of the flow's first clean snapshot, one per ``sale_id`` (the newest),
  also written as ``clean_file`` for the peers below.
* ``to_sql``: pandas ``DataFrame.to_sql`` with its defaults through psycopg2 (the old guide).
* ``dlt_arrow``: dlt with an Arrow table and ``loader_file_format="csv"`` (its fastest path).
* ``dlt_rest_api``: dlt's ``rest_api`` source against the demo API, ``merge`` on ``sale_id``.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.states import State

RESULT_PREFIX = "BENCH_RESULT "


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _emit(result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def rss_sampler(interval: float = 0.05) -> Iterator[dict[str, float]]:
    """The peak RSS of this process while the block runs (sampled; ru_maxrss never resets)."""
    peak = {"mb": current_rss_mb()}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak["mb"] = max(peak["mb"], current_rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak["mb"] = round(max(peak["mb"], current_rss_mb()), 1)


# Who spends the machine's CPU during a flow run, by the process's name and command line as
# "<comm> <cmdline>" (Linux /proc; a PostgreSQL backend rewrites its command line, not its name).
CPU_CLASSES: tuple[tuple[str, str], ...] = (
    ("part workers", "multiprocessing.spawn"),
    ("Prefect server", "uvicorn"),
    ("PostgreSQL", "postgres "),
    ("demo API", "devharness.demo_api"),
)


def cpu_class(
    pid: int, cmdline: str, pipeline: int, classes: tuple[tuple[str, str], ...] = CPU_CLASSES
) -> str:
    """The class of a process for :func:`cpu_sampler`: the pipeline process itself, the first
    of ``classes`` (name, mark) whose mark is in its command line, or "other" (the benchmark
    runner, the machine's other work)."""
    if pid == pipeline:
        return "pipeline process"
    return next((name for name, mark in classes if mark in cmdline), "other")


def _cpu_seconds() -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, start time) -> ("<comm> <command line>", user + system CPU seconds) of every
    process."""
    ticks = os.sysconf("SC_CLK_TCK")
    seen = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/comm") as handle:
                comm = handle.read().strip()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = comm + " " + handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        # After the command's ")": state is field 3 of proc(5), utime 14, stime 15, starttime 22.
        seen[(int(name), int(fields[19]))] = (cmdline, (int(fields[11]) + int(fields[12])) / ticks)
    return seen


@contextmanager
def cpu_sampler(
    interval: float = 0.5, classes: tuple[tuple[str, str], ...] = CPU_CLASSES
) -> Iterator[dict[str, float]]:
    """CPU seconds spent by each class of process (:func:`cpu_class`) while the block runs,
    machine-wide: sampled, so a process that ends between samples loses its last interval."""
    first = _cpu_seconds()
    last = dict(first)
    done = threading.Event()

    def seen(now: dict[tuple[int, int], tuple[str, float]]) -> None:
        # A process is classed by its first reading: a command line read while a process
        # rewrites it (a PostgreSQL backend's status) may come back empty.
        for key, (cmdline, seconds) in now.items():
            last[key] = (last[key][0] if key in last else cmdline, seconds)

    def sample() -> None:
        while not done.wait(interval):
            seen(_cpu_seconds())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    spent: dict[str, float] = {}
    try:
        yield spent
    finally:
        done.set()
        thread.join()
        seen(_cpu_seconds())
        pipeline = os.getpid()
        for key, (cmdline, seconds) in last.items():
            used = seconds - first.get(key, ("", 0.0))[1]
            if used > 0:
                name = cpu_class(key[0], cmdline, pipeline, classes)
                spent[name] = round(spent.get(name, 0.0) + used, 2)


def demo_call(api_url: str, path: str, method: str = "GET", timeout: float = 600) -> Any:
    """The demo API's admin endpoints (``--admin``): request counters, revision switch."""
    request = urllib.request.Request(f"{api_url}{path}", method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def job_flow(args: dict[str, Any]) -> None:
    os.environ["SALES_API_URL"] = args["api_url"]
    os.environ["WAREHOUSE_URL"] = args["warehouse_url"]
    os.environ["DATA_LAKE_URL"] = args["lake"]
    os.environ["SALES_API_PAGE_SIZE"] = str(args["page_size"])
    from sales_etl.memory import prefer_returning_allocator

    prefer_returning_allocator()  # as the CLI does, before pyarrow is imported
    started = time.perf_counter()
    from flows.daily_sales import daily_sales
    from flows.termination import shielded_api

    imported = time.perf_counter()
    # As the CLI does: one temporary API server, shared with the process pool's workers (a
    # worker that found no PREFECT_API_URL would start a server of its own, ~10 s each).
    with shielded_api():
        _flow_runs(args, daily_sales, started, imported)


def _flow_runs(args: dict[str, Any], daily_sales: Any, started: float, imported: float) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    server_ready = time.perf_counter()
    day = date.fromisoformat(args["day"])
    revision = demo_call(args["api_url"], "/_demo/stats")["revision"]
    runs = []
    for step in args["steps"]:
        if step["revision"] != revision:
            switched = demo_call(
                args["api_url"], f"/_demo/revision?revision={step['revision']}", "POST"
            )
            revision = step["revision"]
            print(f"API at revision {revision} ({switched['render_seconds']} s)", file=sys.stderr)
        before = demo_call(args["api_url"], "/_demo/stats")
        with rss_sampler() as peak, cpu_sampler() as cpu:
            t0 = time.perf_counter()
            state = cast(
                "State[Any]", daily_sales(run_date=day, return_state=True, **step["params"])
            )
            wall = time.perf_counter() - t0
        after = demo_call(args["api_url"], "/_demo/stats")
        if not state.is_completed():
            raise SystemExit(f"flow run {step['label']} failed: {state.message}")
        runs.append(
            {
                "label": step["label"],
                "revision": revision,
                "params": step["params"],
                "wall_s": wall,
                "summary": state.result(),
                "flow_run_id": str(state.state_details.flow_run_id),
                "requests": after["requests"] - before["requests"],
                "sales_requests": after["sales_requests"] - before["sales_requests"],
                "peak_rss_mb": peak["mb"],
                "cpu_s": cpu,
            }
        )
    time.sleep(2)  # let the ephemeral server's recorder catch up before counting task runs
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        for run in runs:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run["flow_run_id"]]))
            )
            run["task_runs"] = len(task_runs)
            run["task_names"] = sorted({t.name.rsplit("-", 1)[0] for t in task_runs})
    _emit(
        {
            "job": "flow",
            "import_s": imported - started,
            "server_start_s": server_ready - imported,
            "runs": runs,
            "server_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        }
    )


def job_plain(args: dict[str, Any]) -> None:
    from pydantic import SecretStr

    from sales_etl.lake import open_lake
    from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig
    from sales_etl.snapshots import RawSnapshotWriter, iter_tables
    from sales_etl.source import SalesApiClient, max_pages_for
    from sales_etl.transform import transform_snapshot
    from sales_etl.warehouse import create_warehouse_engine, ensure_tables, load_day, tables_for

    day = date.fromisoformat(args["day"])
    source = SourceConfig(base_url=args["api_url"], page_size=args["page_size"])
    store = open_lake(LakeConfig(url=args["lake"]))
    warehouse = WarehouseConfig(url=SecretStr(args["warehouse_url"]), table_name="sales_plain")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    writer = RawSnapshotWriter(store, day)
    with SalesApiClient(source) as client:
        status = client.status(day)
        for page in client.iter_pages(
            day, max_pages_for(status.record_count, source.page_size), lossless=False
        ):
            writer.add(page)
        raw = writer.commit()
    timings["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean = transform_snapshot(store, raw)
    timings["transform"] = time.perf_counter() - t0
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    stats = []
    for name in ("load", "load_rerun"):
        t0 = time.perf_counter()
        loaded = load_day(
            engine,
            tables,
            day,
            "bench-plain",
            iter_tables(store, clean.manifest["sales_parts"]),
            iter_tables(store, clean.manifest["rejected_parts"]),
        )
        timings[name] = time.perf_counter() - t0
        stats.append(loaded.__dict__)
    engine.dispose()
    _emit(
        {
            "job": "plain",
            "timings": timings,
            "records": raw.manifest["records"],
            "clean": clean.manifest["clean"],
            "load_stats": stats,
            "clean_parts": [os.path.join(args["lake"], k) for k in clean.manifest["sales_parts"]],
        }
    )


def job_transform(args: dict[str, Any]) -> None:
    import shutil

    from flows.runners import RunnerChoice
    from sales_etl.lake import open_lake
    from sales_etl.part_workers import shared_part_workers
    from sales_etl.settings import LakeConfig
    from sales_etl.snapshots import find_snapshot, snapshot_prefix
    from sales_etl.transform import DEFAULT_CHUNK_RECORDS, commit_clean_snapshot, plan_parts

    day = date.fromisoformat(args["day"])
    prefix = snapshot_prefix("raw", day, args["snapshot_id"])
    lake = LakeConfig(url=os.path.join(args["work"], "lake-transform"))
    shutil.rmtree(lake.url, ignore_errors=True)
    shutil.copytree(os.path.join(args["lake"], prefix), os.path.join(lake.url, prefix))
    store = open_lake(lake)
    raw = find_snapshot(store, "raw", day, args["snapshot_id"])
    if raw is None:
        raise SystemExit(f"no raw snapshot {args['snapshot_id']} in {args['lake']}")
    parts = plan_parts(store, raw)
    workers = shared_part_workers(RunnerChoice("auto").for_parts(len(parts)).part_processes or 1)
    workers.started()  # as in the flow, where they start while the source is asked
    t0 = time.perf_counter()
    futures = [workers.submit(lake, part, DEFAULT_CHUNK_RECORDS) for part in parts]
    clean = commit_clean_snapshot(store, raw, [workers.wait(f) for f in futures])
    seconds = time.perf_counter() - t0
    _emit(
        {
            "job": "transform",
            "wall_s": seconds,
            "records": raw.manifest["records"],
            "clean": clean.manifest["clean"],
            "workers": workers.workers,
        }
    )


CREATE_SALES = """
DROP TABLE IF EXISTS {name};
CREATE TABLE {name} (
    sale_id text PRIMARY KEY, sale_date timestamptz NOT NULL, store_id text NOT NULL,
    product_id text NOT NULL, customer_id text, quantity integer NOT NULL,
    unit_price numeric(18,4) NOT NULL, amount numeric(18,4) NOT NULL, currency text NOT NULL,
    updated_at timestamptz NOT NULL, extra jsonb
)
"""


def clean_parts(lake: str, day: str, snapshot_id: str) -> list[str]:
    """The valid-row parts of a clean snapshot (its manifest's list, else the files by name)."""
    folder = os.path.join(lake, "clean", "sales", f"date={day}", f"snapshot={snapshot_id}")
    manifest = os.path.join(folder, "_manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as handle:
            keys = json.load(handle).get("sales_parts")
        if keys:
            return [os.path.join(lake, key) for key in keys]
    return sorted(glob.glob(os.path.join(folder, "sales-*.parquet")))


def newest_per_sale(table: Any) -> Any:
    """One row per sale_id: the newest updated_at, then the latest record_index."""
    import pyarrow.compute as pc

    ordered = table.sort_by(
        [("sale_id", "ascending"), ("updated_at", "descending"), ("record_index", "descending")]
    )
    ids = ordered.column("sale_id").combine_chunks()
    if len(ids) < 2:
        return ordered
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).fill_null(True)
    import pyarrow as pa

    keep = pa.concat_arrays([pa.array([True]), first])
    return ordered.filter(keep)


def _floor_table(args: dict[str, Any]) -> Any:
    """The valid rows of the flow's first run, one per sale_id (what the load must write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = args.get("parts") or clean_parts(args["lake"], args["day"], args["snapshot_id"])
    if not parts:
        raise SystemExit(f"no clean parts of snapshot {args.get('snapshot_id')} in {args['lake']}")
    table = pa.concat_tables([pq.read_table(path) for path in parts])
    return newest_per_sale(table).drop_columns(["record_index"])


def _clean_table(args: dict[str, Any]) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(args["clean_file"])


def _execute(url: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(_sync_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


def job_psql_copy(args: dict[str, Any]) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = _floor_table(args)
    pq.write_table(table, args["clean_file"])
    path = os.path.join(args["work"], "sales.csv")
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=False))
    rows = table.num_rows
    del table
    walls = sorted(_psql_copy(args["warehouse_url"], path) for _ in range(FLOOR_RUNS))
    _emit(
        {
            "job": "psql_copy",
            "wall_s": walls[len(walls) // 2],  # the median: one copy varies by +-20% here
            "walls_s": walls,
            "rows": rows,
            "clean_file": args["clean_file"],
            # psql's own peak is not measurable here: ru_maxrss of children counts the pages
            # of this (large) Python process that psql inherited at fork time.
            "peak_rss_mb": None,
        }
    )


FLOOR_RUNS = 3


def _psql_copy(url: str, path: str) -> float:
    """Seconds of one ``psql \\copy`` of the CSV file at ``path`` into a new keyed table."""
    _execute(url, CREATE_SALES.format(name="sales_psql_copy"))
    t0 = time.perf_counter()
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            f"\\copy sales_psql_copy FROM '{path}' WITH (FORMAT csv)",
        ],
        check=True,
    )
    return time.perf_counter() - t0


def job_to_sql(args: dict[str, Any]) -> None:
    import sqlalchemy as sa

    frame = _clean_table(args).to_pandas()
    _execute(args["warehouse_url"], CREATE_SALES.format(name="sales_to_sql"))
    engine = sa.create_engine(_sync_url(args["warehouse_url"]))
    t0 = time.perf_counter()
    frame.to_sql("sales_to_sql", engine, if_exists="append", index=False)
    wall = time.perf_counter() - t0
    engine.dispose()
    _emit({"job": "to_sql", "wall_s": wall, "rows": len(frame)})


def _with_password(url: str) -> str:
    """dlt insists on a password; a trust-auth server ignores whatever is given."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.password is None:
        parsed = parsed.set(password="unused-with-trust-auth")
    return parsed.render_as_string(hide_password=False)


def _dlt_pipeline(args: dict[str, Any], name: str) -> Any:
    import dlt

    os.environ["DLT_DATA_DIR"] = os.path.join(args["work"], "dlt-data")
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    return dlt.pipeline(
        pipeline_name=name,
        pipelines_dir=os.path.join(args["work"], "dlt-pipelines"),
        destination=dlt.destinations.postgres(credentials=_with_password(args["warehouse_url"])),
        dataset_name=name,
        progress="log" if args.get("verbose") else None,
    )


def job_dlt_arrow(args: dict[str, Any]) -> None:
    table = _clean_table(args)
    pipeline = _dlt_pipeline(args, "bench_dlt_arrow")
    t0 = time.perf_counter()
    info = pipeline.run(
        table, table_name="sales", loader_file_format="csv", write_disposition="append"
    )
    wall = time.perf_counter() - t0
    info.raise_on_failed_jobs()
    _emit({"job": "dlt_arrow", "wall_s": wall, "rows": table.num_rows})


def job_dlt_rest_api(args: dict[str, Any]) -> None:
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {"base_url": args["api_url"]},
            "resources": [
                {
                    "name": "sales",
                    "primary_key": "sale_id",
                    "write_disposition": "merge",
                    "endpoint": {
                        "path": "sales",
                        "params": {"date": args["day"], "limit": args["page_size"]},
                        "data_selector": "data",
                        "paginator": {
                            "type": "cursor",
                            "cursor_path": "next_cursor",
                            "cursor_param": "cursor",
                        },
                    },
                }
            ],
        }
    )
    pipeline = _dlt_pipeline(args, "bench_dlt_rest_api")
    t0 = time.perf_counter()
    info = pipeline.run(source)
    wall = time.perf_counter() - t0
    info.raise_on_failed_jobs()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get("sales", 0)
    _emit({"job": "dlt_rest_api", "wall_s": wall, "rows": rows})


JOBS = {
    "flow": job_flow,
    "plain": job_plain,
    "transform": job_transform,
    "psql_copy": job_psql_copy,
    "to_sql": job_to_sql,
    "dlt_arrow": job_dlt_arrow,
    "dlt_rest_api": job_dlt_rest_api,
}


if __name__ == "__main__":
    JOBS[sys.argv[1]](json.loads(sys.argv[2]))
