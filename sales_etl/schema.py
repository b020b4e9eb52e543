"""The one definition of the pipeline's columns.

Each column is named once here with its Arrow type (lake snapshots) and its SQL type (warehouse
and staging tables). ``sales_etl.validate`` reads the contract fields, ``sales_etl.snapshots``
builds its Parquet schemas and ``sales_etl.warehouse`` builds its tables from these tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import BigInteger, Date, DateTime, Integer, Numeric, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

MONEY_ARROW = pa.decimal128(18, 4)
TIMESTAMP_ARROW = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One column: its name, its Arrow type and its SQL type (and, for a field of the sale
    record contract, the JSON types the source may send it as)."""

    name: str
    arrow: pa.DataType
    sql: TypeEngine[Any]
    nullable: bool = True
    json: tuple[str, ...] = ()
    repeats: bool = False  # few distinct values: dictionary-encoded in the lake's Parquet


def _money() -> TypeEngine[Any]:
    return Numeric(18, 4)


def _timestamp() -> TypeEngine[Any]:
    return DateTime(timezone=True)


RECORD_INDEX = Column("record_index", pa.int64(), BigInteger(), nullable=False)

# The contract's fields (docs/sales-api.md), in contract order: the business columns.
SALE_FIELDS: tuple[Column, ...] = (
    Column("sale_id", pa.string(), Text(), nullable=False, json=("string",)),
    Column("sale_date", TIMESTAMP_ARROW, _timestamp(), nullable=False, json=("string",)),
    Column("store_id", pa.string(), Text(), nullable=False, json=("string",), repeats=True),
    Column("product_id", pa.string(), Text(), nullable=False, json=("string",), repeats=True),
    Column("customer_id", pa.string(), Text(), nullable=True, json=("string", "null")),
    Column("quantity", pa.int32(), Integer(), nullable=False, json=("number",), repeats=True),
    Column("unit_price", MONEY_ARROW, _money(), nullable=False, json=("number", "string")),
    Column("amount", MONEY_ARROW, _money(), nullable=False, json=("number", "string")),
    Column("currency", pa.string(), Text(), nullable=False, json=("string",), repeats=True),
    Column("updated_at", TIMESTAMP_ARROW, _timestamp(), nullable=False, json=("string",)),
)
FIELD_NAMES: tuple[str, ...] = tuple(c.name for c in SALE_FIELDS)

# The record's fields outside the contract (non-null values), as one JSON object text; null
# when it has none (sales_etl.contract). The warehouse keeps it as jsonb (SCHEMA_CONTRACT=evolve).
EXTRA = Column("extra", pa.string(), JSONB(), nullable=True)

# A validated record: its position in the day's raw stream, the typed fields, the extra fields.
CLEAN_COLUMNS: tuple[Column, ...] = (RECORD_INDEX, *SALE_FIELDS, EXTRA)

# A rejected record: what could be read of its key and version, why, and the record itself.
REJECTED_COLUMNS: tuple[Column, ...] = (
    RECORD_INDEX,
    Column("sale_id", pa.string(), Text()),
    Column("updated_at", TIMESTAMP_ARROW, _timestamp()),
    Column("reason", pa.string(), Text(), nullable=False, repeats=True),
    Column("detail", pa.string(), Text(), nullable=False, repeats=True),
    Column("raw_record", pa.large_string(), Text(), nullable=False),
    Column("record_hash", pa.string(), Text(), nullable=False),
)

# The clean zone's columns worth a Parquet dictionary; the others (ids, times, money, texts)
# are nearly all distinct, and trying a dictionary first cost a third of the write.
DICTIONARY_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(c.name for c in (*CLEAN_COLUMNS, *REJECTED_COLUMNS) if c.repeats)
)

# Bookkeeping columns the warehouse adds to each row it writes.
RUN_ID = Column("run_id", pa.string(), Text(), nullable=False)
LOADED_AT = Column("loaded_at", TIMESTAMP_ARROW, _timestamp(), nullable=False)
BUSINESS_DATE = Column("business_date", pa.date32(), Date(), nullable=False)


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow) for c in columns])


CLEAN_SCHEMA = arrow_schema(CLEAN_COLUMNS)
REJECTED_SCHEMA = arrow_schema(REJECTED_COLUMNS)
