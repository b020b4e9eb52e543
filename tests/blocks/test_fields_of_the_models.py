"""A block's fields and an environment setting are the configuration model's own fields."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from blocks import SalesApiBlock, WarehouseBlock
from sales_etl.settings import Settings, SourceConfig, WarehouseConfig

SHARED: list[tuple[type[BaseModel], type[BaseModel], str]] = [
    (SalesApiBlock, SourceConfig, "page_size"),
    (SalesApiBlock, SourceConfig, "timeout_seconds"),
    (SalesApiBlock, SourceConfig, "max_retries"),
    (WarehouseBlock, WarehouseConfig, "db_schema"),
    (WarehouseBlock, WarehouseConfig, "table_name"),
    (WarehouseBlock, WarehouseConfig, "pool_size"),
    (WarehouseBlock, WarehouseConfig, "pool_timeout_seconds"),
    (WarehouseBlock, WarehouseConfig, "work_mem"),
]


@pytest.mark.parametrize(("block", "model", "name"), SHARED)
def test_a_block_field_has_the_models_default_and_limits(
    block: type[BaseModel], model: type[BaseModel], name: str
) -> None:
    ours, theirs = block.model_fields[name], model.model_fields[name]
    assert ours.default == theirs.default
    assert ours.metadata == theirs.metadata
    assert ours.description  # the UI's own words


def test_a_block_refuses_what_the_model_refuses() -> None:
    with pytest.raises(ValidationError, match="page_size"):
        SalesApiBlock(page_size=10_001)
    with pytest.raises(ValidationError, match="table_name"):
        WarehouseBlock(table_name="sales; drop")
    with pytest.raises(ValidationError, match="work_mem"):
        WarehouseBlock(work_mem="lots")


def test_the_warehouse_block_sets_what_the_settings_can() -> None:
    config = WarehouseConfig(url=SecretStr("postgresql://u@h/d"), work_mem="1GB", pool_size=3)
    block = WarehouseBlock.from_config(config)
    assert block.work_mem == "1GB"
    assert block.to_config() == config


def test_settings_default_to_the_models_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SALES_API_PAGE_SIZE", "SALES_API_TIMEOUT_SECONDS", "WAREHOUSE_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.source().page_size == SourceConfig().page_size
    assert settings.warehouse().db_schema == WarehouseConfig().db_schema
    monkeypatch.setenv("SALES_API_PAGE_SIZE", "0")
    with pytest.raises(ValidationError, match="sales_api_page_size"):
        Settings(_env_file=None)  # type: ignore[call-arg]
