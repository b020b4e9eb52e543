"""The PostgreSQL warehouse: its tables and the idempotent load of one day, in one transaction.

A load (:func:`load_day`) is a short list of named steps, like the CTEs of a dbt model::

    lock_day          advisory lock of the day: concurrent runs of one day queue up
    skip_if_loaded    the ledger already holds this snapshot of the day: nothing to do
    new_day           on a day the warehouse holds nothing of, the sales alone of their
      find_lone       sale_id win unjudged: not staged, COPYed as new under a savepoint (a
                      sale_id stored under another day: rolled back, every version judged)
    stage             COPY each sale's version (id, updated_at, index) and the rejects into
                      temporary tables
    pick_winners      per sale_id the newest well-formed version (a sale or a void), and
                      whether it is at least as new as what the warehouse holds
    write_sales       the winning rows, read again from the batches: new sales COPYed straight
                      into the table, stored ones staged and updated where a column changed
    remove_voided     winning voids delete their sale from ``sales``
    keep_rejects      rejects superseded by a winner go; this load's rejects are kept
    reconcile         every winner landed (the new ones as COPY counted them), no voided sale
                      left; day totals; COMMIT with a ledger row (the high-water mark included)

Every statement joins on keys (hash, merge or index joins): none scans a table once per row of
another, whatever ``work_mem`` is (``tests/sales_etl/test_load_plans.py`` checks the plans).

The invariant after any sequence of loads of a day, for every ``sale_id``: the newest
well-formed version seen so far decides. A sale (``amount > 0``) is the one row of ``sales``;
a void (``amount <= 0``) means no row in ``sales`` and the void in ``sales_rejected``. Malformed
records never replace a well-formed version: those newer than it are kept in ``sales_rejected``
(quarantined), older ones are dropped as superseded.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import queue
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import unquote

import numpy as np
import psycopg2.errors
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    Engine,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateSchema
from sqlalchemy.sql.elements import TextClause

from sales_etl import pgbinary, schema
from sales_etl.counts import LoadCounts
from sales_etl.errors import WarehouseError
from sales_etl.memory import MMAP_THRESHOLD_BYTES
from sales_etl.settings import WarehouseConfig
from sales_etl.snapshots import LakeTables
from sales_etl.validate import NON_POSITIVE_AMOUNT
from sales_etl.versions import is_among, repeated_hashes, string_hashes

# What a load writes of a sale: the contract's fields and the fields outside it (jsonb).
BUSINESS_COLUMNS: tuple[str, ...] = (*schema.FIELD_NAMES, schema.EXTRA.name)
STAGE_SALES_COLUMNS: tuple[str, ...] = tuple(c.name for c in schema.CLEAN_COLUMNS)
# What the winners are picked from: each sale's version, not its whole row.
_VERSION_SPECS: tuple[schema.Column, ...] = tuple(
    c for c in schema.CLEAN_COLUMNS if c.name in ("record_index", "sale_id", "updated_at")
)
_VERSION_COLUMNS: tuple[str, ...] = tuple(c.name for c in _VERSION_SPECS)
# What the rejects to keep are judged from: all but the record's text and the detail.
_REJECT_VERSION_SPECS: tuple[schema.Column, ...] = tuple(
    c for c in schema.REJECTED_COLUMNS if c.name not in ("detail", "raw_record")
)
_REJECT_VERSION_COLUMNS: tuple[str, ...] = tuple(c.name for c in _REJECT_VERSION_SPECS)
# A kept reject's count of copies in the load (its record_hash once per day).
_OCCURRENCES = schema.Column("occurrences", pa.int32(), Integer(), nullable=False)
# The columns COPY sends as jsonb (the others' types follow from their Arrow types).
_JSONB_COLUMNS = frozenset({schema.EXTRA.name})
# The Arrow type COPY sends each column as (binary COPY data is typed): a batch with another
# type the value casts from (an int64 quantity, a string raw record, a timestamp in ns) is cast.
_COPY_TYPES: Mapping[str, pa.DataType] = {
    **{c.name: c.arrow for c in (*schema.CLEAN_COLUMNS, *schema.REJECTED_COLUMNS)},
    schema.BUSINESS_DATE.name: schema.BUSINESS_DATE.arrow,
    _OCCURRENCES.name: _OCCURRENCES.arrow,
}
# What a load writes of a reject it keeps.
_REJECTS_WRITTEN: tuple[str, ...] = (
    schema.BUSINESS_DATE.name,
    *(c.name for c in schema.REJECTED_COLUMNS if c.name != "record_index"),
    _OCCURRENCES.name,
)
# Which load wrote a row, and when, are filled in by the server: the load sets RUN_ID_SETTING
# for its transaction, and a row it writes takes that and the transaction's start (now()) as
# its defaults. COPY sends the business columns only: the two stamps were a third of the bytes
# of a sale (1M/10% day, as CSV: 183 -> 123 MB; the COPY 4.4 -> 3.6 s, benchmarks/RESULTS.md).
RUN_ID_SETTING = "daily_sales.run_id"
_RUN_ID_DEFAULT = text(f"current_setting('{RUN_ID_SETTING}', true)")
_LOAD_START = text("now()")


@dataclass(frozen=True)
class WarehouseTables:
    """The target tables, bound to the configured schema and table name."""

    metadata: MetaData
    sales: Table
    rejected: Table
    ledger: Table


@dataclass(frozen=True)
class LoadSource:
    """What a load brings, as the ledger records it."""

    snapshot_id: str = ""
    mode: str = "full"  # "full": the whole day; "incremental": records changed since a mark
    records: int | None = None
    rejects_by_reason: Mapping[str, int] = field(default_factory=dict)
    schema_change: str | None = None  # how the source's shape changed (sales_etl.contract)


@dataclass(frozen=True)
class LoadStats(LoadCounts):
    """What one load did (or, when ``skipped``, what the ledger says the earlier load did): its
    :class:`~sales_etl.counts.LoadCounts`, and how it went."""

    winners: int = 0  # sale ids whose newest version this load applied
    skipped: bool = False
    step_seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> LoadCounts:
        """The counters alone, as the ledger keeps them."""
        return LoadCounts(**self.as_row())

    def describe_steps(self) -> str:
        """``stage 2.51 s, winners 1.20 s, ...``: where the load's time went, step by step."""
        return ", ".join(f"{step} {seconds:.2f} s" for step, seconds in self.step_seconds.items())


# psycopg2 reads the COPY source in 8 KiB calls by default; larger calls cut the Python overhead.
# Each call's bytes are a new block: under the C library's threshold for a mapping of its own,
# it comes from the heap and is reused, not mapped and faulted in afresh (1 MiB calls: +0.1-0.3 s
# of page faults in a 1M-record load). 64 KiB.
_COPY_READ_BYTES = MMAP_THRESHOLD_BYTES // 4
# Rows per chunk of the rejects' text on its way to COPY (each carries its raw record).
_REJECT_CHUNK_ROWS = 4_096
# Rows per COPY chunk: a clean part is cut into slices this long (no copy), so the COPY data in
# flight (two chunks ahead of the COPY) stays a few MB whatever the parts' size.
_COPY_CHUNK_ROWS = 8_192


def warehouse_tables(schema_name: str | None, table_name: str = "sales") -> WarehouseTables:
    """``sales``, ``sales_rejected`` and ``sales_load_ledger`` (names follow ``table_name``)."""
    metadata = MetaData(schema=schema_name)
    sales = Table(
        table_name,
        metadata,
        *_columns(schema.SALE_FIELDS),
        _column(schema.EXTRA),
        _column(schema.RUN_ID, _RUN_ID_DEFAULT),
        _column(schema.LOADED_AT, _LOAD_START),
        PrimaryKeyConstraint("sale_id"),
        # The day's rows sit together in the heap (each load appends its day): a BRIN index
        # finds a day's range for the day totals at almost no write cost.
        Index(f"ix_{table_name}_sale_date", "sale_date", postgresql_using="brin"),
    )
    rejected = Table(
        f"{table_name}_rejected",
        metadata,
        _column(schema.BUSINESS_DATE),
        *_columns(tuple(c for c in schema.REJECTED_COLUMNS if c.name != "record_index")),
        _column(_OCCURRENCES),
        _column(schema.RUN_ID, _RUN_ID_DEFAULT),
        Column("rejected_at", DateTime(timezone=True), nullable=False, server_default=_LOAD_START),
        PrimaryKeyConstraint("business_date", "record_hash"),
        Index(f"ix_{table_name}_rejected_sale_id", "sale_id"),
    )
    ledger = Table(
        f"{table_name}_load_ledger",
        metadata,
        Column("load_id", BigInteger, Identity(), primary_key=True),
        _column(schema.BUSINESS_DATE),
        Column("status", Text, nullable=False),  # loaded | failed
        Column("mode", Text, nullable=False),  # full | incremental
        Column("snapshot_id", Text, nullable=False),
        _column(schema.RUN_ID),
        Column("records", BigInteger),
        *LoadCounts.ledger_columns(),
        Column("rejects_by_reason", Text),
        Column("seconds", Double),
        Column("message", Text),
        Column("finished_at", DateTime(timezone=True), nullable=False),
        Column("schema_change", Text),  # added in place to older ledgers (ADDED_COLUMNS)
        Index(f"ix_{table_name}_load_ledger_day", "business_date", "finished_at"),
    )
    return WarehouseTables(metadata, sales, rejected, ledger)


def _column(spec: schema.Column, default: TextClause | None = None) -> Column[Any]:
    return Column(spec.name, spec.sql, nullable=spec.nullable, server_default=default)


def _columns(specs: tuple[schema.Column, ...]) -> list[Column[Any]]:
    return [_column(spec) for spec in specs]


def tables_for(config: WarehouseConfig) -> WarehouseTables:
    return warehouse_tables(config.db_schema, config.table_name)


@contextlib.contextmanager
def warehouse_engine(config: WarehouseConfig) -> Iterator[Engine]:
    """``with warehouse_engine(config) as engine:``: an engine disposed at the end of the block."""
    engine = create_warehouse_engine(config)
    try:
        yield engine
    finally:
        engine.dispose()


def create_warehouse_engine(config: WarehouseConfig) -> Engine:
    """A new engine for ``config``; the caller disposes it. Parameters never appear in errors."""
    if config.dialect != "postgresql":
        raise WarehouseError(
            f"unsupported warehouse dialect {config.dialect!r}: the warehouse is PostgreSQL "
            "(postgresql://user@host/db, or leave WAREHOUSE_URL unset for the embedded one)"
        )
    return create_engine(
        config.sqlalchemy_url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=config.pool_size,
        pool_timeout=config.pool_timeout_seconds,
        connect_args={"connect_timeout": 10, "application_name": "daily-sales-etl"},
    )


def read_failed(what: str, engine: Engine, exc: DBAPIError) -> WarehouseError:
    """The error to raise when reading ``what`` from the warehouse failed: the driver's first
    line and the engine's masked URL, never the statement's parameters."""
    reason = driver_reason(exc)
    return WarehouseError(f"reading {what} from {describe_engine(engine)} failed: {reason}")


def driver_reason(exc: DBAPIError) -> str:
    """The first line of the driver's error (it names host and database, never a password)."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__


def describe_engine(engine: Engine) -> str:
    """The engine's URL with the password masked, for logs and summaries (a socket directory
    in the query string shown as a path, not %2F-escaped)."""
    return unquote(engine.url.render_as_string(hide_password=True))


def ensure_tables(engine: Engine, tables: WarehouseTables) -> None:
    """Create the schema and tables if missing (safe under concurrent runs)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('daily_sales_etl:ddl'))"))
        schema_name = tables.metadata.schema
        # CREATE SCHEMA needs CREATE on the database even when the schema exists: a role
        # granted only its schema (the usual production setup) must not need it.
        if schema_name and not inspect(conn).has_schema(schema_name):
            conn.execute(CreateSchema(schema_name, if_not_exists=True))
        tables.metadata.create_all(conn, checkfirst=True)
        _widen_ledger_totals(conn, tables)
        _add_new_columns(conn, tables)
        _add_stamp_defaults(conn, tables)


# Ledger columns created with a bounded numeric type by older versions, widened in place.
WIDE_TOTALS: tuple[str, ...] = ("day_amount",)


def _widen_ledger_totals(conn: Connection, tables: WarehouseTables) -> None:
    """ALTER an existing ledger's totals to plain ``numeric`` (no rewrite: PostgreSQL only
    drops the type modifier; the table and its rows stay)."""
    ledger = tables.ledger
    bounded = conn.execute(
        text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = coalesce(:schema, current_schema()) AND table_name = :table "
            "AND column_name IN :columns AND numeric_precision IS NOT NULL"
        ).bindparams(bindparam("columns", expanding=True)),
        {"schema": ledger.schema, "table": ledger.name, "columns": list(WIDE_TOTALS)},
    ).scalars()
    quote = conn.dialect.identifier_preparer
    for column in bounded:
        conn.execute(
            text(
                f"ALTER TABLE {quote.format_table(ledger)} "
                f"ALTER COLUMN {quote.quote(column)} TYPE numeric"
            )
        )


# Columns later versions added to existing tables: (table attribute, column), added in place.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("sales", "extra"), ("ledger", "schema_change"))


def _add_new_columns(conn: Connection, tables: WarehouseTables) -> None:
    """ALTER a table created by an older version: ``ADD COLUMN`` of each column it lacks (a
    nullable column without a default: PostgreSQL changes only the catalog, no row is
    rewritten, nothing is recreated or reloaded)."""
    quote = conn.dialect.identifier_preparer
    for attribute, name in ADDED_COLUMNS:
        table: Table = getattr(tables, attribute)
        if _has_default(conn, table, name) is None:
            column = table.c[name]
            conn.execute(
                text(
                    f"ALTER TABLE {quote.format_table(table)} ADD COLUMN IF NOT EXISTS "
                    f"{quote.quote(name)} {column.type.compile(dialect=conn.dialect)}"
                )
            )


def _has_default(conn: Connection, table: Table, column: str) -> bool | None:
    """Whether ``column`` of ``table`` has a default; None when the table lacks the column.

    The catalog's flag, not information_schema's ``column_default``: deparsing a default opens
    the table, and waits behind any lock on it (a stopped load records its failure after
    :func:`ensure_tables`; it hung there behind the lock it was stopped on).
    """
    flag: bool | None = conn.execute(
        text(
            "SELECT a.atthasdef FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = coalesce(:schema, current_schema()) AND c.relname = :table "
            "AND a.attname = :column AND NOT a.attisdropped"
        ),
        {"schema": table.schema, "table": table.name, "column": column},
    ).scalar_one_or_none()
    return flag


# Columns whose server default later versions added to existing tables: (table attribute,
# column), set in place.
STAMP_COLUMNS: tuple[tuple[str, str, TextClause], ...] = (
    ("sales", schema.RUN_ID.name, _RUN_ID_DEFAULT),
    ("sales", schema.LOADED_AT.name, _LOAD_START),
    ("rejected", schema.RUN_ID.name, _RUN_ID_DEFAULT),
    ("rejected", "rejected_at", _LOAD_START),
)


def _add_stamp_defaults(conn: Connection, tables: WarehouseTables) -> None:
    """ALTER a table created by an older version: ``SET DEFAULT`` of each stamp column without
    its default (the catalog only: no row is rewritten)."""
    quote = conn.dialect.identifier_preparer
    for attribute, name, default in STAMP_COLUMNS:
        table: Table = getattr(tables, attribute)
        if _has_default(conn, table, name) is False:
            conn.execute(
                text(
                    f"ALTER TABLE {quote.format_table(table)} ALTER COLUMN {quote.quote(name)} "
                    f"SET DEFAULT {default.text}"
                )
            )


# ---------------------------------------------------------------------------------------------
# The load


@dataclass
class _Load:
    """The state one load passes from step to step."""

    conn: Connection
    tables: WarehouseTables
    day: date
    run_id: str
    loaded_at: datetime
    staged: int = 0
    staged_rejected: int = 0
    last_index: dict[str, int] = field(default_factory=dict)  # per staging table, the largest
    # record_index staged (sizes the arrays that map a record to its part in the write)
    rejected_with_id: int = 0  # staged rejects that name a sale_id
    lone: _Lone | None = None  # on a new day: the versions that win unjudged (not staged)
    newest_seen: datetime | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    plans: list[tuple[str, Any]] | None = None

    def sql(self, template: str) -> str:
        """``template`` with {sales}, {rejected} and {ledger} as quoted table names."""
        quote = self.conn.dialect.identifier_preparer.format_table
        return template.format(
            sales=quote(self.tables.sales),
            rejected=quote(self.tables.rejected),
            ledger=quote(self.tables.ledger),
        )

    def run(self, step: str, template: str, **params: Any) -> Any:
        statement = self.sql(template)
        if self.plans is not None:
            plan = self.conn.execute(text("EXPLAIN (FORMAT JSON) " + statement), params)
            self.plans.append((step, plan.scalar_one()))
        started = time.perf_counter()
        result = self.conn.execute(text(statement), params)
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started
        return result


def load_day(
    engine: Engine,
    tables: WarehouseTables,
    day: date,
    run_id: str,
    sales_batches: Iterable[pa.Table],
    rejected_batches: Iterable[pa.Table],
    source: LoadSource | None = None,
    *,
    force: bool = False,
    work_mem: str | None = "128MB",
    plans: list[tuple[str, Any]] | None = None,
    keep_extra: bool = True,
    new_day_shortcut: bool = True,
) -> LoadStats:
    """Load one day idempotently; see the module docstring for the steps.

    Args:
        sales_batches / rejected_batches: Arrow tables of the clean zone's two schemas. Each
            is read twice (the versions, then the rows to write): a list, or an iterable whose
            ``iter()`` starts over, like :func:`sales_etl.snapshots.iter_tables`.
        keep_extra: write each sale's fields outside the contract (``extra``, jsonb); False
            (``SCHEMA_CONTRACT=discard``) writes null there.
        source: what is loaded, for the ledger; a snapshot already in the ledger as loaded for
            this day is skipped unless ``force``.
        work_mem: ``SET LOCAL work_mem`` for the load's sorts and hashes (None: the server's).
        plans: when given, receives the ``EXPLAIN`` of every statement before it runs.
        new_day_shortcut: on a day the warehouse holds nothing of, the versions that are
            alone of their sale_id win without being staged and judged (:func:`_find_lone`);
            False judges every version (the tests compare the two ways).
    """
    source = source or LoadSource()
    if isinstance(sales_batches, Iterator) or isinstance(rejected_batches, Iterator):
        raise TypeError(
            "load_day reads its batches twice: pass lists or re-iterables, not iterators"
        )
    started = time.perf_counter()
    with engine.begin() as conn:
        loaded_at = _begin(conn, tables, day, run_id, work_mem)
        load = _Load(conn, tables, day, run_id, loaded_at, plans=plans)
        if source.snapshot_id and not force:
            earlier = _loaded_stats(load, source.snapshot_id)
            if earlier is not None:
                return earlier
        batches = (sales_batches, rejected_batches)
        if new_day_shortcut and _is_new_day(load):
            attempt = time.perf_counter()
            try:
                with conn.begin_nested():
                    load.lone = _find_lone(day, *batches)
                    load.seconds["find_lone"] = time.perf_counter() - attempt
                    return _apply(load, *batches, source, keep_extra, started)
            except psycopg2.errors.UniqueViolation as exc:
                if exc.diag.table_name != tables.sales.name:
                    raise
                # A winner's sale_id is stored under another day: judge every version.
                load = _Load(conn, tables, day, run_id, loaded_at, plans=plans)
                load.seconds["new_day_refused"] = time.perf_counter() - attempt
        return _apply(load, *batches, source, keep_extra, started)


def _apply(
    load: _Load,
    sales_batches: Iterable[pa.Table],
    rejected_batches: Iterable[pa.Table],
    source: LoadSource,
    keep_extra: bool,
    started: float,
) -> LoadStats:
    """The load's steps after the lock (see the module docstring); returns its counts."""
    staging_started = time.perf_counter()
    _stage(load, sales_batches, rejected_batches)
    load.seconds["stage"] = time.perf_counter() - staging_started
    _pick_winners(load)
    sales = (_with_extra(batch, keep_extra) for batch in sales_batches)
    inserted, updated = _write_sales(load, sales)
    voided = _remove_voided(load)
    malformed_kept, quarantined = _keep_rejects(load, rejected_batches)
    stats = _reconcile(load, inserted, updated, voided, malformed_kept, quarantined)
    _write_ledger(load, source, stats, time.perf_counter() - started)
    return stats


def _begin(
    conn: Connection, tables: WarehouseTables, day: date, run_id: str, work_mem: str | None
) -> datetime:
    """Lock the day, set the transaction's settings (the run id the written rows take); returns
    the transaction's start, which every row it writes takes as ``loaded_at``."""
    key = f"daily_sales_etl:{tables.sales.fullname}:{day.isoformat()}"
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    # The times the load reads back (the ledger's high-water mark) come as UTC whatever the
    # server's zone, like the batches' own; only for this transaction.
    conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    # No JIT compilation: it pays off over long scans of wide rows, not over these statements
    # (a plan costed above jit_above_cost spent 0.35 s compiling to run in 0.45 s).
    conn.execute(text("SET LOCAL jit = off"))
    # The temporary tables it ANALYZEs need row counts and rough distributions: a sample of
    # 3,000 rows each, not the default 30,000 (the staging's ANALYZE 0.125 -> 0.03 s, same plans).
    conn.execute(text("SET LOCAL default_statistics_target = 10"))
    # An index probe priced as a read from a disk that seeks (the default 4.0) made the planner
    # hash the whole sales table to look up a few thousand ids (an incremental day's winners, a
    # new day's voids); the rows the load probes sit in memory or on SSD. The plans of the big
    # joins stay hash joins (EXPLAIN of a full revision: unchanged).
    conn.execute(text("SET LOCAL random_page_cost = 1.1"))
    if work_mem is not None:
        conn.execute(text("SELECT set_config('work_mem', :value, true)"), {"value": work_mem})
    started: datetime = conn.execute(
        text("SELECT set_config(:setting, :run_id, true), now()"),
        {"setting": RUN_ID_SETTING, "run_id": run_id},
    ).one()[1]
    return started


def _loaded_stats(load: _Load, snapshot_id: str) -> LoadStats | None:
    """The ledger's counts of an earlier successful load of this snapshot, if any."""
    row = (
        load.run(
            "skip_if_loaded",
            f"SELECT {', '.join(LoadCounts.names())}"
            """
            FROM {ledger}
            WHERE business_date = :day AND snapshot_id = :snapshot AND status = 'loaded'
            ORDER BY finished_at DESC
            LIMIT 1
            """,
            day=load.day,
            snapshot=snapshot_id,
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    earlier = LoadCounts.from_row(row)
    return LoadStats(
        **{
            **earlier.as_row(),
            # Nothing changes now: what the earlier load applied is unchanged by this one.
            "inserted": 0,
            "updated": 0,
            "unchanged": earlier.inserted + earlier.updated + earlier.unchanged,
            "voided": 0,
        },
        skipped=True,
    )


def _with_extra(batch: pa.Table, keep: bool) -> pa.Table:
    """A clean batch with its ``extra`` column, or null there when not ``keep`` (or when the
    batch comes from a clean snapshot written before the column existed)."""
    name = schema.EXTRA.name
    if keep and name in batch.column_names:
        return batch
    nulls = pa.nulls(batch.num_rows, schema.EXTRA.arrow)
    if name in batch.column_names:
        return batch.set_column(batch.schema.get_field_index(name), name, nulls)
    return batch.append_column(name, nulls)


def _is_new_day(load: _Load) -> bool:
    """Whether the warehouse holds nothing of the day: no sale dated that day, no reject."""
    start, end = _day_range(load.day)
    held = load.run(
        "new_day",
        """
        SELECT EXISTS (SELECT FROM {sales} WHERE sale_date >= :start AND sale_date < :end)
            OR EXISTS (SELECT FROM {rejected} WHERE business_date = :day)
        """,
        start=start,
        end=end,
        day=load.day,
    ).scalar_one()
    return not held


@dataclass
class _Lone:
    """The sales of a load that are the only version of their sale_id (no other sale, void or
    malformed record names it), by record_index. On a day the warehouse holds nothing of, such
    a version is the winner, new to the table (its COPY checks that: a sale_id stored under
    another day violates the primary key, and the load judges every version instead). They
    are not staged nor judged: ~90% of a realistic day.
    """

    day: date
    repeated: np.ndarray  # the hashes of the sale ids of more than one version, sorted
    mask: np.ndarray  # per record_index: a lone version
    read: tuple[int, int]  # (sales, rejects) read to find them
    hashes: collections.deque[np.ndarray]  # each sales batch's id hashes, not yet split
    rows: int = 0
    newest: datetime | None = None  # of the batches split

    def split(self, batch: pa.Table) -> pa.Table:
        """Record the lone versions of the next sales batch (the batches in the order
        :func:`_find_lone` read them); returns the others (to stage)."""
        hashes = self.hashes.popleft() if self.hashes else None
        if hashes is None or len(hashes) != batch.num_rows:
            raise _snapshot_changed(self.day)
        alone = ~is_among(hashes, self.repeated)
        if not alone.any():
            return batch
        # numpy on the column's buffer, no Arrow table of the lone rows: this runs on the
        # staging thread, whose Arrow allocations stay resident (~25 MB at 1M records).
        index = _record_indexes(self.day, batch, len(self.mask) - 1)[alone]
        self.mask[index] = True
        self.rows += len(index)
        self.newest = _newest(self.newest, pc.max(batch.column("updated_at")).as_py())
        return _rows_where(batch, ~alone)


def _newest(seen: datetime | None, other: datetime | None) -> datetime | None:
    """The later of two ``updated_at`` (None: none seen)."""
    if seen is None or (other is not None and other > seen):
        return other
    return seen


def _find_lone(
    day: date, sales_batches: Iterable[pa.Table], rejected_batches: Iterable[pa.Table]
) -> _Lone:
    """Read every sale's and reject's sale_id (and the sales' record indexes): 4 bytes a
    version for their hashes (the sales' kept for the staging's split), 1 a record for the
    mask, no copy of the ids."""
    sales_hashes: collections.deque[np.ndarray] = collections.deque()
    rejects_hashes, last_index, sales, rejects = [], -1, 0, 0
    for batch in _select(sales_batches, ("record_index", "sale_id")):
        sales_hashes.append(string_hashes(batch.column("sale_id")))
        sales += batch.num_rows
        if batch.num_rows:
            last_index = max(last_index, pc.max(batch.column("record_index")).as_py())
    for batch in _select(rejected_batches, ("sale_id",)):
        named = batch.column("sale_id").drop_null()
        rejects_hashes.append(string_hashes(named))
        rejects += batch.num_rows
    repeated = repeated_hashes([*sales_hashes, *rejects_hashes])
    mask = np.zeros(last_index + 1, dtype=bool)
    return _Lone(day, repeated, mask, (sales, rejects), sales_hashes)


def _select(batches: Iterable[pa.Table], columns: tuple[str, ...]) -> Iterable[pa.Table]:
    """The batches' ``columns`` only (from the lake, the other columns are not decoded)."""
    if isinstance(batches, LakeTables):
        return batches.select(columns)
    return (batch.select(list(columns)) for batch in batches)


def _stage(
    load: _Load, sales_batches: Iterable[pa.Table], rejected_batches: Iterable[pa.Table]
) -> None:
    """COPY each sale's and each reject's version (id, ``updated_at``, index; a reject's reason
    and hash too) into two temporary tables (dropped at COMMIT), then ANALYZE them.

    Only the versions: the winners and the rejects to keep are judged from them, and only the
    rows to write are read again and written, each once (:func:`_write_sales`,
    :func:`_write_new_rejects`). A background thread reads the batches
    and encodes them for COPY (Arrow releases the GIL) while this one sends the previous batch to
    the server: reading and COPY overlap.
    """
    stage_versions = _stage_table("_stage_versions", _VERSION_SPECS)
    stage_rejected = _stage_table("_stage_rejected", _REJECT_VERSION_SPECS)
    for table in (stage_versions, stage_rejected):
        table.create(load.conn)
    versions = _select(sales_batches, _VERSION_COLUMNS)
    if load.lone is not None:  # whole batches, as _find_lone read them
        versions = (load.lone.split(batch) for batch in versions)
    batches = itertools.chain(
        ((stage_versions.name, _VERSION_COLUMNS, b) for b in _slices(versions)),
        ((stage_rejected.name, _REJECT_VERSION_COLUMNS, b) for b in _slices(rejected_batches)),
    )
    for chunk in _prefetched((_CopyChunk.of(*item) for item in batches), depth=2):
        _copy(load.conn, chunk)
        load.last_index[chunk.table] = max(load.last_index.get(chunk.table, -1), chunk.last_index)
        if chunk.table == stage_versions.name:
            load.staged += chunk.rows
        else:
            load.staged_rejected += chunk.rows
            load.rejected_with_id += chunk.with_id
        load.newest_seen = _newest(load.newest_seen, chunk.newest)
    if load.lone is not None:
        _count_lone(load, load.lone, stage_versions.name)
    # Temporary tables are never auto-analyzed: give the planner real row counts and
    # distributions for the joins below (from a small sample: _begin).
    load.conn.execute(text("ANALYZE _stage_versions, _stage_rejected"))


def _count_lone(load: _Load, lone: _Lone, staged: str) -> None:
    """Count the lone versions as read, as if staged. The staging read what :func:`_find_lone`
    read, or the snapshot changed between the two readings."""
    load.staged += lone.rows
    if (load.staged, load.staged_rejected) != lone.read:
        raise _snapshot_changed(load.day)
    load.last_index[staged] = max(load.last_index.get(staged, -1), len(lone.mask) - 1)
    load.newest_seen = _newest(load.newest_seen, lone.newest)


def _slices(batches: Iterable[pa.Table], rows: int = _COPY_CHUNK_ROWS) -> Iterator[pa.Table]:
    """The batches cut into slices of at most ``rows`` rows."""
    for batch in batches:
        for start in range(0, max(batch.num_rows, 1), rows):
            yield batch.slice(start, rows)


@dataclass(frozen=True)
class _CopyChunk:
    """One batch, ready for COPY: its rows in the binary COPY format (:mod:`sales_etl.pgbinary`),
    its row count and its newest ``updated_at``."""

    table: str
    columns: tuple[str, ...]
    data: pgbinary.CopyData
    rows: int
    newest: datetime | None
    with_id: int  # rows whose sale_id is not null
    last_index: int  # the largest record_index, -1 for none

    @classmethod
    def of(cls, table: str, columns: tuple[str, ...], batch: pa.Table) -> _CopyChunk:
        newest = pc.max(batch.column("updated_at")).as_py() if batch.num_rows else None
        with_id = batch.num_rows - batch.column("sale_id").null_count
        last = pc.max(batch.column("record_index")).as_py() if batch.num_rows else None
        data = pgbinary.encode(_as_copied(batch.select(list(columns))), jsonb=_JSONB_COLUMNS)
        rows = int(batch.num_rows)
        return cls(table, columns, data, rows, newest, with_id, -1 if last is None else last)


def _as_copied(rows: pa.Table) -> pa.Table:
    """``rows`` with the types COPY sends (:data:`_COPY_TYPES`); the rows themselves when they
    have them already (the clean zone's batches)."""
    target = pa.schema([pa.field(name, _COPY_TYPES[name]) for name in rows.column_names])
    if rows.schema.equals(target):
        return rows
    return rows.cast(target)


_T = TypeVar("_T")


def _prefetched(items: Iterator[_T], depth: int) -> Iterator[_T]:
    """``items``, produced by a background thread up to ``depth`` ahead of the consumer.

    An exception in the producer is raised here; a consumer that stops early stops it.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(("item", item))
            slots.put(("done", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            slots.put(("error", exc))

    worker = threading.Thread(target=produce, name="copy-data", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        worker.join()


def _stage_table(name: str, columns: tuple[schema.Column, ...]) -> Table:
    return Table(
        name,
        MetaData(),
        *(Column(c.name, c.sql) for c in columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


def _copy(conn: Connection, chunk: _CopyChunk) -> int:
    """COPY one chunk into its table; returns the rows the server says it wrote."""
    if not chunk.rows:
        return 0
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            f"COPY {chunk.table} ({', '.join(chunk.columns)}) FROM STDIN WITH (FORMAT binary)",
            chunk.data.reader(),
            size=_COPY_READ_BYTES,
        )
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _pick_winners(load: _Load) -> None:
    """``_winners``: per sale_id of this load its newest well-formed version, and whether it is
    at least as new as the version the warehouse holds (a stored sale or a stored void)."""
    load.run(
        "pick_winners",
        """
        CREATE TEMPORARY TABLE _winners ON COMMIT DROP AS
        WITH versions AS (
            SELECT sale_id, updated_at, record_index, false AS is_void FROM _stage_versions
            UNION ALL
            SELECT sale_id, updated_at, record_index, true FROM _stage_rejected
            WHERE reason = :void AND sale_id IS NOT NULL AND updated_at IS NOT NULL
        ),
        newest AS (
            SELECT DISTINCT ON ((sale_id COLLATE "C")) sale_id, updated_at, record_index, is_void
            FROM versions
            ORDER BY sale_id COLLATE "C", updated_at DESC, record_index DESC
        ),
        stored_voids AS (
            SELECT sale_id, max(updated_at) AS updated_at FROM {rejected}
            WHERE business_date = :day AND reason = :void AND sale_id IS NOT NULL
            GROUP BY sale_id
        )
        SELECT n.sale_id, n.updated_at, n.record_index, n.is_void,
               s.sale_id IS NOT NULL AS in_sales,
               n.updated_at >= coalesce(greatest(s.updated_at, v.updated_at), '-infinity')
                   AS applies
        FROM newest n
        LEFT JOIN {sales} s ON s.sale_id = n.sale_id
        LEFT JOIN stored_voids v ON v.sale_id = n.sale_id
        """,
        day=load.day,
        void=NON_POSITIVE_AMOUNT,
    )
    load.conn.execute(text("ANALYZE _winners"))


_IDENTICAL = " AND ".join(f"s.{n} IS NOT DISTINCT FROM st.{n}" for n in BUSINESS_COLUMNS[1:])
_SET_FROM_STAGE = ", ".join(f"{n} = st.{n}" for n in BUSINESS_COLUMNS[1:])


def _write_sales(load: _Load, sales_batches: Iterable[pa.Table]) -> tuple[int, int]:
    """Write the winning sales, reading the batches once more; returns (inserted, updated).

    New sale_ids go straight into the table by COPY: no staging, no second pass on the server
    (the day lock keeps a concurrent run of the day out; a sale_id another day holds fails the
    load with a duplicate key). Stored ones are staged and updated only where a column differs,
    so a rerun that changes nothing writes nothing.
    """
    roles = _winning_roles(load)
    stage_sales = _stage_table("_stage_sales", schema.CLEAN_COLUMNS)
    stage_sales.create(load.conn)
    target = load.sql("{sales}")
    started = time.perf_counter()
    written = _copy_all(load, _winning_chunks(load, sales_batches, roles, target))
    load.seconds["copy_new_sales"] = time.perf_counter() - started
    inserted = written.get(target, 0)
    _check_written(load, "new winning sales", inserted, int((roles == _NEW).sum()))
    load.conn.execute(text("ANALYZE _stage_sales"))
    updated = load.run(
        "update_changed_sales",
        f"""
        UPDATE {{sales}} s SET {_SET_FROM_STAGE}, run_id = DEFAULT, loaded_at = DEFAULT
        FROM _winners w JOIN _stage_sales st ON st.record_index = w.record_index
        WHERE w.applies AND NOT w.is_void AND w.in_sales AND s.sale_id = w.sale_id
          AND s.updated_at <= st.updated_at AND NOT ({_IDENTICAL})
        """,
    ).rowcount
    return inserted, int(updated)


# The role of a staged sale in this load, by record_index (see _winning_roles).
_SKIP, _NEW, _STORED = 0, 1, 2


def _winning_roles(load: _Load) -> np.ndarray:
    """Per record_index of the staged sales: :data:`_NEW` for a winning sale the table does not
    hold, :data:`_STORED` for one it holds (to compare), :data:`_SKIP` for every other row."""
    roles = _indexed(
        load,
        "_stage_versions",
        f"SELECT record_index, {_NEW} + in_sales::int FROM _winners WHERE applies AND NOT is_void",
        np.int8,
    )
    if load.lone is not None:
        roles[load.lone.mask] = _NEW
    return roles


def _indexed(load: _Load, staged: str, query: str, dtype: type = np.int32) -> np.ndarray:
    """An array with a zero per record_index staged in ``staged``, set at each record_index
    ``query`` returns to the integer it returns with it (``dtype``: 1 or 4 bytes a record, the
    only memory that follows the day). For most records listed: see :func:`_listed`."""
    values: np.ndarray = np.zeros(load.last_index.get(staged, -1) + 1, dtype=dtype)
    for index, value in _listed(load, staged, query):
        values[index] = value
    return values


@dataclass(frozen=True)
class _Listed:
    """The (record_index, integer) pairs a query returned, by record_index: 12 bytes a pair,
    for a query that lists few of the records (a 5M-record day's new rejects: 6 MB where an
    array per record_index held 21)."""

    index: np.ndarray  # sorted
    values: np.ndarray
    last_index: int  # the largest record_index staged

    @classmethod
    def of(cls, load: _Load, staged: str, query: str) -> _Listed:
        pairs = list(_listed(load, staged, query))
        index = np.concatenate([np.zeros(0, np.int64), *(i for i, _ in pairs)])
        values = np.concatenate([np.zeros(0, np.int32), *(v.astype(np.int32) for _, v in pairs)])
        order = np.argsort(index, kind="stable")
        return cls(index[order], values[order], load.last_index.get(staged, -1))

    def at(self, load: _Load, batch: pa.Table) -> np.ndarray:
        """The values at the batch's record indexes, 0 where not listed."""
        wanted = _record_indexes(load.day, batch, self.last_index)
        found = np.zeros(len(wanted), dtype=self.values.dtype)
        if len(self.index):
            at = np.minimum(np.searchsorted(self.index, wanted), len(self.index) - 1)
            listed = self.index[at] == wanted
            found[listed] = self.values[at[listed]]
        return found


def _listed(load: _Load, staged: str, query: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (record_index, integer) pairs ``query`` returns, a megabyte of text at a time.

    Read by COPY as text into a temporary file (~11 bytes a row: ~50 MB for a 5M-record day,
    on disk, not in the process) and parsed by numpy: no object per row.
    """
    with tempfile.TemporaryFile() as listing:
        cursor = load.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", listing)
        finally:
            cursor.close()
        listing.seek(0)
        for lines in iter(lambda: listing.read(1 << 20) + listing.readline(), b""):
            pairs = np.fromstring(lines.replace(b"\n", b","), dtype=np.int64, sep=",")
            if len(pairs) != 2 * lines.count(b"\n"):
                raise WarehouseError(f"could not read the record indexes of {staged} back")
            yield pairs[0::2], pairs[1::2]


def _copy_all(load: _Load, chunks: Iterator[_CopyChunk]) -> dict[str, int]:
    """COPY the chunks (made two ahead in a background thread); the rows written per table."""
    written: dict[str, int] = {}
    for chunk in _prefetched(chunks, depth=2):
        written[chunk.table] = written.get(chunk.table, 0) + _copy(load.conn, chunk)
    return written


def _check_written(load: _Load, what: str, written: int, expected: int) -> None:
    """Every row the load meant to write was written, or raise (the load rolls back)."""
    if written != expected:
        raise WarehouseError(
            f"the load of {load.day} wrote {written} of its {expected} {what} (the clean "
            "snapshot changed while loading, or the table refused rows); the load was rolled "
            "back"
        )


def _rows_where(batch: pa.Table, mask: np.ndarray) -> pa.Table:
    """The batch's rows where ``mask`` holds (the batch itself when it holds everywhere)."""
    return batch if mask.all() else batch.filter(pa.array(mask))


def _with_constants(rows: pa.Table, **values: Any) -> pa.Table:
    """``rows`` with a column per keyword, the same value in every row."""
    for name, value in values.items():
        rows = rows.append_column(name, pa.repeat(pa.scalar(value), rows.num_rows))
    return rows


def _values_at(load: _Load, batch: pa.Table, values: np.ndarray) -> np.ndarray:
    """``values`` at the batch's record indexes."""
    return values[_record_indexes(load.day, batch, len(values) - 1)]


def _record_indexes(day: date, batch: pa.Table, last_index: int) -> np.ndarray:
    """The batch's record indexes; one past ``last_index``, the largest the staging saw (the
    clean snapshot changed between the two readings), fails the load."""
    index: np.ndarray = batch.column("record_index").to_numpy()
    if len(index) and index.max() > last_index:
        raise _snapshot_changed(day)
    return index


def _snapshot_changed(day: date) -> WarehouseError:
    return WarehouseError(
        f"the clean snapshot of {day} changed while it was loading; the load was rolled back"
    )


def _winning_chunks(
    load: _Load, sales_batches: Iterable[pa.Table], roles: np.ndarray, target: str
) -> Iterator[_CopyChunk]:
    """COPY chunks of the winning rows: the new ones for ``target``, the stored ones for
    ``_stage_sales``."""
    for batch in _slices(sales_batches):
        role = _values_at(load, batch, roles)
        new = _rows_where(batch, role == _NEW)
        if new.num_rows:
            yield _CopyChunk.of(target, BUSINESS_COLUMNS, new)
        stored = _rows_where(batch, role == _STORED)
        if stored.num_rows:
            yield _CopyChunk.of("_stage_sales", STAGE_SALES_COLUMNS, stored)


def _remove_voided(load: _Load) -> int:
    """Winning voids delete their sale; returns how many sales they removed."""
    return int(
        load.run(
            "remove_voided",
            """
            WITH gone AS (
                DELETE FROM {sales} s USING _winners w
                WHERE w.is_void AND w.applies AND w.in_sales AND s.sale_id = w.sale_id
                RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
        ).scalar_one()
    )


def _keep_rejects(load: _Load, rejected_batches: Iterable[pa.Table]) -> tuple[int, int]:
    """Drop stored rejects a winner supersedes; keep this load's rejects. Returns (malformed
    versions kept, of which quarantined next to a well-formed version of their sale).

    Kept: records without a sale_id; winning voids; per sale_id the newest malformed version
    when it is newer than every well-formed version (loaded or stored), or there is none.
    The judgement runs on narrow rows (index, hash, version); the wide ones (the raw record
    text) are read once, by the statement that writes them.
    """
    load.run(
        "drop_superseded_rejects",
        """
        DELETE FROM {rejected} r USING _winners w
        WHERE r.business_date = :day AND w.applies AND r.sale_id = w.sale_id
          AND (r.updated_at IS NULL OR r.updated_at <= w.updated_at)
        """,
        day=load.day,
    )
    _collect_rejects(load)
    load.run(
        "upsert_rejects",  # the stored ones: their count of copies
        """
        UPDATE {rejected} t SET occurrences = k.occurrences
        FROM _rejects k
        WHERE t.business_date = :day AND t.record_hash = k.record_hash
          AND t.occurrences <> k.occurrences
        """,
        day=load.day,
    )
    _write_new_rejects(load, rejected_batches)
    kept = load.run(
        "count_kept_rejects",
        "SELECT coalesce(sum(malformed), 0), coalesce(sum(quarantined), 0) FROM _rejects",
    ).one()
    return int(kept[0]), int(kept[1])


def _write_new_rejects(load: _Load, rejected_batches: Iterable[pa.Table]) -> None:
    """COPY the kept rejects the table does not hold yet straight into it, each with its count
    of copies, reading the rejected batches once more."""
    load.run(
        "upsert_rejects",  # the new ones: which records, and their copies
        """
        CREATE TEMPORARY TABLE _new_rejects ON COMMIT DROP AS
        SELECT k.record_index, k.occurrences FROM _rejects k
        WHERE NOT EXISTS (SELECT FROM {rejected} t
                          WHERE t.business_date = :day AND t.record_hash = k.record_hash)
        """,
        day=load.day,
    )
    started = time.perf_counter()
    occurrences = _Listed.of(load, "_stage_rejected", "SELECT * FROM _new_rejects")
    target = load.sql("{rejected}")
    written = _copy_all(load, _new_reject_chunks(load, rejected_batches, occurrences, target))
    load.seconds["upsert_rejects"] += time.perf_counter() - started
    expected = int(np.count_nonzero(occurrences.values))
    _check_written(load, "new rejects", written.get(target, 0), expected)


def _new_reject_chunks(
    load: _Load, rejected_batches: Iterable[pa.Table], occurrences: _Listed, target: str
) -> Iterator[_CopyChunk]:
    """COPY chunks of the rejects to write into ``target``, with their day and copies."""
    for batch in _slices(rejected_batches, _REJECT_CHUNK_ROWS):
        copies = occurrences.at(load, batch)
        keep = copies > 0
        if not keep.any():
            continue
        rows = _with_constants(_rows_where(batch, keep), business_date=load.day)
        rows = rows.append_column(_OCCURRENCES.name, pa.array(copies[keep], _OCCURRENCES.arrow))
        yield _CopyChunk.of(target, _REJECTS_WRITTEN, rows)


def _collect_rejects(load: _Load) -> None:
    """``_rejects``: per record_hash of the staged rejects this load keeps, its first record,
    its copies, and how many of them are malformed versions kept (and quarantined)."""
    load.run(
        "collect_rejects",
        """
        CREATE TEMPORARY TABLE _rejects ON COMMIT DROP AS
        WITH malformed AS (
            SELECT DISTINCT ON ((sale_id COLLATE "C")) sale_id, updated_at, record_index,
                   record_hash
            FROM _stage_rejected
            WHERE sale_id IS NOT NULL AND NOT (reason = :void AND updated_at IS NOT NULL)
            ORDER BY sale_id COLLATE "C", updated_at DESC NULLS LAST, record_index DESC
        ),
        stored_voids AS (
            SELECT sale_id, max(updated_at) AS updated_at FROM {rejected}
            WHERE business_date = :day AND reason = :void AND sale_id IS NOT NULL
            GROUP BY sale_id
        ),
        judged AS (
            SELECT r.record_index, r.record_hash, r.updated_at,
                   greatest(w.updated_at, s.updated_at, v.updated_at) AS good_version,
                   coalesce(w.sale_id, s.sale_id, v.sale_id) IS NOT NULL AS has_good
            FROM malformed r
            LEFT JOIN _winners w ON w.sale_id = r.sale_id  -- one winner a sale_id
            -- the stored sale of the id: an index probe per malformed id, in the ids' order
            -- (never a hash of the table)
            LEFT JOIN LATERAL (
                SELECT sale_id, updated_at FROM {sales} WHERE sale_id = r.sale_id LIMIT 1
            ) s ON true
            LEFT JOIN stored_voids v ON v.sale_id = r.sale_id
        ),
        kept AS (
            SELECT record_index, record_hash, false AS malformed, false AS quarantined
            FROM _stage_rejected WHERE sale_id IS NULL
            UNION ALL
            SELECT r.record_index, r.record_hash, false, false
            FROM _stage_rejected r JOIN _winners w ON w.record_index = r.record_index
            WHERE w.is_void AND w.applies
            UNION ALL
            SELECT record_index, record_hash, true, has_good
            FROM judged WHERE NOT has_good OR updated_at > good_version
        )
        SELECT record_hash, min(record_index) AS record_index, count(*) AS occurrences,
               count(*) FILTER (WHERE malformed) AS malformed,
               count(*) FILTER (WHERE quarantined) AS quarantined
        FROM kept GROUP BY record_hash
        """,
        day=load.day,
        void=NON_POSITIVE_AMOUNT,
    )
    load.conn.execute(text("ANALYZE _rejects"))


def _reconcile(
    load: _Load, inserted: int, updated: int, voided: int, malformed_kept: int, quarantined: int
) -> LoadStats:
    """dbt-style checks inside the transaction (a failure rolls the day back), and the counts."""
    check = _check_winners(load)
    day_sales, day_amount, rejects_kept = _day_totals(load)
    with_id = load.staged + load.rejected_with_id  # counted while staging
    lone = load.lone.rows if load.lone is not None else 0  # winners outside _winners
    winners, applied = int(check["winners"]) + lone, int(check["sales_applied"]) + lone
    return LoadStats(
        staged=load.staged,
        staged_rejected=load.staged_rejected,
        winners=winners,
        inserted=inserted,
        updated=updated,
        unchanged=applied - inserted - updated,
        stale=int(check["stale"]),
        voided=voided,
        quarantined=quarantined,
        rejects_kept=rejects_kept,
        superseded=with_id - winners - malformed_kept,
        day_sales=day_sales,
        day_amount=day_amount,
        high_water_mark=_high_water_mark(load),
        step_seconds=load.seconds,
    )


def _check_winners(load: _Load) -> Mapping[str, Any]:
    """Every winning sale is in the table at its version and every void is gone, or raise.

    The new sales were counted as COPY wrote them (:func:`_write_sales`): what is looked up in
    the table here is what the load changed there, the stored sales it updated and the voids.
    """
    check = (
        load.run(
            "reconcile",
            """
            WITH changed AS (
                SELECT w.is_void, w.updated_at, s.sale_id AS found, s.updated_at AS found_version
                FROM _winners w LEFT JOIN {sales} s ON s.sale_id = w.sale_id
                WHERE w.applies AND (w.in_sales OR w.is_void)
            )
            SELECT c.*, m.*
            FROM (SELECT count(*) AS winners,
                         count(*) FILTER (WHERE NOT is_void AND applies) AS sales_applied,
                         count(*) FILTER (WHERE NOT is_void AND NOT applies) AS stale
                  FROM _winners) c,
                 (SELECT count(*) FILTER (WHERE NOT is_void AND (found IS NULL
                                                  OR found_version < updated_at)) AS missing,
                         count(*) FILTER (WHERE is_void AND found IS NOT NULL) AS not_voided
                  FROM changed) m
            """,
        )
        .mappings()
        .one()
    )
    if check["missing"] or check["not_voided"]:
        raise WarehouseError(
            f"reconciliation failed for {load.day}: {check['missing']} winning sales missing "
            f"or older in {load.tables.sales.fullname}, {check['not_voided']} voided sales "
            "still there; the load was rolled back"
        )
    return check


def _day_totals(load: _Load) -> tuple[int, Decimal, int]:
    """The day's sales and their amount in the table after the load, and its kept rejects."""
    start, end = _day_range(load.day)
    sales, amount, rejects = load.run(
        "day_totals",
        """
        SELECT d.sales, d.amount, (SELECT count(*) FROM {rejected} WHERE business_date = :day)
        FROM (SELECT count(*) AS sales, coalesce(sum(amount), 0) AS amount FROM {sales}
              WHERE sale_date >= :start AND sale_date < :end) d  -- one pass over the day
        """,
        start=start,
        end=end,
        day=load.day,
    ).one()
    return int(sales), Decimal(amount), int(rejects)


def _day_range(day: date) -> tuple[datetime, datetime]:
    """The day's first instant (UTC) and the next day's."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _high_water_mark(load: _Load) -> datetime | None:
    """The newest ``updated_at`` loaded for the day so far: this load's and the ledger's."""
    previous = load.run(
        "previous_high_water_mark",
        "SELECT max(high_water_mark) FROM {ledger} "
        "WHERE business_date = :day AND status = 'loaded'",
        day=load.day,
    ).scalar_one()
    candidates = [m for m in (previous, load.newest_seen) if m is not None]
    return max(candidates) if candidates else None


def _write_ledger(load: _Load, source: LoadSource, stats: LoadStats, seconds: float) -> None:
    load.conn.execute(
        load.tables.ledger.insert(),
        {
            "business_date": load.day,
            "status": "loaded",
            "mode": source.mode,
            "snapshot_id": source.snapshot_id,
            "run_id": load.run_id,
            "records": source.records,
            **stats.counts.as_row(),
            "rejects_by_reason": json.dumps(dict(sorted(source.rejects_by_reason.items()))),
            "schema_change": source.schema_change,
            "seconds": seconds,
            "finished_at": load.loaded_at,
        },
    )


def record_failure(
    engine: Engine,
    tables: WarehouseTables,
    day: date,
    run_id: str,
    source: LoadSource,
    message: str,
    finished_at: datetime,
) -> None:
    """A ledger row for a load that failed (its own transaction: the load's was rolled back)."""
    with engine.begin() as conn:
        conn.execute(
            tables.ledger.insert(),
            {
                "business_date": day,
                "status": "failed",
                "mode": source.mode,
                "snapshot_id": source.snapshot_id,
                "run_id": run_id,
                "records": source.records,
                "rejects_by_reason": json.dumps(dict(sorted(source.rejects_by_reason.items()))),
                "schema_change": source.schema_change,
                "message": message[:2000],
                "finished_at": finished_at,
            },
        )


def day_high_water_mark(engine: Engine, tables: WarehouseTables, day: date) -> datetime | None:
    """The newest ``updated_at`` any successful load of ``day`` has brought, or None (also when
    the ledger table does not exist yet: nothing was ever loaded)."""
    ledger = tables.ledger
    with engine.connect() as conn:
        if not inspect(conn).has_table(ledger.name, schema=ledger.schema):
            return None
        quote = conn.dialect.identifier_preparer.format_table
        return conn.execute(
            text(
                f"SELECT max(high_water_mark) FROM {quote(ledger)} "
                "WHERE business_date = :day AND status = 'loaded'"
            ),
            {"day": day},
        ).scalar_one()
