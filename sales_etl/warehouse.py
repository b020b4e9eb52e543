"""The warehouse: table definitions and the idempotent load of one day, in one transaction.

Load of a day (``load_day``)::

    lock the day (PostgreSQL advisory lock: concurrent runs of a day queue up)
    COPY clean rows and rejects into temporary staging tables, chunk by chunk
    pick one winner per sale_id: newest updated_at, then latest arrival (valid or not)
    INSERT winners INTO sales ON CONFLICT (sale_id) DO UPDATE
        only when the incoming version is not older and something actually changed
    replace the day's rejects (keyed by business_date + record_hash)
    reconcile (every winner landed, nothing older left), then COMMIT

PostgreSQL is the production warehouse (COPY through psycopg2). SQLite serves the zero-setup
local default with the same statements (SQLAlchemy renders the dialect's upsert).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    func,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateSchema

from sales_etl.errors import WarehouseError
from sales_etl.settings import WarehouseConfig
from sales_etl.validate import FIELDS

# One column per contract field, under the same name (the order of sales_etl.validate.FIELDS).
BUSINESS_COLUMNS: tuple[str, ...] = FIELDS
REJECT_STAGE_COLUMNS: tuple[str, ...] = (
    "record_index",
    "sale_id",
    "updated_at",
    "reason",
    "detail",
    "raw_record",
    "record_hash",
)
# SQLite has no exact decimal type: keep money as text there rather than as a float.
MONEY = Numeric(18, 4).with_variant(Text(), "sqlite")
TIMESTAMPTZ = DateTime(timezone=True)


@dataclass(frozen=True)
class WarehouseTables:
    """The target tables, bound to the configured schema and table name."""

    metadata: MetaData
    sales: Table
    rejected: Table


@dataclass(frozen=True)
class LoadStats:
    """What one load did."""

    staged: int
    staged_rejected: int
    winners: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    superseded: int


def warehouse_tables(schema: str | None, table_name: str = "sales") -> WarehouseTables:
    metadata = MetaData(schema=schema)
    sales = Table(
        table_name,
        metadata,
        Column("sale_id", Text, primary_key=True),
        Column("sale_date", TIMESTAMPTZ, nullable=False),
        Column("store_id", Text, nullable=False),
        Column("product_id", Text, nullable=False),
        Column("customer_id", Text, nullable=True),
        Column("quantity", Integer, nullable=False),
        Column("unit_price", MONEY, nullable=False),
        Column("amount", MONEY, nullable=False),
        Column("currency", Text, nullable=False),
        Column("updated_at", TIMESTAMPTZ, nullable=False),
        Column("run_id", Text, nullable=False),
        Column("loaded_at", TIMESTAMPTZ, nullable=False),
    )
    rejected = Table(
        f"{table_name}_rejected",
        metadata,
        Column("business_date", Date, nullable=False),
        Column("record_hash", Text, nullable=False),
        Column("sale_id", Text, nullable=True),
        Column("reason", Text, nullable=False),
        Column("detail", Text, nullable=False),
        Column("raw_record", Text, nullable=False),
        Column("occurrences", Integer, nullable=False),
        Column("run_id", Text, nullable=False),
        Column("rejected_at", TIMESTAMPTZ, nullable=False),
        PrimaryKeyConstraint("business_date", "record_hash"),
        Index(f"ix_{table_name}_rejected_sale_id", "sale_id"),
    )
    return WarehouseTables(metadata, sales, rejected)


def tables_for(config: WarehouseConfig) -> WarehouseTables:
    schema = None if config.dialect == "sqlite" else config.db_schema
    return warehouse_tables(schema, config.table_name)


def create_warehouse_engine(config: WarehouseConfig) -> Engine:
    """A new engine for ``config``; the caller disposes it. Parameters never appear in errors."""
    url = config.sqlalchemy_url
    if config.dialect == "sqlite":
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        return create_engine(url, hide_parameters=True, connect_args={"timeout": 60})
    if config.dialect != "postgresql":
        raise WarehouseError(
            f"unsupported warehouse dialect {config.dialect!r}: use postgresql+psycopg2:// "
            "(or sqlite:/// for a local try-out)"
        )
    return create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=config.pool_size,
        pool_timeout=config.pool_timeout_seconds,
        connect_args={"connect_timeout": 10, "application_name": "daily-sales-etl"},
    )


def describe_engine(engine: Engine) -> str:
    """The engine's URL with the password masked, for logs and summaries."""
    return engine.url.render_as_string(hide_password=True)


def ensure_tables(engine: Engine, tables: WarehouseTables) -> None:
    """Create the schema and tables if missing (safe under concurrent runs)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('daily_sales_etl:ddl'))"))
            schema = tables.metadata.schema
            # CREATE SCHEMA needs CREATE on the database even when the schema exists: a role
            # granted only its schema (the usual production setup) must not need it.
            if schema and not inspect(conn).has_schema(schema):
                conn.execute(CreateSchema(schema, if_not_exists=True))
        tables.metadata.create_all(conn, checkfirst=True)


def _stage_tables(dialect: str) -> tuple[Table, Table, Table]:
    metadata = MetaData()
    temp: dict[str, Any] = {"prefixes": ["TEMPORARY"]}
    if dialect == "postgresql":
        temp["postgresql_on_commit"] = "DROP"
    stage_sales = Table(
        "_stage_sales",
        metadata,
        Column("record_index", BigInteger, nullable=False),
        Column("sale_id", Text),
        Column("sale_date", TIMESTAMPTZ),
        Column("store_id", Text),
        Column("product_id", Text),
        Column("customer_id", Text),
        Column("quantity", Integer),
        Column("unit_price", MONEY),
        Column("amount", MONEY),
        Column("currency", Text),
        Column("updated_at", TIMESTAMPTZ),
        **temp,
    )
    stage_rejected = Table(
        "_stage_rejected",
        metadata,
        Column("record_index", BigInteger, nullable=False),
        Column("sale_id", Text),
        Column("updated_at", TIMESTAMPTZ),
        Column("reason", Text),
        Column("detail", Text),
        Column("raw_record", Text),
        Column("record_hash", Text),
        **temp,
    )
    winners = Table(
        "_stage_winners",
        metadata,
        Column("record_index", BigInteger, primary_key=True),
        **temp,
    )
    return stage_sales, stage_rejected, winners


def _insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# psycopg2 reads the COPY source in 8 KiB calls by default; 1 MiB calls cut the Python overhead.
_COPY_READ_BYTES = 1 << 20


def _utc_wall_clock(batch: pa.Table) -> pa.Table:
    """Timestamps with a time zone as naive UTC wall-clock times, for the CSV writer.

    Arrow formats zoned timestamps through a time-zone lookup per value (about 6x slower for
    this table than naive ones); the instants are the same, and the load transaction reads them
    back as UTC (``SET LOCAL TIME ZONE 'UTC'`` in :func:`load_day`).
    """
    for i, column in enumerate(batch.schema):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            naive = batch.column(i).cast(pa.timestamp(column.type.unit))
            batch = batch.set_column(i, column.name, naive)
    return batch


def _copy(conn: Connection, table: Table, batch: pa.Table, columns: tuple[str, ...]) -> None:
    """Bulk-load an Arrow batch into a staging table (COPY on PostgreSQL)."""
    if batch.num_rows == 0:
        return
    batch = batch.select(list(columns))
    if conn.dialect.name == "postgresql":
        batch = _utc_wall_clock(batch)
        buffer = io.BytesIO()
        pacsv.write_csv(
            batch, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed")
        )
        buffer.seek(0)
        column_list = ", ".join(columns)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(
                f"COPY {table.name} ({column_list}) FROM STDIN WITH (FORMAT csv)",
                buffer,
                size=_COPY_READ_BYTES,
            )
        finally:
            cursor.close()
    else:
        rows = batch.to_pylist()
        for row in rows:
            for name in ("unit_price", "amount"):
                if name in row and row[name] is not None:
                    row[name] = str(row[name])
        conn.execute(table.insert(), rows)


def load_day(
    engine: Engine,
    tables: WarehouseTables,
    day: date,
    run_id: str,
    sales_batches: Iterable[pa.Table],
    rejected_batches: Iterable[pa.Table],
    loaded_at: datetime,
) -> LoadStats:
    """Load one day idempotently; see the module docstring for the steps."""
    dialect = engine.dialect.name
    sales, rejected = tables.sales, tables.rejected
    stage_sales, stage_rejected, winners = _stage_tables(dialect)
    with engine.begin() as conn:
        if dialect == "postgresql":
            key = f"daily_sales_etl:{sales.fullname}:{day.isoformat()}"
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            # COPY receives timestamps as naive UTC text (see _utc_wall_clock); only for this
            # transaction, and no statement below depends on the session time zone.
            conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        for table in (stage_sales, stage_rejected, winners):
            if dialect != "postgresql":
                table.drop(conn, checkfirst=True)
            table.create(conn)
        for batch in sales_batches:
            _copy(conn, stage_sales, batch, ("record_index", *BUSINESS_COLUMNS))
        for batch in rejected_batches:
            _copy(conn, stage_rejected, batch, REJECT_STAGE_COLUMNS)
        if dialect == "postgresql":
            # Temporary tables are never auto-analyzed: give the planner real row counts and
            # distributions for the joins below (a sample, well under a second per million).
            conn.execute(text(f"ANALYZE {stage_sales.name}, {stage_rejected.name}"))

        versions = (
            select(stage_sales.c.sale_id, stage_sales.c.updated_at, stage_sales.c.record_index)
            .union_all(
                select(
                    stage_rejected.c.sale_id,
                    stage_rejected.c.updated_at,
                    stage_rejected.c.record_index,
                ).where(stage_rejected.c.sale_id.is_not(None))
            )
            .subquery("versions")
        )
        ranked = select(
            versions.c.record_index,
            func.row_number()
            .over(
                partition_by=versions.c.sale_id,
                order_by=(
                    versions.c.updated_at.desc().nulls_last(),
                    versions.c.record_index.desc(),
                ),
            )
            .label("rn"),
        ).subquery("ranked")
        conn.execute(
            winners.insert().from_select(
                ["record_index"], select(ranked.c.record_index).where(ranked.c.rn == 1)
            )
        )
        is_winner = stage_sales.c.record_index.in_(select(winners.c.record_index))
        staged = _scalar(conn, select(func.count()).select_from(stage_sales))
        staged_rejected = _scalar(conn, select(func.count()).select_from(stage_rejected))
        rejected_with_id = _scalar(
            conn,
            select(func.count())
            .select_from(stage_rejected)
            .where(stage_rejected.c.sale_id.is_not(None)),
        )
        winner_count = _scalar(conn, select(func.count()).select_from(winners))
        valid_winners = _scalar(conn, select(func.count()).where(is_winner))

        insert = _insert(dialect, sales)
        source = select(
            *(stage_sales.c[name] for name in BUSINESS_COLUMNS),
            literal(run_id, Text).label("run_id"),
            literal(loaded_at, TIMESTAMPTZ).label("loaded_at"),
        ).where(is_winner, true())
        changed = or_(*(sales.c[n].is_distinct_from(insert.excluded[n]) for n in BUSINESS_COLUMNS))
        set_ = {n: insert.excluded[n] for n in (*BUSINESS_COLUMNS[1:], "run_id", "loaded_at")}
        newer_and_changed = and_(sales.c.updated_at <= insert.excluded.updated_at, changed)
        if dialect == "postgresql":
            # Rows identical to the stored ones are left out before the upsert (a hash anti-join
            # instead of one speculative insert, tuple lock and WHERE per conflicting row); the
            # ON CONFLICT guard would have written nothing for them anyway. xmax = 0 tells an
            # inserted row from an updated one, so no separate count of existing rows is needed.
            identical = (
                select(literal(1))
                .where(
                    sales.c.sale_id == stage_sales.c.sale_id,
                    *(sales.c[n].is_not_distinct_from(stage_sales.c[n]) for n in BUSINESS_COLUMNS),
                )
                .exists()
            )
            upsert = (
                insert.from_select(
                    [*BUSINESS_COLUMNS, "run_id", "loaded_at"], source.where(~identical)
                )
                .on_conflict_do_update(
                    index_elements=[sales.c.sale_id], set_=set_, where=newer_and_changed
                )
                .returning(literal_column("xmax = 0").label("inserted"))
                .cte("upsert")
            )
            written_rows = conn.execute(
                select(
                    func.count().filter(upsert.c.inserted),
                    func.count().filter(~upsert.c.inserted),
                )
            ).one()
            inserted, updated = int(written_rows[0]), int(written_rows[1])
            existing = valid_winners - inserted
        else:
            existing = _scalar(
                conn,
                select(func.count())
                .select_from(stage_sales.join(sales, sales.c.sale_id == stage_sales.c.sale_id))
                .where(is_winner),
            )
            upsert = insert.from_select([*BUSINESS_COLUMNS, "run_id", "loaded_at"], source)
            upsert = upsert.on_conflict_do_update(
                index_elements=[sales.c.sale_id], set_=set_, where=newer_and_changed
            )
            written = conn.execute(upsert).rowcount
            inserted = valid_winners - existing
            updated = written - inserted

        final_rejects = (
            select(stage_rejected)
            .where(
                or_(
                    stage_rejected.c.sale_id.is_(None),
                    stage_rejected.c.record_index.in_(select(winners.c.record_index)),
                )
            )
            .subquery("final_rejects")
        )
        conn.execute(
            rejected.delete().where(
                rejected.c.business_date == bindparam("day", day, Date),
                rejected.c.record_hash.not_in(select(final_rejects.c.record_hash)),
            )
        )
        reject_insert = _insert(dialect, rejected)
        reject_source = (
            select(
                literal(day, Date).label("business_date"),
                final_rejects.c.record_hash,
                func.min(final_rejects.c.sale_id),
                func.min(final_rejects.c.reason),
                func.min(final_rejects.c.detail),
                func.min(final_rejects.c.raw_record),
                func.count().label("occurrences"),
                literal(run_id, Text).label("run_id"),
                literal(loaded_at, TIMESTAMPTZ).label("rejected_at"),
            )
            .where(true())
            .group_by(final_rejects.c.record_hash)
        )
        reject_upsert = reject_insert.from_select(
            [
                "business_date",
                "record_hash",
                "sale_id",
                "reason",
                "detail",
                "raw_record",
                "occurrences",
                "run_id",
                "rejected_at",
            ],
            reject_source,
        ).on_conflict_do_update(
            index_elements=[rejected.c.business_date, rejected.c.record_hash],
            set_={"occurrences": reject_insert.excluded.occurrences},
            where=rejected.c.occurrences.is_distinct_from(reject_insert.excluded.occurrences),
        )
        conn.execute(reject_upsert)
        reject_rows = _scalar(
            conn,
            select(func.count()).select_from(rejected).where(rejected.c.business_date == day),
        )
        _reconcile(conn, sales, stage_sales, is_winner)
        if dialect != "postgresql":
            for table in (stage_sales, stage_rejected, winners):
                table.drop(conn)
    return LoadStats(
        staged=staged,
        staged_rejected=staged_rejected,
        winners=winner_count,
        inserted=inserted,
        updated=updated,
        unchanged=existing - updated,
        rejected=reject_rows,
        superseded=staged + rejected_with_id - winner_count,
    )


def _scalar(conn: Connection, statement: Any) -> int:
    return int(conn.execute(statement).scalar_one())


def _reconcile(conn: Connection, sales: Table, stage_sales: Table, is_winner: Any) -> None:
    """dbt-style checks inside the transaction: a failure rolls the whole day back."""
    missing = _scalar(
        conn,
        select(func.count())
        .select_from(stage_sales.outerjoin(sales, sales.c.sale_id == stage_sales.c.sale_id))
        .where(
            is_winner, or_(sales.c.sale_id.is_(None), sales.c.updated_at < stage_sales.c.updated_at)
        ),
    )
    if missing:
        raise WarehouseError(
            f"reconciliation failed: {missing} valid sales of this load are missing from "
            f"{sales.fullname} or older there than loaded; the load was rolled back"
        )
