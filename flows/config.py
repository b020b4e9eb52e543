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

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_logger
from pydantic import BaseModel, SecretStr, ValidationError

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from devharness.demo_api import DemoData, serve_demo_api
from devharness.embedded_postgres import embedded_postgres, how_to_look
from sales_etl.dates import business_date_problem
from sales_etl.errors import ConfigError
from sales_etl.report import mask_url
from sales_etl.settings import LakeConfig, Settings, SourceConfig, WarehouseConfig

B = TypeVar("B", bound=Block)
C = TypeVar("C", bound=BaseModel)
# The flows' block parameters and the block class each one takes.
BLOCK_PARAMETERS: dict[str, type[Block]] = {
    "warehouse_block": WarehouseBlock,
    "data_lake_block": DataLakeBlock,
    "sales_api_block": SalesApiBlock,
}
# The embedded demo API's day when no SALES_API_URL (or sales API block URL) is configured.
DEMO_DATA = DemoData(rows_per_day=5000, malformed_every=97, update_every=50)
# The only driver installed: any other scheme (sqlite://, mysql://, postgresql+psycopg://) is
# refused before any work.
WAREHOUSE_DRIVER = "postgresql+psycopg2"
# How long the preflight waits for the warehouse to accept a connection.
CONNECT_TIMEOUT_SECONDS = 10
# What PostgreSQL (libpq) says when no retry can help, and what the user should do about it.
PERMANENT_CONNECT_ERRORS = {
    "password authentication failed": "the warehouse refused the credentials: fix the user "
    "and password",
    "does not exist": "fix the name, or create it",  # a role or a database
    "Connection refused": "nothing listens there (connection refused): fix the host and port, "
    "or start the server",
    "could not translate host name": "unknown host: fix the host name",
    "no pg_hba.conf entry": "the server does not accept this user from here (pg_hba.conf)",
}
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


def block_reference(block: Block | None) -> dict[str, Any] | None:
    """A saved block as a flow parameter that names it, as the UI's run form does: the flow
    run's parameters then hold ``{"$ref": {"block_document_id": ...}}``, not the block's values
    (Prefect's ``Flow.validate_parameters`` loads the block from the reference when the run
    starts). None stays None."""
    if block is None:
        return None
    return cast(dict[str, Any], block.model_dump(context={"serialize_blocks_as_references": True}))


def resolve_configs(
    settings: Settings,
    *,
    warehouse_block: WarehouseBlock | None = None,
    data_lake_block: DataLakeBlock | None = None,
    sales_api_block: SalesApiBlock | None = None,
) -> tuple[SourceConfig, LakeConfig, WarehouseConfig]:
    """(source, lake, warehouse): each from its block when given, else from ``settings``.
    The lake and the warehouse remember which setting they come from, for error messages."""
    source = (
        _valid("SALES_API_URL / SALES_API_*", settings.source)
        if sales_api_block is None
        else sales_api_block.to_config()
    )
    lake = settings.lake() if data_lake_block is None else data_lake_block.to_config()
    warehouse = (
        _valid("WAREHOUSE_SCHEMA", settings.warehouse)
        if warehouse_block is None
        else warehouse_block.to_config()
    )
    if data_lake_block is not None:
        # The block says where the lake is; how many snapshots it keeps is LAKE_KEEP_SNAPSHOTS.
        update = {"setting": _block_setting(data_lake_block)}
        lake = lake.model_copy(update={**update, "keep_snapshots": settings.lake_keep_snapshots})
    if warehouse_block is not None:
        setting = _block_setting(warehouse_block, "connection_string")
        warehouse = warehouse.model_copy(update={"setting": setting})
    return source, lake, warehouse


def _valid(settings: str, build: Callable[[], C]) -> C:
    """``build()``; a value the config model refuses is a :class:`ConfigError` naming it."""
    try:
        return build()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{settings}: {problems}") from None


def _block_setting(block: Block, field: str | None = None) -> str:
    """``WarehouseBlock block 'prod-warehouse' field 'connection_string'``: where a value that
    came from a block is set."""
    name = getattr(block, "_block_document_name", None) or "(unsaved)"
    where = f"{type(block).__name__} block {name!r}"
    return f"{where} field {field!r}" if field else where


def check_business_date(day: date, today: date, allow_future: bool = False) -> None:
    """Refuse a day outside the sane window, or in the future unless ``allow_future``."""
    problem = business_date_problem(day, today, allow_future)
    if problem is not None:
        future = "in the future" in problem
        hint = "; the parameter allow_future loads it anyway" if future else ""
        raise ConfigError(f"run_date: {problem}{hint}")


def check_warehouse_url(warehouse: WarehouseConfig) -> None:
    """Refuse, before any work, a warehouse URL that is not PostgreSQL through psycopg2."""
    if warehouse.is_embedded:
        return
    try:
        url = sa.make_url(warehouse.sqlalchemy_url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"{warehouse.setting} is not a URL: use postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
            "(or leave it unset for the embedded PostgreSQL)"
        ) from None
    if url.drivername != WAREHOUSE_DRIVER:
        raise ConfigError(
            f"{warehouse.setting}: {url.drivername}:// is not supported, the warehouse is "
            "PostgreSQL: use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or leave it unset "
            "for the embedded PostgreSQL)"
        )


def check_warehouse_connects(warehouse: WarehouseConfig) -> None:
    """Connect once: what no retry can fix (credentials, a role or database that does not
    exist, a refused port, an unknown host) raises :class:`ConfigError` naming the setting;
    anything else (a timeout, a server starting up) is left to the tasks' retries."""
    engine = sa.create_engine(
        warehouse.sqlalchemy_url,
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    try:
        with engine.connect():
            return
    except sa.exc.OperationalError as exc:
        said = _libpq_reason(str(exc.orig or exc))
        for clue, advice in PERMANENT_CONNECT_ERRORS.items():
            if clue in str(exc.orig):
                where = mask_url(warehouse.sqlalchemy_url)
                raise ConfigError(f"{warehouse.setting} ({where}): {said}: {advice}") from None
        logger = get_logger(__name__)
        logger.warning("The warehouse did not answer yet (%s): the load retries", said)
    finally:
        engine.dispose()


def _libpq_reason(message: str) -> str:
    """``connection to server at "h", port 1 failed: FATAL:  role "x" does not exist`` (and a
    hint line) -> ``role "x" does not exist``."""
    first = message.strip().splitlines()[0] if message.strip() else message
    return first.split(" failed: ", 1)[-1].removeprefix("FATAL:").strip()


def check_lake_writable(lake: LakeConfig) -> None:
    """Refuse, before any work, a local lake folder that cannot be created or written (an S3
    lake is checked by its first write, which its tasks retry)."""
    if lake.is_s3:
        return
    folder = Path(lake.url).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{lake.setting}={lake.url}: the lake cannot be written there ({exc.strerror}): "
            "set it to a writable folder or to s3://BUCKET/PREFIX"
        ) from None


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
    ``./.data/postgres``, kept between runs) when no URL is configured. A configured URL is
    checked first (:func:`check_warehouse_url`, :func:`check_warehouse_connects`)."""
    if not warehouse.is_embedded:
        check_warehouse_url(warehouse)
        check_warehouse_connects(warehouse)
        yield warehouse, ""
        return
    with embedded_postgres() as server:
        yield warehouse.model_copy(update={"url": SecretStr(server.url)}), how_to_look()
