"""``python -m flows.daily_sales`` as a user runs it: exit codes, output, no secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from sales_etl.demo_api import DemoData, Faults, serve_demo_api
from tests.conftest import API_KEY, DB_PASSWORD, run_env

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.daily_sales", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_help_explains_every_option(tmp_path: Path) -> None:
    result = cli("--help", env=run_env(), cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--date", "--refresh", "SALES_API_URL", "WAREHOUSE_URL", "DATA_LAKE_URL"):
        assert option in result.stdout


def test_bad_date_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("--date", "23/11/2026", env=run_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "not a date (YYYY-MM-DD)" in result.stderr


def test_run_with_secrets_succeeds_then_fails_without_leaking_them(
    tmp_path: Path, pg_password_url: str
) -> None:
    env = run_env(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        SALES_API_KEY=API_KEY,
        WAREHOUSE_URL=pg_password_url,
        DATA_LAKE_URL=str(tmp_path / "lake"),
    )
    env.pop("PREFECT_API_URL", None)
    with serve_demo_api(
        DemoData(rows_per_day=120, malformed_every=10), Faults(), api_key=API_KEY
    ) as api:
        ok = cli("--date", "2026-11-23", env={**env, "SALES_API_URL": api.url}, cwd=tmp_path)
        down = cli(
            "--date",
            "2026-11-24",
            env={
                **env,
                "SALES_API_URL": api.url,
                "WAREHOUSE_URL": pg_password_url.replace(
                    str(sa.make_url(pg_password_url).port), "1"
                ),
            },
            cwd=tmp_path,
        )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "LOADED" in ok.stdout  # the verdict line; the whole summary is in the logs
    assert "inserted" in ok.stderr
    assert down.returncode == 1
    (reason,) = [
        line for line in down.stderr.splitlines() if line.startswith("Daily Sales ETL 2026-11-24")
    ]
    assert "failed: " in reason
    assert "WarehouseError" in reason
    assert "127.0.0.1:1" in reason
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for text in (ok.stdout, ok.stderr, down.stdout, down.stderr):
        assert API_KEY not in text
        assert DB_PASSWORD not in text
    for path in files:
        content = path.read_bytes()
        assert API_KEY.encode() not in content, path
        assert DB_PASSWORD.encode() not in content, path
    engine = sa.create_engine(pg_password_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sales")).scalar_one() == 108
    engine.dispose()
