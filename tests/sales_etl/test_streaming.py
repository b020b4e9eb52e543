"""The streaming path (many raw parts, many validation chunks) loads exactly the right rows.

A day of the demo API with malformed records and late updates goes through the real pieces:
the client, raw Parquet parts of a few KB, transform chunks of 70 records, and the PostgreSQL
load. The warehouse must hold exactly the expected rows and amounts, computed independently in
one pass over all records, and the same day streamed in a single chunk must give identical
tables. Nothing is timed here; the benchmark lives in ``benchmarks/``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from pydantic import SecretStr

from devharness.demo_api import DemoData, serve_demo_api
from sales_etl import jsontext
from sales_etl.lake import open_lake
from sales_etl.settings import LakeConfig, SourceConfig, WarehouseConfig
from sales_etl.snapshots import RawSnapshotWriter, iter_tables
from sales_etl.source import SalesApiClient
from sales_etl.transform import transform_snapshot
from sales_etl.validate import validate_records
from sales_etl.warehouse import create_warehouse_engine, ensure_tables, load_day, tables_for
from tests.utils import DAY

DATA = DemoData(rows_per_day=1000, malformed_every=13, update_every=9)


def expected_day() -> tuple[int, Decimal, int, list[tuple[str, datetime, datetime]]]:
    """(sales rows, sum of amount, rejects kept, first rows' instants) from one pass."""
    text = DAY.isoformat()
    records = jsontext.loads(json.dumps(DATA.page(text, 0, DATA.count(text))))
    result = validate_records(records, DAY)
    # Demo updates come later in the stream with a later updated_at: the last version wins.
    versions = list(zip(result.clean["sale_id"], result.clean["record_index"], strict=True))
    with_id = result.rejected[result.rejected["sale_id"].notna()]
    versions += list(zip(with_id["sale_id"], with_id["record_index"], strict=True))
    winner: dict[str, int] = {}
    for sale_id, index in versions:
        winner[sale_id] = max(index, winner.get(sale_id, -1))
    winners = set(winner.values())
    clean = result.clean[result.clean["record_index"].isin(winners)]
    kept_rejects = result.rejected["sale_id"].isna() | result.rejected["record_index"].isin(winners)
    total = sum((Decimal(a) for a in clean["amount"]), Decimal(0))
    first = clean.sort_values("sale_id").head(20)
    instants = [
        (sid, sd.to_pydatetime(), ua.to_pydatetime())
        for sid, sd, ua in zip(
            first["sale_id"], first["sale_date"], first["updated_at"], strict=True
        )
    ]
    return len(clean), total, int(kept_rejects.sum()), instants


def run_day(
    source: SourceConfig, lake: LakeConfig, warehouse: WarehouseConfig, **sizes: int
) -> dict[str, int]:
    store = open_lake(lake)
    writer = RawSnapshotWriter(store, DAY, part_bytes=sizes["part_bytes"])
    with SalesApiClient(source) as client:
        for page in client.iter_pages(DAY, lossless=False):
            writer.add(page)
    raw = writer.commit()
    clean = transform_snapshot(store, raw, chunk_records=sizes["chunk_records"])
    engine = create_warehouse_engine(warehouse)
    tables = tables_for(warehouse)
    ensure_tables(engine, tables)
    load_day(
        engine,
        tables,
        DAY,
        "test-run",
        iter_tables(store, clean.manifest["sales_parts"]),
        iter_tables(store, clean.manifest["rejected_parts"]),
    )
    engine.dispose()
    store.close()
    return {
        "raw_parts": len(raw.manifest["parts"]),
        "sales_parts": len(clean.manifest["sales_parts"]),
        "rejected_parts": len(clean.manifest["rejected_parts"]),
    }


def test_multi_chunk_day_lands_exact_counts_and_sums(pg_url: str, local_lake: LakeConfig) -> None:
    rows, amount, rejects, instants = expected_day()
    # Timestamps must land as the same instants whatever the session's time zone is.
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        database = sa.make_url(pg_url).database
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET timezone = 'Asia/Kolkata'"))
    admin.dispose()
    streamed = WarehouseConfig(url=SecretStr(pg_url), table_name="sales")
    whole = WarehouseConfig(url=SecretStr(pg_url), table_name="sales_whole")
    with serve_demo_api(DATA) as api:
        source = SourceConfig(base_url=api.url, page_size=40)
        parts = run_day(source, local_lake, streamed, part_bytes=8 << 10, chunk_records=70)
        single = run_day(source, local_lake, whole, part_bytes=1 << 30, chunk_records=10**6)

    assert parts["raw_parts"] >= 5 and parts["sales_parts"] >= 10 and parts["rejected_parts"] >= 5
    assert single == {"raw_parts": 1, "sales_parts": 1, "rejected_parts": 1}
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        count, total = conn.execute(sa.text("SELECT count(*), sum(amount) FROM sales")).one()
        distinct = conn.execute(sa.text("SELECT count(DISTINCT sale_id) FROM sales")).scalar_one()
        kept = conn.execute(sa.text("SELECT sum(occurrences) FROM sales_rejected")).scalar_one()
        differences = [
            conn.execute(sa.text(f"SELECT count(*) FROM ({query}) d")).scalar_one()
            for query in (
                "SELECT sale_id, sale_date, store_id, product_id, customer_id, quantity, "
                "unit_price, amount, currency, updated_at FROM sales EXCEPT ALL SELECT sale_id, "
                "sale_date, store_id, product_id, customer_id, quantity, unit_price, amount, "
                "currency, updated_at FROM sales_whole",
                "SELECT record_hash, reason, detail, raw_record, occurrences FROM sales_rejected "
                "EXCEPT ALL SELECT record_hash, reason, detail, raw_record, occurrences "
                "FROM sales_whole_rejected",
            )
        ]
        whole_count = conn.execute(sa.text("SELECT count(*) FROM sales_whole")).scalar_one()
        stored = conn.execute(
            sa.text("SELECT sale_id, sale_date, updated_at FROM sales ORDER BY sale_id LIMIT 20")
        ).all()
    engine.dispose()
    assert (count, total, distinct) == (rows, amount, rows)
    assert kept == rejects
    assert differences == [0, 0] and whole_count == rows
    assert [tuple(row) for row in stored] == instants
