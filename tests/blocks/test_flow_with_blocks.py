"""The flow configured by saved blocks, end to end: PostgreSQL, moto S3, the demo API."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.states import State
from pydantic import SecretStr

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from flows.config import resolve_configs
from flows.daily_sales import daily_sales, main
from sales_etl.demo_api import DemoData, Faults, serve_demo_api
from sales_etl.errors import ConfigError
from sales_etl.settings import LakeConfig, load_settings
from tests.conftest import API_KEY

DAY = date(2026, 11, 23)
# 230 sales, every 23rd one corrupted in a different way: 220 valid, 10 rejected, no updates.
DATA = DemoData(rows_per_day=230, malformed_every=23)
AWS_SECRET = "aws-SECRET-moto-3b7d21"


@pytest.fixture(autouse=True)
def _harness(prefect_harness: None) -> None:
    return None


def table_counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sales = conn.execute(sa.text("SELECT count(*) FROM sales")).scalar_one()
        rejected = conn.execute(sa.text("SELECT count(*) FROM sales_rejected")).scalar_one()
    engine.dispose()
    return int(sales), int(rejected)


def save_blocks(name: str, api_url: str, pg_url: str, s3_lake: LakeConfig) -> None:
    bucket, _, prefix = s3_lake.url.removeprefix("s3://").partition("/")
    WarehouseBlock(connection_string=SecretStr(pg_url)).save(f"{name}-warehouse")
    DataLakeBlock(
        bucket=bucket,
        prefix=prefix,
        region="us-east-1",
        endpoint_url=s3_lake.endpoint_url,
        # moto accepts any credentials; a recognisable secret shows whether it leaks
        aws_access_key_id=SecretStr("testing"),
        aws_secret_access_key=SecretStr(AWS_SECRET),
    ).save(f"{name}-data-lake")
    SalesApiBlock(
        base_url=api_url, api_key=SecretStr(API_KEY), page_size=40, timeout_seconds=10
    ).save(f"{name}-sales-api")


def flow_run_logs(flow_run_id: object) -> list[str]:
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


def test_flow_runs_on_saved_blocks_with_the_environment_unset(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    s3_lake: LakeConfig,
    block_name: str,
    tmp_path: Path,
) -> None:
    with serve_demo_api(DATA, Faults(), api_key=API_KEY) as api:
        save_blocks(block_name, api.url, pg_url, s3_lake)
        # Only the blocks know where things are: no pipeline variables, no AWS variables.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        assert load_settings().warehouse().is_embedded
        state: State = daily_sales(
            run_date=DAY,
            warehouse_block=f"{block_name}-warehouse",
            data_lake_block=f"{block_name}-data-lake",
            sales_api_block=f"{block_name}-sales-api",
            return_state=True,
        )
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["records_extracted"], summary["clean"], summary["inserted"]) == (230, 220, 220)
    assert summary["lake"] == s3_lake.url
    assert table_counts(pg_url) == (220, 10)
    assert not (tmp_path / ".data").exists()  # nothing fell back to the local defaults

    logs = flow_run_logs(state.state_details.flow_run_id)
    assert any("Daily Sales ETL for 2026-11-23" in line for line in logs)
    for secret in (API_KEY, AWS_SECRET):
        assert secret not in str(summary)
        assert not [line for line in logs if secret in line]


def test_cli_block_options_rerun_the_day_idempotently(
    monkeypatch: pytest.MonkeyPatch,
    pg_url: str,
    s3_lake: LakeConfig,
    block_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = [
        "--warehouse-block",
        f"{block_name}-warehouse",
        "--data-lake-block",
        f"{block_name}-data-lake",
        "--sales-api-block",
        f"{block_name}-sales-api",
    ]
    with serve_demo_api(DATA, Faults(), api_key=API_KEY) as api:
        save_blocks(block_name, api.url, pg_url, s3_lake)
        assert main(["--date", DAY.isoformat(), *options]) == 0
        assert main(["--date", DAY.isoformat(), "--refresh", *options]) == 0
    out = capsys.readouterr().out
    assert API_KEY not in out
    assert table_counts(pg_url) == (220, 10)


def test_a_missing_block_fails_the_run_at_once_with_how_to_create_it(
    block_name: str, tmp_path: Path
) -> None:
    state: State = daily_sales(
        run_date=DAY, warehouse_block=f"{block_name}-missing", return_state=True
    )
    assert state.is_failed()
    with pytest.raises(ConfigError) as failure:
        state.result()
    message = str(failure.value)
    assert f"WarehouseBlock block '{block_name}-missing'" in message
    assert "python -m blocks.setup" in message
    assert "prefect block register -m blocks" in message
    assert not (tmp_path / ".data").exists()  # no step ran


def test_cli_reports_a_missing_block(block_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--date", DAY.isoformat(), "--sales-api-block", f"{block_name}-nope"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"SalesApiBlock block '{block_name}-nope'" in err


def test_each_block_overrides_only_its_own_settings(
    monkeypatch: pytest.MonkeyPatch, block_name: str
) -> None:
    monkeypatch.setenv("SALES_API_URL", "https://env.example.com")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://etl@env-db/analytics")
    monkeypatch.setenv("DATA_LAKE_URL", "s3://env-bucket/lake")
    DataLakeBlock(path="/srv/block-lake").save(f"{block_name}-lake")
    settings = load_settings()

    source, lake, warehouse = resolve_configs(settings, data_lake_block=f"{block_name}-lake")
    assert lake == LakeConfig(url="/srv/block-lake")
    assert source == settings.source()
    assert warehouse == settings.warehouse()
    assert resolve_configs(settings) == (settings.source(), settings.lake(), settings.warehouse())
