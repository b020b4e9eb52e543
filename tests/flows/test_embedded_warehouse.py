"""The default warehouse end to end: ``python -m flows.daily_sales`` with no WAREHOUSE_URL loads
the embedded PostgreSQL in ./.data/postgres, keeps it between runs and stops it afterwards."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devharness.demo_api import generate_record
from devharness.embedded_postgres import RELOCATED_ROOT, _alive, _postmaster, embedded_postgres
from flows.config import DEMO_DATA
from tests import postgres
from tests.utils import REPO, query, row_counts, run_env, table_rows

# The flow's own demo day (flows.config.DEMO_DATA), not tests.utils.DAY.
DEMO_DAY = date(2026, 11, 24)
# The flow's demo day: 5000 sales + 100 later updates, every 97th record malformed: 5049 valid
# records, 51 rejected, 100 superseded versions -> 4950 rows in sales, 50 in sales_rejected.
SALES, REJECTS = 4950, 50


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh folder with no .data (reachable by the server's user when we are root)."""
    with postgres.reachable_tmp_dir("etl-run-") as root:
        yield root


def cli(workdir: Path, api: str, day: date = DEMO_DAY) -> subprocess.Popen[str]:
    env = run_env(PREFECT_API_URL=api, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "flows.daily_sales", "--date", day.isoformat()],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str]) -> str:
    """The run's whole terminal output: logs (stderr, the summary among them) and stdout."""
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    (verdict,) = out.strip().splitlines()  # stdout: the verdict line only
    assert verdict.startswith("Daily Sales ETL ") and ": LOADED — this run (" in verdict, out
    assert " | day in the warehouse: " in verdict, out
    assert err.count("day in the warehouse: ") == 1, err  # the summary in the logs, once
    return err + out


def server_running(workdir: Path) -> bool:
    running = _postmaster(workdir / ".data" / "postgres" / "pgdata")
    return running is not None and _alive(running.pid)


def warehouse(workdir: Path) -> dict[str, Any]:
    with embedded_postgres(workdir / ".data" / "postgres") as server:
        amounts = dict(table_rows(server.url, "sales", ["sale_id", "amount"]))
        rejects = row_counts(server.url)[1]
        [(money_type,)] = query(
            server.url,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'sales'::regclass AND attname = 'amount'",
        )
    return {"amounts": amounts, "rejects": rejects, "money_type": money_type}


def expected_amount(sale_id: str) -> Decimal:
    """The demo generator's amount text of the version of ``sale_id`` that must win."""
    compact, number = sale_id.split("-")  # "20261124-000000042"
    day, i = f"{compact[:4]}-{compact[4:6]}-{compact[6:]}", int(number)
    updated = i % DEMO_DATA.update_every == 0  # the tail re-sends these, newer
    return Decimal(generate_record(day, i, version=2 if updated else 1)["amount"])


def summary_value(out: str, prefix: str) -> str:
    (line,) = [line.strip() for line in out.splitlines() if line.strip().startswith(prefix)]
    return line


def test_two_runs_load_the_embedded_postgres_then_change_nothing(
    workdir: Path, prefect_api_url: str
) -> None:
    first = finished(cli(workdir, prefect_api_url))
    assert not server_running(workdir), "the run left its server running"
    second = finished(cli(workdir, prefect_api_url))
    assert not server_running(workdir)

    for out in (first, second):
        assert "query it: " in out and "-m devharness.embedded_postgres psql" in out
        assert "data in .data/postgres" in out
    assert summary_value(first, "warehouse: 4950").startswith(
        "warehouse: 4950 inserted, 0 updated, 0 unchanged,"
    )
    assert summary_value(first, "warehouse: 4950").endswith(", 50 rejects kept")
    assert summary_value(second, "warehouse: 0").startswith("warehouse: 0 inserted, 0 updated,")
    loaded = warehouse(workdir)
    assert (len(loaded["amounts"]), loaded["rejects"]) == (SALES, REJECTS)
    assert loaded["money_type"] == "numeric(18,4)"
    assert loaded["amounts"] == {sale_id: expected_amount(sale_id) for sale_id in loaded["amounts"]}
    assert all(isinstance(v, Decimal) for v in loaded["amounts"].values())
    assert not (workdir / ".data" / "warehouse.db").exists()


def test_a_run_after_a_sigkilled_run_succeeds(workdir: Path, prefect_api_url: str) -> None:
    killed = cli(workdir, prefect_api_url)
    deadline = time.monotonic() + 180
    while not server_running(workdir):
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert server_running(workdir), "the server should outlive the killed run"

    out = finished(cli(workdir, prefect_api_url))
    assert f"Daily Sales ETL {DEMO_DAY}: LOADED" in out
    assert not server_running(workdir), "the adopted server was not stopped"
    loaded = warehouse(workdir)
    assert (len(loaded["amounts"]), loaded["rejects"]) == (SALES, REJECTS)


def test_two_concurrent_runs_share_the_server(workdir: Path, prefect_api_url: str) -> None:
    other_day = date(2026, 11, 23)
    runs = [cli(workdir, prefect_api_url, DEMO_DAY), cli(workdir, prefect_api_url, other_day)]
    outs = [finished(run) for run in runs]
    for out, day in zip(outs, (DEMO_DAY, other_day), strict=True):
        line = summary_value(out, "warehouse: 4950")
        assert line.startswith("warehouse: 4950 inserted, 0 updated, 0 unchanged,"), day
        assert line.endswith(", 50 rejects kept"), day
    assert not server_running(workdir)
    loaded = warehouse(workdir)
    assert (len(loaded["amounts"]), loaded["rejects"]) == (2 * SALES, 2 * REJECTS)


def relocated_home(data_dir: Path) -> Path:
    """Where the cluster of ``data_dir`` lives when root's server user cannot enter it."""
    digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:16]
    return RELOCATED_ROOT / digest


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_in_a_private_folder_two_runs_load_then_change_nothing(
    prefect_api_url: str,
) -> None:
    """A clone inside a ``mktemp -d`` folder (mode 0700) as root: the runs work, the second
    loads nothing new, the folder keeps its mode, the data stays between runs."""
    private = Path(tempfile.mkdtemp(prefix="etl-private-"))
    workdir = private / "clone"
    workdir.mkdir()
    home = relocated_home(workdir / ".data" / "postgres")
    try:
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        first = finished(cli(workdir, prefect_api_url))
        second = finished(cli(workdir, prefect_api_url))
        assert not server_running(workdir)
        verdict = second.strip().splitlines()[-1]
        assert ": LOADED — this run (increment): " in verdict, verdict
        assert "; 0 inserted, 0 updated, " in verdict, verdict
        assert f"| day in the warehouse: {SALES} sales, amount " in verdict, verdict
        assert summary_value(first, "warehouse: 4950").startswith("warehouse: 4950 inserted, ")
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # never chmodded
        link = workdir / ".data" / "postgres" / "pgdata"
        assert link.is_symlink() and link.resolve() == home / "pgdata"
        loaded = warehouse(workdir)
        assert (len(loaded["amounts"]), loaded["rejects"]) == (SALES, REJECTS)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
