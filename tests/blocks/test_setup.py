"""``python -m blocks.setup`` and ``prefect block register -m blocks`` against the test API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from blocks.setup import main
from sales_etl.settings import load_settings
from tests.utils import API_KEY, DB_PASSWORD, REPO, run_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

WAREHOUSE_URL = f"postgresql://etl:{DB_PASSWORD}@db.internal:5432/analytics"


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALES_API_URL", "https://sales.example.com/v1/")
    monkeypatch.setenv("SALES_API_KEY", API_KEY)
    monkeypatch.setenv("SALES_API_PAGE_SIZE", "750")
    monkeypatch.setenv("DATA_LAKE_URL", "s3://sales-lake/prod")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("WAREHOUSE_URL", WAREHOUSE_URL)
    monkeypatch.setenv("WAREHOUSE_SCHEMA", "mart")


def test_setup_saves_the_environment_as_three_blocks(
    production_env: None, block_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--prefix", block_name]) == 0
    settings = load_settings()
    assert WarehouseBlock.load(f"{block_name}-warehouse").to_config() == settings.warehouse()
    assert DataLakeBlock.load(f"{block_name}-data-lake").to_config() == settings.lake()
    assert SalesApiBlock.load(f"{block_name}-sales-api").to_config() == settings.source()

    out = capsys.readouterr().out
    assert f"sales-warehouse/{block_name}-warehouse" in out
    assert f"sales-data-lake/{block_name}-data-lake" in out
    assert f"sales-api/{block_name}-sales-api" in out
    assert "bucket='sales-lake'" in out
    assert API_KEY not in out
    assert DB_PASSWORD not in out


def test_setup_updates_existing_blocks(
    production_env: None,
    monkeypatch: pytest.MonkeyPatch,
    block_name: str,
) -> None:
    assert main(["--prefix", block_name]) == 0
    monkeypatch.setenv("SALES_API_PAGE_SIZE", "123")
    monkeypatch.setenv("WAREHOUSE_SCHEMA", "mart_v2")
    assert main(["--prefix", block_name]) == 0
    assert SalesApiBlock.load(f"{block_name}-sales-api").page_size == 123
    assert WarehouseBlock.load(f"{block_name}-warehouse").db_schema == "mart_v2"


def test_setup_help_and_bad_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--prefix" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--prefix", "Prod Env"])
    assert done.value.code == 2
    assert "prefix must be lowercase" in capsys.readouterr().err


def test_register_and_setup_from_the_command_line(block_name: str, tmp_path: Path) -> None:
    env = run_env(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        SALES_API_KEY=API_KEY,
        WAREHOUSE_URL=WAREHOUSE_URL,
        PYTHONPATH=str(REPO),
    )
    registered = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert registered.returncode == 0, registered.stderr
    with get_client(sync_client=True) as client:
        for slug in ("sales-warehouse", "sales-data-lake", "sales-api"):
            assert client.read_block_type_by_slug(slug).slug == slug

    setup = subprocess.run(
        [sys.executable, "-m", "blocks.setup", "--prefix", block_name],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.count("saved ") == 3
    assert API_KEY not in setup.stdout + setup.stderr
    assert DB_PASSWORD not in setup.stdout + setup.stderr
    assert SalesApiBlock.load(f"{block_name}-sales-api").api_key.get_secret_value() == API_KEY
