"""WarehouseBlock against a real PostgreSQL database (a fresh one per test)."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from pydantic import SecretStr

from blocks import WarehouseBlock
from sales_etl.settings import WarehouseConfig
from sales_etl.transform import clean_table, rejected_table
from sales_etl.validate import validate_records
from tests.utils import DAY, DB_PASSWORD, clean_sales, demo_records


def block_for(url: str, **fields: object) -> WarehouseBlock:
    return WarehouseBlock(connection_string=SecretStr(url), **fields)


def test_to_config_and_from_config_round_trip(pg_url: str) -> None:
    block = block_for(pg_url, db_schema="mart", table_name="orders", pool_size=2)
    config = block.to_config()
    assert config == WarehouseConfig(
        url=SecretStr(pg_url), db_schema="mart", table_name="orders", pool_size=2
    )
    assert WarehouseBlock.from_config(config).model_dump(
        context={"include_secrets": True}
    ) == block.model_dump(context={"include_secrets": True})


def test_query_binds_parameters_and_returns_rows(pg_url: str) -> None:
    hostile = "x'); DROP TABLE t; --"
    with block_for(pg_url) as warehouse:
        warehouse.query("CREATE TABLE t (id int, name text)")
        assert warehouse.query("INSERT INTO t VALUES (:i, :n)", {"i": 1, "n": hostile}) == []
        warehouse.query("INSERT INTO t VALUES (:i, :n)", {"i": 2, "n": "plain"})
        rows = warehouse.query("SELECT id, name FROM t WHERE id >= :low ORDER BY id", {"low": 1})
    assert rows == [(1, hostile), (2, "plain")]


def test_engine_is_lazy_reused_disposed_and_never_pickled(pg_url: str) -> None:
    block = block_for(pg_url)
    assert block._engine is None
    with block as warehouse:
        engine = warehouse.get_engine()
        assert warehouse.get_engine() is engine
        assert warehouse.query("SELECT 1") == [(1,)]
        copy = pickle.loads(pickle.dumps(warehouse))
        assert copy._engine is None
        assert copy.query("SELECT 2") == [(2,)]  # the copy builds its own engine
        copy.close()
        assert "_engine" not in warehouse.model_dump()
    assert block._engine is None
    assert engine.pool.checkedout() == 0


def test_insert_is_the_idempotent_load_path(pg_url: str) -> None:
    with block_for(pg_url, db_schema="mart") as warehouse:
        first = warehouse.insert(clean_sales(40), DAY, "run-1")
        assert (first.inserted, first.updated, first.unchanged) == (40, 0, 0)
        again = warehouse.insert(clean_sales(40), DAY, "run-2")
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 40)
        # 10 newer versions of existing sales plus 5 new sales, as an Arrow table
        newer = pa.concat_tables(
            [clean_table(clean_sales(10, version=2)), clean_table(clean_sales(5, first=40))]
        ).drop_columns(["record_index"])
        third = warehouse.insert(newer, DAY, "run-3")
        assert (third.inserted, third.updated, third.unchanged) == (5, 10, 0)
        rows = warehouse.query(
            "SELECT run_id, count(*) FROM mart.sales GROUP BY run_id ORDER BY run_id"
        )
    assert rows == [("run-1", 30), ("run-3", 15)]


def test_upsert_keeps_rejects_of_the_day(pg_url: str) -> None:
    records = demo_records(6)
    records[2] = {"sale_id": "broken"}
    result = validate_records(records, DAY)
    with block_for(pg_url) as warehouse:
        stats = warehouse.upsert(
            DAY,
            "run-1",
            [clean_table(result.clean)],
            [rejected_table(result.rejected)],
        )
        counts = warehouse.query(
            "SELECT (SELECT count(*) FROM sales), (SELECT count(*) FROM sales_rejected)"
        )
    assert (stats.inserted, stats.rejects_kept) == (5, 1)
    assert counts == [(5, 1)]


def test_failed_connection_never_shows_the_password(pg_password_url: str) -> None:
    wrong = pg_password_url.replace("/etl_pw_", "/missing_db_")
    with block_for(wrong) as warehouse, pytest.raises(Exception) as failure:
        warehouse.query("SELECT 1")
    assert "missing_db_" in str(failure.value)
    assert DB_PASSWORD not in str(failure.value)
    assert DB_PASSWORD not in repr(warehouse)
