"""``WarehouseBlock``: the warehouse connection as a Prefect block (the old guide's DatabaseBlock).

The block holds settings only; every database operation delegates to :mod:`sales_etl.warehouse`,
the same code the load task runs. The SQLAlchemy engine is created on first use, kept in a
private attribute that is never serialized nor pickled, and disposed by :meth:`close` (or on
leaving a ``with`` block).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from types import TracebackType
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
from pydantic import Field, HttpUrl, PrivateAttr, SecretStr
from sqlalchemy import Engine, text

from blocks.parameters import ConfigBlock
from sales_etl.schema import CLEAN_SCHEMA
from sales_etl.settings import WarehouseConfig, field_of
from sales_etl.transform import clean_table
from sales_etl.warehouse import (
    LoadStats,
    WarehouseTables,
    create_warehouse_engine,
    ensure_tables,
    load_day,
    tables_for,
)


class WarehouseBlock(ConfigBlock):
    """The warehouse the Daily Sales ETL loads: connection string, schema and target table.

    Attributes:
        connection_string: SQLAlchemy URL with the password (``postgresql://user:pw@host/db``);
            empty: the embedded PostgreSQL of the process that runs the flow.
        db_schema: schema of the target tables.
        table_name: name of the sales table (rejects go to ``<table_name>_rejected``).
        pool_size: connections kept in the engine's pool.
        pool_timeout_seconds: how long to wait for a free pooled connection.

    Example:
        ```python
        from blocks import WarehouseBlock

        with WarehouseBlock.load("prod-warehouse") as warehouse:
            rows = warehouse.query("SELECT count(*) FROM sales WHERE currency = :c", {"c": "EUR"})
        ```
    """

    _config_model: ClassVar[type[WarehouseConfig]] = WarehouseConfig
    _config_names: ClassVar[dict[str, str]] = {"connection_string": "url"}
    _block_type_name: ClassVar[str] = "Sales Warehouse"
    _block_type_slug: ClassVar[str] = "sales-warehouse"
    _description: ClassVar[str] = (
        "The PostgreSQL warehouse the Daily Sales ETL loads: connection string (secret), "
        "schema, target table and pool settings."
    )
    _documentation_url: ClassVar[HttpUrl] = HttpUrl("https://docs.prefect.io/v3/concepts/blocks")
    _code_example: ClassVar[str] = """
        from blocks import WarehouseBlock

        warehouse_block = WarehouseBlock.load("BLOCK_NAME")
        with warehouse_block:
            rows = warehouse_block.query("SELECT count(*) FROM sales")
        """

    connection_string: SecretStr | None = Field(
        default=None,
        title="Connection string",
        description=(
            "SQLAlchemy URL of the warehouse, password included, e.g. "
            "postgresql://etl:PASSWORD@db.internal:5432/analytics; empty: the embedded "
            "PostgreSQL in ./.data/postgres of the process that runs the flow."
        ),
    )
    db_schema: str = field_of(
        WarehouseConfig,
        "db_schema",
        title="Schema",
        description="Database schema of the sales tables; created when missing.",
    )
    table_name: str = field_of(
        WarehouseConfig,
        "table_name",
        description="Name of the sales table; rejects go to <table_name>_rejected.",
    )
    pool_size: int = field_of(
        WarehouseConfig, "pool_size", description="Number of connections kept in the engine's pool."
    )
    pool_timeout_seconds: float = field_of(
        WarehouseConfig,
        "pool_timeout_seconds",
        description="Seconds to wait for a free pooled connection.",
    )
    work_mem: str | None = field_of(
        WarehouseConfig,
        "work_mem",
        title="Work memory of a load",
        description="PostgreSQL work_mem set for each load's transaction, e.g. 128MB; empty: "
        "the server's setting.",
    )

    _engine: Engine | None = PrivateAttr(default=None)

    def to_config(self) -> WarehouseConfig:
        """The plain configuration the tasks receive."""
        return WarehouseConfig(**self.config_values())

    def get_engine(self) -> Engine:
        """The block's engine, created on first use (``create_warehouse_engine``)."""
        if self.connection_string is None:
            raise ValueError(
                "this WarehouseBlock has no connection_string (it stands for the embedded "
                "PostgreSQL, which only a flow run starts)"
            )
        if self._engine is None:
            self._engine = create_warehouse_engine(self.to_config())
        return self._engine

    def tables(self) -> WarehouseTables:
        """The sales and rejects tables in the configured schema."""
        return tables_for(self.to_config())

    def ensure_tables(self) -> WarehouseTables:
        """Create the schema and tables if missing; returns them."""
        tables = self.tables()
        ensure_tables(self.get_engine(), tables)
        return tables

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement with bound ``:name`` parameters in a transaction; returns its rows.

        Values always travel as bound parameters, never formatted into ``sql``. A statement
        that returns no rows (DDL, DML) returns ``[]`` and is committed.
        """
        with self.get_engine().begin() as conn:
            result = conn.execute(text(sql), dict(params or {}))
            return [tuple(row) for row in result] if result.returns_rows else []

    def upsert(
        self,
        day: date,
        run_id: str,
        sales_batches: Iterable[pa.Table],
        rejected_batches: Iterable[pa.Table] = (),
    ) -> LoadStats:
        """The pipeline's idempotent load of one day (``sales_etl.warehouse.load_day``).

        Batches are Arrow tables in the clean zone's schemas. Sales are merged by ``sale_id``
        (the newest ``updated_at`` wins); the day's rejects are replaced. The load reads the
        batches twice: iterators are first collected into lists.
        """
        tables = self.ensure_tables()
        sales_batches, rejected_batches = _rereadable(sales_batches), _rereadable(rejected_batches)
        return load_day(
            self.get_engine(),
            tables,
            day,
            run_id,
            sales_batches,
            rejected_batches,
        )

    def insert(self, frame: pd.DataFrame | pa.Table, day: date, run_id: str) -> LoadStats:
        """Upsert a frame of clean sales (the clean zone's columns) for ``day``.

        A missing ``record_index`` is numbered in frame order (later rows win ties).
        """
        if isinstance(frame, pd.DataFrame):
            if "record_index" not in frame.columns:
                frame = frame.assign(record_index=range(len(frame)))
            table = clean_table(frame)
        else:
            if "record_index" not in frame.column_names:
                frame = frame.append_column(
                    "record_index", pa.array(range(frame.num_rows), pa.int64())
                )
            table = frame.select(CLEAN_SCHEMA.names).cast(CLEAN_SCHEMA)
        return self.upsert(day, run_id, [table])

    def close(self) -> None:
        """Dispose the engine (if one was created)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> WarehouseBlock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[Any, Any]:
        # An engine holds sockets and locks: a pickled block starts without one.
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private["_engine"] = None
        return {**state, "__pydantic_private__": private}


def _rereadable(batches: Iterable[pa.Table]) -> Iterable[pa.Table]:
    """``batches`` as something :func:`sales_etl.warehouse.load_day` can read twice."""
    return list(batches) if isinstance(batches, Iterator) else batches
