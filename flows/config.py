"""The one place a flow run's configuration is chosen: environment settings, blocks override.

Blocks are loaded here, when the flow runs, never at import time; tasks receive the resulting
plain configs (:class:`SourceConfig`, :class:`LakeConfig`, :class:`WarehouseConfig`).
"""

from __future__ import annotations

from typing import TypeVar

from prefect.exceptions import ObjectNotFound

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from sales_etl.errors import ConfigError
from sales_etl.settings import LakeConfig, Settings, SourceConfig, WarehouseConfig

B = TypeVar("B", WarehouseBlock, DataLakeBlock, SalesApiBlock)
HOW_TO_CREATE = (
    "create it with `python -m blocks.setup --prefix NAME` (after `prefect block register -m "
    "blocks`) or in the Prefect UI, or leave the option empty to use the environment settings"
)


def load_block(cls: type[B], name: str) -> B:
    """``cls.load(name)``; a missing block raises :class:`ConfigError` saying how to create it."""
    try:
        block = cls.load(name)
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            raise ConfigError(
                f"{cls.__name__} block {name!r} (type {cls.get_block_type_slug()!r}) does not "
                f"exist in the Prefect API: {HOW_TO_CREATE}"
            ) from None
        raise
    assert isinstance(block, cls)  # a sync call: load() returned the block, not a coroutine
    return block


def resolve_configs(
    settings: Settings,
    *,
    warehouse_block: str | None = None,
    data_lake_block: str | None = None,
    sales_api_block: str | None = None,
) -> tuple[SourceConfig, LakeConfig, WarehouseConfig]:
    """(source, lake, warehouse): each from the named block when given, else from ``settings``."""
    source = (
        load_block(SalesApiBlock, sales_api_block).to_config()
        if sales_api_block
        else settings.source()
    )
    lake = (
        load_block(DataLakeBlock, data_lake_block).to_config()
        if data_lake_block
        else settings.lake()
    )
    warehouse = (
        load_block(WarehouseBlock, warehouse_block).to_config()
        if warehouse_block
        else settings.warehouse()
    )
    return source, lake, warehouse
