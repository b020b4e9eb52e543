"""Helpers of the reliability suite: real services, subprocess runs, exact table comparisons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from devharness.demo_api import DemoData
from sales_etl.validate import FIELDS
from tests import postgres
from tests.conftest import run_env

DAY = date(2026, 11, 23)
APP = "daily-sales-etl"  # the application_name the warehouse engine connects with
# A day big enough to have updates, duplicates and rejects of every kind, small enough to be quick.
DATA = DemoData(rows_per_day=1200, malformed_every=37, update_every=25)
REPO = Path(__file__).resolve().parents[2]

SALES_COLUMNS = FIELDS
REJECT_COLUMNS = ("business_date", "record_hash", "sale_id", "reason", "detail", "raw_record")


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    return None


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness: None) -> str:
    """The harness API, so subprocess runs do not each start their own Prefect server."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness has no API URL"
    return str(url)


@pytest.fixture
def new_database(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """A factory of extra fresh databases (dropped after the test)."""
    made: list[str] = []

    def make() -> str:
        name = f"etl_rel_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return postgres.create_database(pg_admin_url, name)

    yield make
    for name in made:
        postgres.drop_database(pg_admin_url, name)


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


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
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
    tmp: Path, name: str, env: dict[str, str], prefect_api_url: str, *args: str
) -> FlowProcess:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    full_env = run_env(**env, PREFECT_API_URL=prefect_api_url, PYTHONPATH=str(REPO))
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.daily_sales", "--date", DAY.isoformat(), *args],
            cwd=tmp,
            env=full_env,
            stdout=o,
            stderr=e,
        )
    return FlowProcess(proc, out, err)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, proc: Any = None) -> Any:
    """Poll until ``predicate`` is truthy; fail with ``what`` (and the process output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"the flow ended ({proc.proc.returncode}) before {what}:\n{proc.stderr}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


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


def etl_backends(admin: sa.Engine, database: str) -> list[int]:
    with admin.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :app AND datname = :db"
            ),
            {"app": APP, "db": database},
        ).all()
    return [int(r[0]) for r in rows]


def admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def database_name(url: str) -> str:
    return str(sa.make_url(url).database)


@dataclass(frozen=True)
class WarehouseContents:
    """Everything a load leaves behind, minus the run's own bookkeeping (run id, timestamps)."""

    sales: list[tuple[Any, ...]]
    rejected: list[tuple[Any, ...]]
    occurrences: dict[str, int]


def contents(url: str) -> WarehouseContents:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            sales = conn.execute(
                sa.text(f"SELECT {', '.join(SALES_COLUMNS)} FROM sales ORDER BY sale_id")
            ).all()
            rejected = conn.execute(
                sa.text(
                    f"SELECT {', '.join(REJECT_COLUMNS)} FROM sales_rejected "
                    "ORDER BY business_date, record_hash"
                )
            ).all()
            occurrences = conn.execute(
                sa.text("SELECT record_hash, occurrences FROM sales_rejected")
            ).all()
    finally:
        engine.dispose()
    return WarehouseContents(
        [tuple(r) for r in sales], [tuple(r) for r in rejected], {h: n for h, n in occurrences}
    )


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_only_the_failure_recorded(url: str) -> None:
    """A failed run writes no sale and no reject: only its ``failed`` row in the load ledger."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            counts = {
                table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("sales", "sales_rejected")
            }
            ledger = conn.execute(sa.text("SELECT status FROM sales_load_ledger")).scalars().all()
    finally:
        engine.dispose()
    assert (counts, ledger) == ({"sales": 0, "sales_rejected": 0}, ["failed"])


def row_counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            sales = conn.execute(sa.text("SELECT count(*) FROM sales")).scalar_one()
            rejected = conn.execute(sa.text("SELECT count(*) FROM sales_rejected")).scalar_one()
    finally:
        engine.dispose()
    return int(sales), int(rejected)


def manifests(lake_root: Path, zone: str = "raw") -> list[Path]:
    return sorted(lake_root.glob(f"{zone}/sales/date=*/snapshot=*/_manifest.json"))


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


@pytest.fixture(scope="session")
def reference(
    prefect_harness: None, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> WarehouseContents:
    """What one clean, fault-free run of :data:`DATA` leaves in the warehouse."""
    from devharness.demo_api import serve_demo_api
    from flows.daily_sales import daily_sales

    name = f"etl_ref_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(pg_admin_url, name)
    lake = tmp_path_factory.mktemp("reference-lake")
    try:
        with serve_demo_api(DATA) as api, pytest.MonkeyPatch.context() as mp:
            set_env(mp, pipeline_env(api.url, str(lake), url))
            state = daily_sales(run_date=DAY, return_state=True)
        assert state.is_completed(), state.message
        result = contents(url)
    finally:
        postgres.drop_database(pg_admin_url, name)
    # Sanity of the reference itself: updates, rejects with and without sale_id.
    assert len(result.sales) > 1000 and len(result.rejected) > 20
    return result


def expected_sales_ids(data: DemoData = DATA, day: date = DAY) -> tuple[set[str], set[str]]:
    """An oracle independent of the loader: (ids that end in sales, ids that end rejected).

    Every version of a sale_id competes; the newest updated_at wins, then the latest arrival.
    """
    import json

    from sales_etl import jsontext
    from sales_etl.validate import validate_records

    records = [data.generated(day.isoformat(), i) for i in range(data.count(day.isoformat()))]
    parsed = jsontext.loads(json.dumps(records))
    result = validate_records(parsed, day)
    import pandas as pd

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
