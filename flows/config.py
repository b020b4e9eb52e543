"""The one place a flow run's configuration is chosen: environment settings, blocks override.

The flows take their blocks as parameters (typed as the block classes, so Prefect's run form
offers a picker of saved block documents); a block given replaces the environment settings for
its system. The CLI and the deployments name blocks instead: :func:`load_block` loads a named one
with an error that says how to create it. Tasks receive the resulting plain configs
(:class:`SourceConfig`, :class:`LakeConfig`, :class:`WarehouseConfig`); what is left unset there
(the sales API's or the warehouse's URL) is started for the run by :func:`source_endpoint` and
:func:`warehouse_endpoint`. Nothing is loaded or started at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from sales_etl.demo_api import DemoData, serve_demo_api
from sales_etl.embedded_postgres import embedded_postgres, how_to_look
from sales_etl.errors import ConfigError
from sales_etl.settings import LakeConfig, Settings, SourceConfig, WarehouseConfig

B = TypeVar("B", bound=Block)
# The flows' block parameters and the block class each one takes.
BLOCK_PARAMETERS: dict[str, type[Block]] = {
    "warehouse_block": WarehouseBlock,
    "data_lake_block": DataLakeBlock,
    "sales_api_block": SalesApiBlock,
}
# The embedded demo API's day when no SALES_API_URL (or sales API block URL) is configured.
DEMO_DATA = DemoData(rows_per_day=5000, malformed_every=97, update_every=50)
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
    warehouse_block: WarehouseBlock | None = None,
    data_lake_block: DataLakeBlock | None = None,
    sales_api_block: SalesApiBlock | None = None,
) -> tuple[SourceConfig, LakeConfig, WarehouseConfig]:
    """(source, lake, warehouse): each from its block when given, else from ``settings``."""
    source = settings.source() if sales_api_block is None else sales_api_block.to_config()
    lake = settings.lake() if data_lake_block is None else data_lake_block.to_config()
    warehouse = settings.warehouse() if warehouse_block is None else warehouse_block.to_config()
    return source, lake, warehouse


@contextmanager
def source_endpoint(source: SourceConfig) -> Iterator[tuple[SourceConfig, str]]:
    """The source to use and its identity, starting the embedded demo API (:data:`DEMO_DATA`,
    identity ``demo``) when no URL is configured."""
    if source.base_url is not None:
        yield source, source.base_url
        return
    with serve_demo_api(DEMO_DATA) as api:
        yield source.model_copy(update={"base_url": api.url}), "demo"


@contextmanager
def warehouse_endpoint(warehouse: WarehouseConfig) -> Iterator[tuple[WarehouseConfig, str]]:
    """The warehouse to use and how to look at it, starting the embedded PostgreSQL (in
    ``./.data/postgres``, kept between runs) when no URL is configured."""
    if not warehouse.is_embedded:
        yield warehouse, ""
        return
    with embedded_postgres() as server:
        yield warehouse.model_copy(update={"url": SecretStr(server.url)}), how_to_look()
