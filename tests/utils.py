"""Helpers and constants shared by the test modules: one definition of each.

Fixtures live in the ``conftest.py`` files; everything a test module imports lives here (no test
module imports another test module, a conftest or the benchmarks). Sections: constants; reading
the warehouse (``query`` for SQL, ``table_rows`` the one reader of a table's rows); polling;
subprocess runs of the pipeline; stopping the CLI; records and hypothesis strategies; a real
Prefect server; Docker and Kubernetes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import strategies as st

from devharness.demo_api import DemoData, generate_record
from sales_etl import jsontext
from sales_etl.validate import FIELDS, validate_records
from tests import postgres

# --- constants ---------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# The business day most tests load, as a date and as the CLI and the demo API spell it.
DAY = date(2026, 11, 23)
DAY_TEXT = DAY.isoformat()
# Recognisable secrets: tests assert they never leak.
API_KEY = "sk-live-SECRET-api-key-7f3a9c"
DB_PASSWORD = "pw-SECRET-db-9d2e1b"
# The pipeline settings no test may inherit from the developer's environment.
ENV_VARS = (
    "SALES_API_URL",
    "SALES_API_KEY",
    "DATA_LAKE_URL",
    "WAREHOUSE_URL",
    "WAREHOUSE_SCHEMA",
    "AWS_ENDPOINT_URL",
    "LAKE_KEEP_SNAPSHOTS",
)
KUBERNETES_VERSION = "1.31.0"  # the cluster version the manifests are checked against
APP = "daily-sales-etl"  # the application_name the warehouse engine connects with
# The columns a run stamps with its own id and time: two loads of one day differ only there.
PER_RUN_COLUMNS = frozenset({"run_id", "loaded_at", "rejected_at"})
REJECT_COLUMNS = ("business_date", "record_hash", "sale_id", "reason", "detail", "raw_record")
# The reliability suite's day: big enough to have updates, duplicates and rejects of every kind,
# small enough to be quick (the ``reference`` fixture is one clean run of it).
REFERENCE_DATA = DemoData(rows_per_day=1200, malformed_every=37, update_every=25)
# The advisory lock the load of DAY takes first (sales_etl.warehouse).
DAY_LOCK = f"SELECT pg_advisory_xact_lock(hashtext('daily_sales_etl:public.sales:{DAY}'))"


# --- reading the warehouse ---------------------------------------------------------------------


def query(url: str, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` (committed) on the database at ``url``; its rows as tuples, if any."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def table_rows(
    url: str,
    table: str,
    columns: Sequence[str] = (),
    *,
    order_by: Sequence[str] = (),
    exclude: Collection[str] = (),
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` (``schema.table`` allowed): the one way tests read a table's state.

    ``columns`` (default: every column but ``exclude``, in table order), ordered by the
    ``order_by`` columns, or else sorted by their ``repr`` (a stable order for any column type).
    """
    schema, _, name = table.rpartition(".")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            reflected = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
            picked = (
                [reflected.c[column] for column in columns]
                if columns
                else [column for column in reflected.c if column.name not in exclude]
            )
            ordered = sa.select(*picked).order_by(*(reflected.c[c] for c in order_by))
            rows = [tuple(row) for row in conn.execute(ordered)]
    finally:
        engine.dispose()
    return rows if order_by else sorted(rows, key=repr)


def row_counts(url: str) -> tuple[int, int]:
    """(rows in ``sales``, rows in ``sales_rejected``)."""
    sales = table_rows(url, "sales", ["sale_id"])
    return len(sales), len(table_rows(url, "sales_rejected", ["record_hash"]))


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@dataclass(frozen=True)
class WarehouseContents:
    """Everything a load leaves behind, minus the run's own bookkeeping (run id, timestamps)."""

    sales: list[tuple[Any, ...]]
    rejected: list[tuple[Any, ...]]
    occurrences: dict[str, int]


def contents(url: str, table: str = "sales") -> WarehouseContents:
    """The business columns of ``table`` (the contract's fields and ``extra``) and
    ``<table>_rejected``, in key order."""
    rejected = table_rows(
        url,
        f"{table}_rejected",
        [*REJECT_COLUMNS, "occurrences"],
        order_by=["business_date", "record_hash"],
    )
    return WarehouseContents(
        sales=table_rows(url, table, [*FIELDS, "extra"], order_by=["sale_id"]),
        rejected=[row[:-1] for row in rejected],
        occurrences={row[1]: row[-1] for row in rejected},
    )


def table_contents(
    url: str, exclude: Collection[str] = PER_RUN_COLUMNS
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``sales`` and ``sales_rejected`` without the ``exclude`` columns (default:
    the per-run ones), sorted.

    Two loads of one day compare equal exactly when they left the same business data; with
    ``exclude=()``, exactly when the second load touched no row.
    """
    return {t: table_rows(url, t, exclude=exclude) for t in ("sales", "sales_rejected")}


def ledger_rows(url: str) -> list[tuple[str, str]]:
    """(status, message) of the load ledger, oldest first."""
    rows = table_rows(url, "sales_load_ledger", ["status", "message"], order_by=["finished_at"])
    return [(str(status), str(message)) for status, message in rows]


def assert_only_the_failure_recorded(url: str) -> None:
    """A failed run writes no sale and no reject: only its ``failed`` row in the load ledger."""
    ledger = [status for status, _ in ledger_rows(url)]
    assert (row_counts(url), ledger) == ((0, 0), ["failed"])


def loaded_rows(warehouse_url: str, flow_run_id: str) -> list[tuple[Any, int]]:
    """(UTC business day, row count) of the sales rows a flow run wrote."""
    rows = query(
        warehouse_url,
        "SELECT (sale_date AT TIME ZONE 'UTC')::date AS day, count(*) FROM sales "
        "WHERE run_id = :run_id GROUP BY 1 ORDER BY 1",
        {"run_id": flow_run_id},
    )
    return [(row[0], int(row[1])) for row in rows]


def create_tables(url: str) -> None:
    """The pipeline's tables, empty, in the database at ``url``."""
    from pydantic import SecretStr

    from sales_etl.settings import WarehouseConfig
    from sales_etl.warehouse import create_warehouse_engine, ensure_tables, tables_for

    config = WarehouseConfig(url=SecretStr(url))
    engine = create_warehouse_engine(config)
    try:
        ensure_tables(engine, tables_for(config))
    finally:
        engine.dispose()


def admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def database_name(url: str) -> str:
    return str(sa.make_url(url).database)


def etl_backends(admin: sa.Engine, database: str) -> list[int]:
    """Pids of the pipeline's backends in ``database``."""
    with admin.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :app AND datname = :db"
            ),
            {"app": APP, "db": database},
        ).all()
    return [int(r[0]) for r in rows]


def blocked_etl_backends(admin: sa.Engine, database: str, query_like: str) -> list[int]:
    """Pids of the pipeline's backends in ``database`` waiting on a lock in a matching query."""
    with admin.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
                "AND datname = :db AND wait_event_type = 'Lock' AND query ILIKE :q"
            ),
            {"app": APP, "db": database, "q": query_like},
        ).all()
    return [int(r[0]) for r in rows]


@contextmanager
def holding(url: str, *statements: str) -> Iterator[sa.Connection]:
    """Run statements (locks) in an open transaction for the duration of the block."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            for statement in statements:
                conn.execute(sa.text(statement))
            try:
                yield conn
            finally:
                trans.rollback()
    finally:
        engine.dispose()


@contextmanager
def password_database(admin_url: str) -> Iterator[str]:
    """A fresh database and a role with a (recognisable) password; dropped on exit."""
    role = f"etl_{uuid.uuid4().hex[:8]}"
    name = f"etl_pw_{uuid.uuid4().hex[:8]}"
    query(admin_url, f"CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}'")
    database = postgres.create_database(admin_url, name)
    query(database, f"GRANT ALL ON SCHEMA public TO {role}")
    url = sa.make_url(admin_url).set(database=name, username=role, password=DB_PASSWORD)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        postgres.drop_database(admin_url, name)
        query(admin_url, f"DROP ROLE IF EXISTS {role}")


def manifests(lake_root: Path, zone: str = "raw") -> list[Path]:
    """The committed snapshots' manifests of a local lake."""
    return sorted(lake_root.glob(f"{zone}/sales/date=*/snapshot=*/_manifest.json"))


# --- polling -----------------------------------------------------------------------------------


class Watched(Protocol):
    """A running pipeline process whose end stops a wait early (with its stderr)."""

    proc: subprocess.Popen[bytes]

    @property
    def stderr(self) -> str: ...


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    process: Watched | None = None,
    interval: float = 0.1,
) -> Any:
    """Poll ``condition`` until it returns something truthy, which is returned; fail with
    ``what`` on timeout, or as soon as ``process`` (if given) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.proc.poll() is not None:
            code = process.proc.returncode
            pytest.fail(f"the flow ended ({code}) before {what}:\n{process.stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- subprocess runs of the pipeline -----------------------------------------------------------


def run_env(**overrides: str) -> dict[str, str]:
    """Environment for running the pipeline in a subprocess, with pipeline settings replaced."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    env.update(overrides)
    return env


def pipeline_env(api_url: str, lake: str, warehouse_url: str, **extra: str) -> dict[str, str]:
    """Settings of one pipeline run (the flow reads them from the environment)."""
    env = {
        "SALES_API_URL": api_url,
        "DATA_LAKE_URL": lake,
        "WAREHOUSE_URL": warehouse_url,
        "SALES_API_PAGE_SIZE": "200",
        "SALES_API_TIMEOUT_SECONDS": "5",
        "SALES_API_MAX_RETRIES": "5",
    }
    env.update(extra)
    return env


def set_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@dataclass
class FlowProcess:
    """``python -m flows.daily_sales`` in a subprocess, output captured to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start_flow(
    tmp: Path, name: str, env: Mapping[str, str], prefect_api_url: str, *args: str
) -> FlowProcess:
    """The CLI for :data:`DAY` on the Prefect API at ``prefect_api_url``."""
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    full_env = run_env(**env, PREFECT_API_URL=prefect_api_url, PYTHONPATH=str(REPO))
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.daily_sales", "--date", DAY_TEXT, *args],
            cwd=tmp,
            env=full_env,
            stdout=o,
            stderr=e,
        )
    return FlowProcess(proc, out, err)


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (a run and all it started, orphaned or
    not, whatever their session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def closed_port_url() -> str:
    """An http URL on which nothing listens (:func:`tests.postgres.refused_port`)."""
    return f"http://127.0.0.1:{postgres.refused_port()}"


def stop_process(
    process: subprocess.Popen[bytes], first: int = signal.SIGINT, grace: float = 20
) -> None:
    """Send ``first``; SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- stopping the CLI (tests/reliability) -----------------------------------------------------
#
# The CLI runs as a terminal would run it: in a process group of its own (the terminal's
# foreground group), without PREFECT_API_URL (Prefect starts its temporary API server). Ctrl-C is
# SIGINT to the whole group, SIGTERM goes to the CLI's process only (what `kill` and Kubernetes
# send). Every process the CLI starts inherits a marker in its environment, so the test finds
# them after the CLI is gone, orphaned or not.

STOP_LINE = "stopped: {cause} during the {stage}; "
CAUSES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
# Each stop test starts Prefect's temporary server in its CLI (10-20 s idle, minutes on a
# loaded box).
STOP_TIMEOUT = pytest.mark.timeout(900)
START_WAIT = 600  # seconds until the stage to stop is reached


@dataclass
class Cli:
    """``python -m flows.daily_sales`` in its own process group, Prefect in temporary mode."""

    proc: subprocess.Popen[bytes]
    marker: str
    err: Path

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def started(self) -> list[int]:
        """Live processes that carry this run's marker (the CLI and all it started)."""
        return marked_processes(self.marker)

    def stop(self, signum: int) -> float:
        """Send ``signum`` (SIGINT to the group, as a terminal; others to the process); returns
        the seconds until the CLI exited."""
        started = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(self.proc.pid, signum)
        else:
            os.kill(self.proc.pid, signum)
        self.proc.wait(timeout=120)
        return time.monotonic() - started


@contextmanager
def terminal_cli(tmp_path: Path, env: Mapping[str, str]) -> Iterator[Cli]:
    """The CLI for :data:`DAY` as a terminal starts it; every process it started is killed
    on exit."""
    marker = f"ETL_STOP_TEST_{uuid.uuid4().hex}"
    full_env = run_env(
        **env,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PYTHONPATH=str(REPO),
        ETL_STOP_TEST_MARKER=marker,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",  # a loaded 2-core box is slow
    )
    err = tmp_path / "cli.err"
    with err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.daily_sales", "--date", DAY_TEXT],
            cwd=tmp_path, env=full_env, stdout=subprocess.DEVNULL, stderr=e,
            start_new_session=True,
        )  # fmt: skip
    run = Cli(proc, marker, err)
    try:
        yield run
    finally:
        for pid in run.started():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)


def assert_nothing_left(run: Cli, within: float = 10) -> None:
    wait_for(lambda: not run.started(), timeout=within, what="no process of the run left")


def assert_stopped(run: Cli, signum: int, stage: str, url: str) -> None:
    """Exit code, the one stop line, the ledger's failed row, the tables untouched."""
    cause = CAUSES[signum]
    stderr = run.stderr
    assert run.proc.returncode == 128 + signum, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if " stopped: " in line]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(
        f"Daily Sales ETL {DAY} " + STOP_LINE.format(cause=cause, stage=stage)
    )
    assert lines[0].endswith("so a rerun is safe")
    assert_newest_ledger_row_is_the_stop(url, f"stopped: {cause} during the {stage}")
    assert row_counts(url) == (0, 0)


def assert_newest_ledger_row_is_the_stop(url: str, expected: str) -> None:
    """The stop is the day's newest ledger row; before it, at most the load's own failed row
    (the statement the stop cancelled), when the load recorded it before the stop unwound it."""
    rows = ledger_rows(url)
    assert rows[-1] == ("failed", expected), rows
    assert len(rows) <= 2 and all(status == "failed" for status, _ in rows), rows


@contextmanager
def blocked_load(
    pg_url: str, pg_admin_url: str, tmp_path: Path, api_url: str, **settings: str
) -> Iterator[tuple[Cli, sa.Engine, dict[str, str]]]:
    """The CLI of :data:`DAY` (lake in ``tmp_path``) once its load waits for the sales table,
    which the test holds locked until the block ends: (the run, an admin engine, its env).
    Every process the CLI started is killed at the end; the lock goes after it."""
    create_tables(pg_url)
    admin = admin_engine(pg_admin_url)
    env = pipeline_env(api_url, str(tmp_path / "lake"), pg_url, **settings)
    with (
        holding(pg_url, "LOCK TABLE sales IN EXCLUSIVE MODE"),
        terminal_cli(tmp_path, env) as run,
    ):
        wait_for_the_blocked_load(admin, pg_url, run)
        yield run, admin, env


def wait_for_the_blocked_load(admin: sa.Engine, url: str, run: Cli) -> None:
    """Until the CLI's load waits for the table the test holds locked."""
    wait_for(
        lambda: blocked_etl_backends(admin, database_name(url), "COPY %sales (%"),
        START_WAIT,
        "the load to wait for the locked table",
        run,
    )


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path, module: str = "flows.daily_sales"
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> ARGS`` to the end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def rerun(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Any:
    """The flow for :data:`DAY` in this process with ``env``; it must complete."""
    from flows.daily_sales import daily_sales

    set_env(monkeypatch, env)
    state = daily_sales(run_date=DAY, return_state=True)
    assert state.is_completed(), state.message
    return state


def pool_workers_of(pid: int) -> list[int]:
    """The process pool's workers (multiprocessing ``spawn`` children) of process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


# --- records -----------------------------------------------------------------------------------


def demo_records(count: int, first: int = 0, version: int = 1) -> list[Any]:
    """Demo API records of :data:`DAY` as the pipeline parses them (numbers kept as JSON text)."""
    records = [generate_record(DAY_TEXT, i, version) for i in range(first, first + count)]
    return list(jsontext.loads(json.dumps(records)))


def clean_sales(count: int, first: int = 0, version: int = 1) -> Any:
    """``count`` valid demo sales of :data:`DAY`, validated like the pipeline does."""
    result = validate_records(demo_records(count, first, version), DAY)
    assert len(result.rejected) == 0
    return result.clean


def sale_record(**changes: Any) -> dict[str, Any]:
    """A valid record as the API sends it, parsed the way the pipeline parses it (a change to
    ``...`` drops the field)."""
    base: dict[str, Any] = {
        "sale_id": "S-1",
        "sale_date": "2026-11-23T14:05:09+01:00",
        "store_id": "store-1",
        "product_id": "prod-1",
        "customer_id": "cust-1",
        "quantity": 2,
        "unit_price": "9.99",
        "amount": 19.98,
        "currency": "EUR",
        "updated_at": "2026-11-23T15:00:00Z",
    }
    base.update(changes)
    result: dict[str, Any] = jsontext.loads(
        json.dumps({k: v for k, v in base.items() if v is not ...})
    )
    return result


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["2026-11-23T10:00:00Z", "NaN", "'; DROP TABLE sales; --", "\u0000"])
)
json_like = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@st.composite
def mangled_records(draw: st.DrawFn) -> Any:
    """A valid :func:`sale_record` with any fields replaced by arbitrary JSON, dropped or added
    (one in ten is not an object at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_like)
    valid = sale_record()
    for name in FIELDS:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            valid[name] = draw(_scalars | json_like)
        elif choice == 1 and draw(st.booleans()):
            del valid[name]
    if draw(st.booleans()):
        valid[draw(st.text(max_size=8))] = draw(json_like)
    return valid


SQLISH = [
    "'; DROP TABLE sales; --",
    "Robert'); DROP TABLE sales_rejected;--",
    "1' OR '1'='1",
    "$$; SELECT pg_sleep(30); $$",
    "\\.",
    "E'\\\\x00'; COPY sales TO PROGRAM 'id'",
    '","x"\n\\.\n',
]
ABSURD_DATES = [
    "0000-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59+14:00",
    "2026-02-30T10:00:00Z",
    "2026-11-23T25:61:00Z",
    "2026-11-23T12:00:00",
    "-2026-11-23T12:00:00Z",
    "2026-11-23T12:00:00+99:99",
    "1969-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
]
_hostile_ids = st.sampled_from([f"S-{i}" for i in range(8)] + SQLISH[:4])
_huge = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["x", "'", "\\", "\x00", "é"]),
    st.integers(0, 300_000),
)
_texts = st.one_of(st.text(max_size=40), st.sampled_from(SQLISH), _huge)
_numbers = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324]),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12,50", "1e999999", " 7 ", "0x10", "NaN", "-0", "99999999999999.99999"]),
)
_dates = st.one_of(
    st.sampled_from(ABSURD_DATES),
    st.datetimes(
        min_value=datetime(2026, 11, 22), max_value=datetime(2026, 11, 24), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
)
hostile_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _texts, _dates),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def hostile_records(draw: st.DrawFn) -> Any:
    """A demo record of :data:`DAY` with a colliding or SQL-looking sale_id, an absurd or nearby
    updated_at and up to three hostile field values (huge text, NaN, 1e999999, nesting...)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_values)  # not an object at all
    record: dict[str, Any] = generate_record(DAY_TEXT, draw(st.integers(0, 10_000)))
    record["sale_id"] = draw(_hostile_ids)
    record["updated_at"] = draw(_dates)
    for field in draw(st.sets(st.sampled_from(FIELDS), max_size=3)):
        record[field] = draw(hostile_values)
    for field in draw(st.sets(st.sampled_from(FIELDS), max_size=1)):
        record.pop(field, None)
    record.update(draw(st.dictionaries(st.text(max_size=8), hostile_values, max_size=2)))
    return record


def expected_sales_ids(
    data: DemoData = REFERENCE_DATA, day: date = DAY
) -> tuple[set[str], set[str]]:
    """An oracle independent of the loader: (ids that end in sales, ids that end rejected).

    Every version of a sale_id competes; the newest updated_at wins, then the latest arrival.
    """
    import pandas as pd

    records = [data.generated(day.isoformat(), i) for i in range(data.count(day.isoformat()))]
    result = validate_records(jsontext.loads(json.dumps(records)), day)
    versions: dict[str, tuple[Any, int, bool]] = {}
    for frame, valid in ((result.clean, True), (result.rejected, False)):
        for sale_id, updated, index in zip(
            frame["sale_id"], frame["updated_at"], frame["record_index"], strict=True
        ):
            if pd.isna(sale_id):
                continue
            key = (None if pd.isna(updated) else updated, int(index))
            best = versions.get(str(sale_id))
            if best is None or _newer(key, best[:2]):
                versions[str(sale_id)] = (key[0], key[1], valid)
    sales = {k for k, v in versions.items() if v[2]}
    return sales, set(versions) - sales


def _newer(a: tuple[Any, int], b: tuple[Any, int]) -> bool:
    if a[0] is None and b[0] is None:
        return a[1] > b[1]
    if a[0] is None:
        return False
    if b[0] is None:
        return True
    return (a[0], a[1]) > (b[0], b[1])


# --- a real Prefect server ---------------------------------------------------------------------

SERVER_START_SECONDS = 120
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class RetryingClient(httpx.Client):
    """Retries 503/429 like Prefect's own client (a busy server may answer either)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        for attempt in range(6):
            response = super().send(request, **kwargs)
            if response.status_code not in (429, 503) or attempt == 5:
                return response
            response.close()
            time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class PrefectServer:
    url: str
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def client(self) -> httpx.Client:
        return RetryingClient(base_url=self.api_url, timeout=30)


@dataclass(frozen=True)
class Served:
    server: PrefectServer
    deployment: dict[str, Any]
    warehouse_url: str
    lake: Path
    log: Path

    @property
    def deployment_id(self) -> str:
        return str(self.deployment["id"])


def prefect_database_url(warehouse_url: str) -> str:
    """The same database for Prefect's server, through its async driver (asyncpg)."""
    url = sa.make_url(warehouse_url).set(drivername="postgresql+asyncpg")
    return str(url.render_as_string(hide_password=False))


@contextmanager
def running_prefect_server(
    pg_admin_url: str, start_timeout: float = SERVER_START_SECONDS
) -> Iterator[tuple[PrefectServer, subprocess.Popen[bytes]]]:
    """``prefect server start`` on a free loopback port, UI included, own PREFECT_HOME, in a
    session of its own (``os.killpg`` of its pid stops the server and its uvicorn child).

    Its database is a fresh one on the suite's PostgreSQL, as in production: on SQLite the
    server answers ``503 database is locked`` while it writes events, which the Python client
    retries but the UI shows as "Oops. Something went wrong." (seen in the browser tests when
    the machine was loaded).
    """
    from deployments.automations import late_start_server_env

    home = Path(tempfile.mkdtemp(prefix="etl-prefect-server-"))
    database = f"etl_prefect_{uuid.uuid4().hex[:12]}"
    database_url = prefect_database_url(postgres.create_database(pg_admin_url, database))
    port = postgres.free_port()
    url = f"http://127.0.0.1:{port}"
    env = run_env(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"{url}/api",
        # Let the scheduler fill the upcoming runs within seconds, not a minute.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        # As `make server`: a late run's expired window outlives the 5 s sweep (see
        # deployments/automations.py), or its freshness alert is lost.
        **late_start_server_env(),
    )
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home, start_new_session=True,
        )  # fmt: skip
    server = PrefectServer(url=url, home=home, log=log)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}:\n{log_tail(log)}")
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, start_timeout, "prefect server /api/health", interval=0.5)
        yield server, process
    finally:
        stop_process(process, signal.SIGTERM)
        postgres.drop_database(pg_admin_url, database)
        shutil.rmtree(home, ignore_errors=True)


def deployment_by_name(server: PrefectServer, name: str) -> dict[str, Any] | None:
    from deployments.common import FLOW_NAME

    with server.client() as client:
        response = client.get(f"/deployments/name/{quote(FLOW_NAME)}/{quote(name)}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def flow_run(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/flow_runs/{flow_run_id}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def flow_run_state(server: PrefectServer, flow_run_id: str) -> str:
    state: str = flow_run(server, flow_run_id)["state"]["type"]
    return state


def wait_for_final_state(server: PrefectServer, flow_run_id: str, timeout: float = 180) -> dict:
    def final() -> dict[str, Any] | None:
        run = flow_run(server, flow_run_id)
        return run if run["state"]["type"] in TERMINAL_STATES else None

    result: dict[str, Any] = wait_for(
        final, timeout, f"flow run {flow_run_id} to finish", interval=0.5
    )
    return result


def create_flow_run(
    server: PrefectServer,
    deployment_id: str,
    body: Mapping[str, Any] | None = None,
    **parameters: Any,
) -> dict:
    """POST /deployments/{id}/create_flow_run: what the UI's Run button sends (``body``, or
    ``{"parameters": parameters}``)."""
    payload = dict(body) if body is not None else {"parameters": parameters}
    with server.client() as client:
        response = client.post(f"/deployments/{deployment_id}/create_flow_run", json=payload)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def cancel_flow_run(server: PrefectServer, flow_run_id: str) -> None:
    """What the UI's Cancel does: propose CANCELLING; the worker stops the infrastructure."""
    with server.client() as client:
        response = client.post(
            f"/flow_runs/{flow_run_id}/set_state",
            json={"state": {"type": "CANCELLING", "name": "Cancelling"}},
        )
    response.raise_for_status()
    assert response.json()["status"] == "ACCEPT", response.json()


def summary_metrics(server: PrefectServer, flow_run_id: str) -> dict[str, Any]:
    """The run's ``daily-sales-summary`` table artifact as {metric: value} (+ its description)."""
    with server.client() as client:
        response = client.post(
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "type": {"any_": ["table"]}}
            },
        )
    response.raise_for_status()
    artifacts = [a for a in response.json() if a.get("key") == "daily-sales-summary"]
    assert len(artifacts) == 1, artifacts
    data = artifacts[0]["data"]
    rows = data if isinstance(data, list) else json.loads(data)
    metrics = {row["metric"]: row["value"] for row in rows}
    metrics["description"] = artifacts[0]["description"]
    return metrics


def deploy(server: PrefectServer, script: str, *args: str) -> dict[str, Any]:
    """``python -m deployments.<script> ARGS`` against ``server``; returns the deployment, its
    schedules paused."""
    env = run_env(PREFECT_API_URL=server.api_url)
    env.pop("ETL_BLOCKS", None)
    done = subprocess.run(
        [sys.executable, "-m", f"deployments.{script}", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    name = next(line for line in done.stdout.splitlines() if line.startswith("deployment "))
    deployment_name = name.split("/", 1)[1].split("'", 1)[0]
    deployment = deployment_by_name(server, deployment_name)
    assert deployment is not None
    pause_schedules(server, deployment)
    return deployment


def pause_schedules(server: PrefectServer, deployment: dict[str, Any]) -> None:
    """Only the runs a test creates may reach the worker: no hourly run on the full hour."""
    with server.client() as client:
        for schedule in deployment["schedules"]:
            client.patch(
                f"/deployments/{deployment['id']}/schedules/{schedule['id']}",
                json={"active": False},
            ).raise_for_status()
        response = client.post(
            "/flow_runs/filter",
            json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            },
        )
        response.raise_for_status()
        for run in response.json():
            if "auto-scheduled" in run["tags"]:
                client.delete(f"/flow_runs/{run['id']}").raise_for_status()


# --- Docker and Kubernetes (tests/infra) -------------------------------------------------------

IMAGE = os.environ.get("DAILY_SALES_IMAGE", "daily-sales-etl:0.1.0")
IN_CI = os.environ.get("CI", "").lower() == "true"
# A demo day: 200 sales, the flow's embedded demo API (SALES_API_URL unset in the runs).
INFRA_DAY = "2026-11-20"
SLOW_SECONDS = 60.0


def unavailable(reason: str) -> NoReturn:
    """Skip with a one-line reason; in CI, where .ci/run provisioned everything, fail."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=60)


def kubectl(*args: str, kubeconfig: str | None = None, check: bool = True, **kwargs: Any) -> str:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    done = subprocess.run(
        ["kubectl", *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def kubernetes_api_port(kubeconfig: str) -> tuple[str, str]:
    """Host and port of the API server of the current context in ``kubeconfig``."""
    from urllib.parse import urlsplit

    server = kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    parts = urlsplit(server)
    return parts.hostname or "127.0.0.1", str(parts.port or 443)


@dataclass(frozen=True)
class Worker:
    process: subprocess.Popen[bytes]
    log: Path


def start_worker(
    server: PrefectServer, pool: str, worker_type: str, home: Path, **env: str
) -> Worker:
    """``prefect worker start --pool POOL`` (the real CLI) polling every 2 seconds."""
    log = home / f"worker-{pool}.log"
    environment = run_env(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(home / "worker-home"),
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        **env,
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
             "--type", worker_type, "--name", f"test-{worker_type}-{uuid.uuid4().hex[:6]}"],
            env=environment, stdout=out, stderr=subprocess.STDOUT, cwd=home,
        )  # fmt: skip
    worker = Worker(process, log)

    def pool_exists() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the {worker_type} worker exited:\n{log_tail(log)}")
        with server.client() as client:
            return client.get(f"/work_pools/{pool}").status_code == 200

    wait_for(pool_exists, 120, f"work pool {pool!r}", interval=0.5)
    return worker


def stop_worker(worker: Worker) -> None:
    stop_process(worker.process, signal.SIGINT, grace=30)


# --- a loopback webhook receiver and the automations CLI (the deployment tests) ----------------


class Receiver(ThreadingHTTPServer):
    """A loopback HTTP server that keeps the JSON body of every POST (a webhook's calls)."""

    calls: list[dict[str, Any]]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.calls.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` on a free loopback port, serving in a thread until the block ends."""
    server = Receiver(("127.0.0.1", 0), _ReceiverHandler)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def automations_cli(server: PrefectServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m deployments.automations`` against ``server``."""
    env = run_env(PREFECT_API_URL=server.api_url)
    return subprocess.run(
        [sys.executable, "-m", "deployments.automations", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
