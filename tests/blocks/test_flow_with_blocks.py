"""The flow configured by saved blocks, end to end: PostgreSQL, moto S3, the demo API."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.states import State
from pydantic import SecretStr

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from deployments.common import PROJECT_ROOT, default_parameters, deployment_options
from devharness.demo_api import DemoData, Faults, serve_demo_api
from flows.cli import main
from flows.config import load_block, resolve_configs
from flows.daily_sales import daily_sales
from sales_etl.errors import ConfigError
from sales_etl.settings import LakeConfig, load_settings
from tests.utils import API_KEY, DAY, row_counts

pytestmark = pytest.mark.usefixtures("prefect_harness")

# 230 sales, every 23rd one corrupted in a different way: 220 valid, 10 rejected, no updates.
DATA = DemoData(rows_per_day=230, malformed_every=23)
AWS_SECRET = "aws-SECRET-moto-3b7d21"


def save_blocks(
    name: str, api_url: str, pg_url: str, s3_lake: LakeConfig
) -> tuple[WarehouseBlock, DataLakeBlock, SalesApiBlock]:
    """Saves ``<name>-warehouse``, ``<name>-data-lake``, ``<name>-sales-api`` (the names
    ``python -m blocks.setup --prefix <name>`` uses) and returns them, saved."""
    bucket, _, prefix = s3_lake.url.removeprefix("s3://").partition("/")
    warehouse = WarehouseBlock(connection_string=SecretStr(pg_url))
    warehouse.save(f"{name}-warehouse")
    lake = DataLakeBlock(
        bucket=bucket,
        prefix=prefix,
        region="us-east-1",
        endpoint_url=s3_lake.endpoint_url,
        # moto accepts any credentials; a recognisable secret shows whether it leaks
        aws_access_key_id=SecretStr("testing"),
        aws_secret_access_key=SecretStr(AWS_SECRET),
    )
    lake.save(f"{name}-data-lake")
    source = SalesApiBlock(
        base_url=api_url, api_key=SecretStr(API_KEY), page_size=40, timeout_seconds=10
    )
    source.save(f"{name}-sales-api")
    return warehouse, lake, source


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
        warehouse, lake, source = save_blocks(block_name, api.url, pg_url, s3_lake)
        # Only the blocks know where things are: no pipeline variables, no AWS variables.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        assert load_settings().warehouse().is_embedded
        state: State = daily_sales(
            run_date=DAY,
            warehouse_block=warehouse,
            data_lake_block=lake,
            sales_api_block=source,
            return_state=True,
        )
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["records_extracted"], summary["clean"], summary["inserted"]) == (230, 220, 220)
    assert summary["lake"] == s3_lake.url
    assert row_counts(pg_url) == (220, 10)
    assert not (tmp_path / ".data").exists()  # nothing fell back to the local defaults

    logs = flow_run_logs(state.state_details.flow_run_id)
    assert any("Daily Sales ETL for 2026-11-23" in line for line in logs)
    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(state.state_details.flow_run_id).parameters
    assert recorded["sales_api_block"]["base_url"] == api.url  # the blocks, secrets masked
    for secret in (API_KEY, AWS_SECRET):
        assert secret not in str(summary)
        assert secret not in str(recorded)
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
    assert row_counts(pg_url) == (220, 10)


def test_a_missing_block_is_a_config_error_saying_how_to_create_it(block_name: str) -> None:
    with pytest.raises(ConfigError) as failure:
        load_block(WarehouseBlock, f"{block_name}-missing")
    message = str(failure.value)
    assert f"WarehouseBlock block '{block_name}-missing'" in message
    assert "python -m blocks.setup" in message
    assert "prefect block register -m blocks" in message


def test_cli_reports_a_missing_block_before_any_run(
    block_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--date", DAY.isoformat(), "--sales-api-block", f"{block_name}-nope"])
    assert code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"Daily Sales ETL {DAY} failed: SalesApiBlock block '{block_name}-nope'")
    assert not (tmp_path / ".data").exists()  # no step ran


def test_deployment_blocks_are_references_that_runs_load(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, s3_lake: LakeConfig, block_name: str
) -> None:
    """``--blocks NAME``: the deployment stores ``{"$ref": {"block_document_id": ...}}`` for
    each block parameter (what the UI's block picker stores too); a run resolves them."""
    saved = save_blocks(block_name, "http://127.0.0.1:9/api", pg_url, s3_lake)
    monkeypatch.chdir(PROJECT_ROOT)  # the entrypoint is recorded relative to the project
    deployment = daily_sales.to_deployment(f"blocks-{block_name}", **deployment_options(block_name))
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id).parameters
    references = {
        name: {"$ref": {"block_document_id": str(block._block_document_id)}}
        for name, block in zip(
            ("warehouse_block", "data_lake_block", "sales_api_block"), saved, strict=True
        )
    }
    assert stored == {"run_date": None, "refresh": False, **references}

    resolved = daily_sales.validate_parameters(stored)  # what the engine does for each run
    for name, block in zip(references, saved, strict=True):
        assert type(resolved[name]) is type(block)
        assert resolved[name].to_config() == block.to_config()


def test_deploying_with_missing_blocks_names_them(block_name: str) -> None:
    with pytest.raises(SystemExit) as failure:
        default_parameters(block_name)
    assert f"--blocks '{block_name}'" in str(failure.value)
    assert f"WarehouseBlock block '{block_name}-warehouse'" in str(failure.value)


def test_each_block_overrides_only_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALES_API_URL", "https://env.example.com")
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://etl@env-db/analytics")
    monkeypatch.setenv("DATA_LAKE_URL", "s3://env-bucket/lake")
    settings = load_settings()

    block = DataLakeBlock(path="/srv/block-lake")
    source, lake, warehouse = resolve_configs(settings, data_lake_block=block)
    # (the config remembers where it came from, for the errors that name the setting)
    assert lake == LakeConfig(url="/srv/block-lake", setting="DataLakeBlock block '(unsaved)'")
    assert source == settings.source()
    assert warehouse == settings.warehouse()
    assert resolve_configs(settings) == (settings.source(), settings.lake(), settings.warehouse())
