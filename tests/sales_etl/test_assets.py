"""The asset keys of a day and the metadata of their materializations (no Prefect)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from prefect.assets import Asset
from pydantic import SecretStr

from sales_etl.assets import (
    MAX_KEY_LENGTH,
    clean_metadata,
    day_assets,
    lake_asset_key,
    raw_metadata,
    warehouse_asset_key,
    warehouse_metadata,
)
from sales_etl.counts import LoadCounts
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import CleanManifest, RawManifest
from tests.utils import DB_PASSWORD

DAY = date(2026, 11, 23)


def warehouse(url: str, **fields: str) -> WarehouseConfig:
    return WarehouseConfig(url=SecretStr(url), **fields)


def test_the_keys_of_a_day_in_an_s3_lake_and_a_postgres_warehouse() -> None:
    assets = day_assets(
        DAY,
        LakeConfig(url="s3://acme-lake/sales/"),
        warehouse(f"postgresql://etl:{DB_PASSWORD}@db.internal:6432/dwh", db_schema="mart"),
    )
    assert assets.raw == "s3://acme-lake/sales/raw/sales/date=2026-11-23"
    assert assets.clean == "s3://acme-lake/sales/clean/sales/date=2026-11-23"
    assert assets.warehouse == "postgresql://db.internal:6432/dwh/mart.sales/date=2026-11-23"
    for key in (assets.raw, assets.clean, assets.warehouse):
        assert Asset(key=key).key == key  # Prefect accepts it as it is


def test_a_local_lake_is_an_absolute_file_key(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    relative = LakeConfig(url="lake")  # the tests run in tmp_path (conftest)
    assert lake_asset_key(relative.url, "raw", DAY) == (
        f"file://{tmp_path.resolve()}/lake/raw/sales/date=2026-11-23"
    )
    assert lake_asset_key(f"file://{tmp_path}/lake", "clean", DAY) == (
        f"file://{tmp_path.resolve()}/lake/clean/sales/date=2026-11-23"
    )


def test_no_user_password_or_socket_query_in_a_warehouse_key() -> None:
    socket = warehouse("postgresql+psycopg2://postgres@/postgres?host=/tmp/etl-pg-socket")
    assert warehouse_asset_key(socket, DAY) == (
        "postgresql://localhost:5432/postgres/public.sales/date=2026-11-23"
    )
    with_password = warehouse(f"postgresql://etl:{DB_PASSWORD}@127.0.0.1/dwh", table_name="orders")
    key = warehouse_asset_key(with_password, DAY)
    assert key == "postgresql://127.0.0.1:5432/dwh/public.orders/date=2026-11-23"
    assert DB_PASSWORD not in key and "etl" not in key


def test_characters_prefect_refuses_are_replaced_and_long_locations_hashed() -> None:
    spaced = lake_asset_key("/data/my lake #1", "raw", DAY)
    assert spaced == "file:///data/my_lake__1/raw/sales/date=2026-11-23"
    assert Asset(key=spaced).key == spaced
    deep = lake_asset_key("/" + "/".join(["folder"] * 100), "raw", DAY)
    assert len(deep) <= MAX_KEY_LENGTH
    assert deep.startswith("file://") and deep.endswith("/raw/sales/date=2026-11-23")
    assert Asset(key=deep).key == deep
    assert deep != lake_asset_key("/" + "/".join(["folder"] * 101), "raw", DAY)


def test_raw_and_clean_metadata_name_the_snapshot_and_its_counts() -> None:
    raw = RawManifest(
        day=DAY, snapshot_id="S1", parts=("part-00000.parquet",), pages=4, records=200,
        mode="incremental", updated_since="2026-11-23T10:00:00+00:00",
        committed_at="2026-11-23T11:00:00+00:00", source_record_count=210,
    )  # fmt: skip
    assert raw_metadata(raw) == {
        "snapshot_id": "S1",
        "records": 200,
        "pages": 4,
        "mode": "incremental",
        "updated_since": "2026-11-23T10:00:00+00:00",
        "source_record_count": 210,
        "committed_at": "2026-11-23T11:00:00+00:00",
    }
    clean = CleanManifest(
        day=DAY, snapshot_id="S1", transform_version=3, sales_parts=("s",), rejected_parts=("r",),
        records=200, clean=180, rejected=20, by_reason={"invalid_amount": 20},
        clean_amount_total="1234.5600", committed_at="2026-11-23T11:00:01+00:00",
    )  # fmt: skip
    metadata = clean_metadata(clean)
    assert (metadata["records"], metadata["valid"], metadata["rejected"]) == (200, 180, 20)
    assert metadata["amount"] == "1234.5600"
    assert metadata["rejected_by_reason"] == {"invalid_amount": 20}
    assert metadata["snapshot_id"] == "S1"


def test_warehouse_metadata_has_the_day_totals_and_the_high_water_mark() -> None:
    mark = datetime(2026, 11, 23, 23, 59, 1, tzinfo=UTC)
    counts = LoadCounts(
        staged=180, staged_rejected=20, inserted=170, updated=10, day_sales=180,
        day_amount=Decimal("98765.4321"), high_water_mark=mark,
    )  # fmt: skip
    metadata = warehouse_metadata("S1", "public.sales", counts, skipped=False)
    assert metadata["snapshot_id"] == "S1"
    assert metadata["table"] == "public.sales"
    assert (metadata["records"], metadata["valid"], metadata["rejected"]) == (200, 180, 20)
    assert (metadata["inserted"], metadata["updated"], metadata["day_sales"]) == (170, 10, 180)
    assert metadata["amount"] == metadata["day_amount"] == "98765.4321"
    assert metadata["high_water_mark"] == "2026-11-23T23:59:01+00:00"
    assert metadata["load_skipped"] is False
    assert warehouse_metadata("S1", "t", LoadCounts(), skipped=True)["high_water_mark"] is None


@pytest.mark.parametrize("zone", ["raw", "clean"])
def test_each_zone_has_its_own_key(zone: str) -> None:
    other = "clean" if zone == "raw" else "raw"
    assert lake_asset_key("s3://b", zone, DAY) != lake_asset_key("s3://b", other, DAY)
    assert lake_asset_key("s3://b", zone, DAY) != lake_asset_key("s3://b", zone, date(2026, 11, 24))
