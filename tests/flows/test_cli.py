"""``python -m flows.daily_sales`` as a user runs it: exit codes, output, no secrets, and the
errors no retry can fix refused at once with one line that names the setting."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from devharness.demo_api import DemoData, Faults, serve_demo_api
from flows.cli import BACKFILL_MODES, BLOCK_TYPES, parse_args, parse_backfill_args
from flows.config import BLOCK_PARAMETERS
from sales_etl import ledger
from tests.postgres import refused_port
from tests.utils import (
    API_KEY,
    DAY_TEXT,
    DB_PASSWORD,
    REPO,
    closed_port_url,
    row_counts,
    run_cli,
    run_env,
    table_rows,
)

DATA = DemoData(rows_per_day=120, malformed_every=10)


def failure_line(result: subprocess.CompletedProcess[str], label: str) -> str:
    """The run's one failure line: exit 1, exactly one ``<label> failed:`` line, no traceback
    on the terminal (it is in the run's log in the API)."""
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(f"{label} failed: ")]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return line.removeprefix(f"{label} failed: ")


def test_help_explains_every_option(tmp_path: Path) -> None:
    result = run_cli("--help", env=run_env(), cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "--date",
        "--refresh",
        "--allow-future",
        "SALES_API_URL",
        "WAREHOUSE_URL",
        "DATA_LAKE_URL",
    ):
        assert option in result.stdout


def test_the_light_option_lists_match_the_flows() -> None:
    assert BACKFILL_MODES == ledger.BACKFILL_MODES
    assert {name: cls._block_type_name for name, cls in BLOCK_PARAMETERS.items()} == BLOCK_TYPES


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--date", "23/11/2026"], "argument --date: not a date (YYYY-MM-DD): '23/11/2026'"),
        (["--date", "0001-01-01"], "--date 0001-01-01 is outside the sane window 2000-01-01.."),
        (["--date", "9999-12-31"], "--date 9999-12-31 is outside the sane window 2000-01-01.."),
        (["--date", "2030-01-01"], "--date 2030-01-01 is outside the sane window"),
    ],
)
def test_bad_dates_are_usage_errors_before_prefect_is_imported(
    tmp_path: Path, args: list[str], says: str
) -> None:
    # A `prefect` package that cannot be imported: the refusal must not need it.
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "__init__.py").write_text("raise ImportError('imported Prefect')\n")
    env = run_env(PYTHONPATH=f"{tmp_path}:{REPO}")
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"python -m flows.daily_sales: error: {says}")
    assert "imported Prefect" not in result.stderr


def test_a_future_day_is_refused_unless_allowed() -> None:
    today = date(2026, 12, 3)
    with pytest.raises(SystemExit) as refused:
        parse_args(["--date", "2026-12-04"], today=today)
    assert refused.value.code == 2
    assert parse_args(["--date", "2026-12-04", "--allow-future"], today=today).allow_future
    assert parse_args(["--date", "2026-12-03"], today=today).date == today  # today is fine
    with pytest.raises(SystemExit):  # the sane window holds even with --allow-future
        parse_args(["--date", "2028-01-01", "--allow-future"], today=today)


def test_a_future_day_says_how_to_allow_it(tmp_path: Path) -> None:
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    result = run_cli("--date", tomorrow, env=run_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "the source has no complete data for it yet; --allow-future loads it anyway"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--start", "2026-11-22", "--end", "2026-11-20"], "--start 2026-11-22 is after --end"),
        (["--start", "0001-01-01", "--end", "2026-11-20"], "--start 0001-01-01 is outside"),
        (["--start", "2026-11-20", "--end", "9999-12-31"], "--end 9999-12-31 is outside"),
        (["--start", "2026-11-20", "--end", "2026-12-04"], "--end 2026-12-04 is in the future"),
        (["--start", "2026-11-20", "--end", "2026-11-22", "--max-parallel", "0"], "--max-par"),
    ],
)
def test_backfill_options_are_checked_before_any_run(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_backfill_args(args, today=date(2026, 12, 3))
    assert refused.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(f"python -m flows.backfill: error: {says}")
    )


def test_backfill_start_after_end_is_refused_before_prefect_starts(tmp_path: Path) -> None:
    result = run_cli(
        "--start", "2026-11-22", "--end", "2026-11-20", env=run_env(), cwd=tmp_path,
        module="flows.backfill",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m flows.backfill: error: --start 2026-11-22 is after --end 2026-11-20"
    )
    assert "prefect" not in result.stderr.lower()


@pytest.mark.long
def test_run_with_secrets_succeeds_then_a_refused_port_fails_at_once_without_leaking_them(
    tmp_path: Path, pg_password_url: str, prefect_api_url: str
) -> None:
    env = run_env(
        PREFECT_API_URL=prefect_api_url,
        SALES_API_KEY=API_KEY,
        WAREHOUSE_URL=pg_password_url,
        DATA_LAKE_URL=str(tmp_path / "lake"),
    )
    refused = pg_password_url.replace(str(sa.make_url(pg_password_url).port), "1")
    with serve_demo_api(DATA, Faults(), api_key=API_KEY) as api:
        ok = run_cli("--date", DAY_TEXT, env={**env, "SALES_API_URL": api.url}, cwd=tmp_path)
        down = run_cli(
            "--date", "2026-11-24", env={**env, "SALES_API_URL": api.url, "WAREHOUSE_URL": refused},
            cwd=tmp_path,
        )  # fmt: skip
        fetched_by_down = len(api.sales_requests) - 1  # the first run fetched one page
    assert ok.returncode == 0, ok.stderr[-2000:]
    (verdict,) = ok.stdout.splitlines()
    assert verdict == (
        f"Daily Sales ETL {DAY_TEXT}: LOADED — this run (whole day): 120 records, 108 valid, "
        "12 rejected; 108 inserted, 0 updated, 0 unchanged, 0 voided | day in the warehouse: "
        f"108 sales, amount {verdict.rsplit('amount ', 1)[1]}"
    )
    assert "inserted" in ok.stderr
    reason = failure_line(down, "Daily Sales ETL 2026-11-24")
    assert reason.startswith("ConfigError: WAREHOUSE_URL (postgresql+psycopg2://"), reason
    assert ":***@127.0.0.1:1/" in reason
    assert reason.endswith(
        "nothing listens there (connection refused): fix the host and port, or start the server"
    )
    assert fetched_by_down == 0  # refused before any work
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for text in (ok.stdout, ok.stderr, down.stdout, down.stderr):
        assert API_KEY not in text
        assert DB_PASSWORD not in text
    for path in files:
        content = path.read_bytes()
        assert API_KEY.encode() not in content, path
        assert DB_PASSWORD.encode() not in content, path
    assert row_counts(pg_password_url)[0] == 108


def wrong_urls(pg_url: str) -> list[tuple[str, str]]:
    url = sa.make_url(pg_url)
    no_role = url.set(username="etl_no_such_role").render_as_string(hide_password=False)
    no_db = url.set(database="etl_no_such_database").render_as_string(hide_password=False)
    return [
        (
            "sqlite:///x.db",
            "WAREHOUSE_URL: sqlite:// is not supported, the warehouse is PostgreSQL",
        ),
        ("mysql://u:p@127.0.0.1/db", "WAREHOUSE_URL: mysql:// is not supported"),
        (no_role, 'role "etl_no_such_role" does not exist: fix the name, or create it'),
        (no_db, 'database "etl_no_such_database" does not exist: fix the name, or create it'),
    ]


def test_a_wrong_warehouse_url_fails_at_once_naming_it(
    tmp_path: Path, pg_url: str, prefect_api_url: str
) -> None:
    with serve_demo_api(DATA) as api:
        for url, says in wrong_urls(pg_url):
            env = run_env(
                PREFECT_API_URL=prefect_api_url,
                SALES_API_URL=api.url,
                WAREHOUSE_URL=url,
                DATA_LAKE_URL=str(tmp_path / "lake"),
            )
            result = run_cli("--date", DAY_TEXT, env=env, cwd=tmp_path)
            reason = failure_line(result, f"Daily Sales ETL {DAY_TEXT}")
            assert reason.startswith("ConfigError: WAREHOUSE_URL"), reason
            assert says in reason, reason
        assert api.sales_requests == []  # nothing was extracted
    assert not (tmp_path / "lake").exists()


def test_a_temporary_server_that_cannot_start_fails_at_once_with_one_line(tmp_path: Path) -> None:
    """Its database refused: one line with the server's own error and its log, not Prefect's
    relaunch on another port after each failure until its start-up allowance is spent (a
    traceback each time)."""
    home = tmp_path / "prefect-home"
    env = run_env(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{refused_port()}/x",
        SALES_API_URL=closed_port_url(),
        DATA_LAKE_URL=str(tmp_path / "lake"),
    )
    result = run_cli("--date", DAY_TEXT, env=env, cwd=tmp_path)
    reason = failure_line(result, f"Daily Sales ETL {DAY_TEXT}")
    assert reason.startswith("Prefect's temporary API server exited while starting"), reason
    assert "Connect call failed" in reason, reason  # the server's error, from its log
    assert str(home / "temporary-server.log") in reason, reason
    assert "PREFECT_API_DATABASE_CONNECTION_URL" in reason, reason
    assert result.stderr.count("Starting temporary server") == 1, result.stderr
    assert not (tmp_path / "lake").exists()  # no run was started


def test_the_temporary_server_start_up_allowance_holds_from_any_folder(tmp_path: Path) -> None:
    """prefect.toml's allowance is read from the working folder only: the CLI's own applies
    from anywhere (a first start in a new PREFECT_HOME migrates its database: ~21 s seen, past
    Prefect's default 20 s, which the other folder would get), and a larger setting wins."""
    probe = "from flows.termination import ephemeral_startup_seconds as s; print(s())"
    env = run_env()
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    for folder, setting, expected in (
        (tmp_path, None, 120),
        (REPO, None, 120),
        (tmp_path, "300", 300),
    ):
        overrides = (
            {} if setting is None else {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": setting}
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=folder,
            env={"PYTHONPATH": str(REPO), **env, **overrides},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.split()[-1:] == [str(expected)], (folder, result.stderr[-2000:])


def test_a_lake_that_cannot_be_written_fails_at_once_and_the_ledger_says_so(
    tmp_path: Path, pg_url: str, prefect_api_url: str
) -> None:
    env = run_env(PREFECT_API_URL=prefect_api_url, WAREHOUSE_URL=pg_url, DATA_LAKE_URL="/proc/x")
    result = run_cli("--date", DAY_TEXT, env=env, cwd=tmp_path)
    reason = failure_line(result, f"Daily Sales ETL {DAY_TEXT}")
    assert reason == (
        "ConfigError: DATA_LAKE_URL=/proc/x: the lake cannot be written there (No such file or "
        "directory): set it to a writable folder or to s3://BUCKET/PREFIX"
    )
    rows = table_rows(pg_url, "sales_load_ledger", ["business_date", "status", "message"])
    assert [(str(d), s) for d, s, _ in rows] == [(DAY_TEXT, "failed")]
    assert rows[0][2].startswith("DATA_LAKE_URL=/proc/x: the lake cannot be written there")


def test_blocks_named_on_the_command_line_are_stored_as_references(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    tmp_path: Path,
    prefect_api_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--warehouse-block NAME`` / ``--data-lake-block NAME``: the flow run's parameters hold
    ``{"$ref": {"block_document_id": ...}}`` (what the UI's picker stores), not the values."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from pydantic import SecretStr

    from blocks import DataLakeBlock, WarehouseBlock
    from flows.cli import main

    name = f"cli-{uuid.uuid4().hex[:10]}"
    warehouse = WarehouseBlock(connection_string=SecretStr(pg_url))
    warehouse.save(f"{name}-warehouse")
    lake = DataLakeBlock(path=str(tmp_path / "block-lake"))
    lake.save(f"{name}-lake")
    monkeypatch.chdir(tmp_path)
    with serve_demo_api(DATA) as api:
        monkeypatch.setenv("SALES_API_URL", api.url)
        code = main(
            ["--date", DAY_TEXT, "--warehouse-block", f"{name}-warehouse",
             "--data-lake-block", f"{name}-lake"]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err[-3000:]
    assert capsys.readouterr().out.startswith(f"Daily Sales ETL {DAY_TEXT}: LOADED — ")
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["Daily Sales ETL"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    assert run.parameters["warehouse_block"] == {
        "$ref": {"block_document_id": str(warehouse._block_document_id)}
    }
    assert run.parameters["data_lake_block"] == {
        "$ref": {"block_document_id": str(lake._block_document_id)}
    }
    assert run.parameters["sales_api_block"] is None
    assert str(tmp_path) not in str(run.parameters)  # the lake's path is not copied in
    assert (tmp_path / "block-lake" / "raw").exists()  # the run used the referenced block
    assert row_counts(pg_url)[0] == 108
