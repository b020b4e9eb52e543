"""The Prefect 3 assets of a business day: their keys and what their materializations say.

Plain logic, no Prefect: ``tasks/assets.py`` binds these keys to the tasks that write them.
Three assets per day, each depending on the one before it::

    raw lake     file:///abs/lake/raw/sales/date=D   (or s3://bucket/prefix/raw/sales/date=D)
      <- clean lake    .../clean/sales/date=D
        <- warehouse   postgresql://host:port/db/schema.table/date=D

A key names where the data is, never how to log in: no user, no password, no query string.
Prefect refuses some characters in a key (a space, ``%``, ``#``, ...): each becomes ``_``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from sales_etl.counts import LoadCounts
from sales_etl.settings import LakeConfig, WarehouseConfig
from sales_etl.snapshots import CleanManifest, RawManifest, day_prefix

# prefect.types.names.RESTRICTED_ASSET_CHARACTERS and MAX_ASSET_KEY_LENGTH, as of Prefect 3.9.
RESTRICTED_CHARACTERS = frozenset(" #?&%\"'<>[]{}|\\^`\n\r\t\0")
MAX_KEY_LENGTH = 512
DEFAULT_POSTGRES_PORT = 5432


@dataclass(frozen=True)
class DayAssets:
    """The asset keys of one business day: raw lake, clean lake, warehouse table."""

    day: date
    raw: str
    clean: str
    warehouse: str


def day_assets(day: date, lake: LakeConfig, warehouse: WarehouseConfig) -> DayAssets:
    """The three asset keys of ``day`` in ``lake`` and ``warehouse`` (a resolved URL)."""
    return DayAssets(
        day=day,
        raw=lake_asset_key(lake.url, "raw", day),
        clean=lake_asset_key(lake.url, "clean", day),
        warehouse=warehouse_asset_key(warehouse, day),
    )


def lake_asset_key(lake_url: str, zone: str, day: date) -> str:
    """``s3://bucket/prefix/<zone>/sales/date=D``, or ``file://<absolute folder>/...``."""
    if lake_url.startswith("s3://"):
        scheme, location = "s3", lake_url.removeprefix("s3://").strip("/")
    else:  # file:///abs/folder: the location keeps its leading slash
        scheme = "file"
        location = Path(lake_url.removeprefix("file://")).resolve().as_posix().rstrip("/")
    return _asset_key(scheme, location, day_prefix(zone, day).rstrip("/"))


def warehouse_asset_key(warehouse: WarehouseConfig, day: date) -> str:
    """``postgresql://host:port/database/schema.table/date=D``; a server on a unix socket
    (the embedded warehouse) is ``localhost``."""
    url = make_url(warehouse.sqlalchemy_url)
    location = f"{url.host or 'localhost'}:{url.port or DEFAULT_POSTGRES_PORT}/{url.database}"
    table = f"{warehouse.db_schema}.{warehouse.table_name}"
    return _asset_key("postgresql", location, f"{table}/date={day.isoformat()}")


def _asset_key(scheme: str, location: str, path: str) -> str:
    """``scheme://location/path`` with Prefect's restricted characters replaced; a location
    too long for Prefect's limit is replaced by its hash (the path keeps the day readable)."""
    key = f"{scheme}://{location}/{path}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"{scheme}://{hashlib.sha256(location.encode()).hexdigest()[:32]}/{path}"
    return "".join("_" if char in RESTRICTED_CHARACTERS else char for char in key)


def raw_metadata(raw: RawManifest) -> dict[str, Any]:
    """What a raw snapshot's materialization says: its id, records, pages and extract mode."""
    return {
        "snapshot_id": raw.snapshot_id,
        "records": raw.records,
        "pages": raw.pages,
        "mode": raw.mode,
        "updated_since": raw.updated_since,
        "source_record_count": raw.source_record_count,
        "committed_at": raw.committed_at,
    }


def clean_metadata(clean: CleanManifest) -> dict[str, Any]:
    """What a clean snapshot's materialization says: records, valid, rejected (by reason) and
    the valid records' amount (exact decimal text)."""
    return {
        "snapshot_id": clean.snapshot_id,
        "records": clean.records,
        "valid": clean.clean,
        "rejected": clean.rejected,
        "rejected_by_reason": dict(clean.by_reason),
        "amount": clean.clean_amount_total,
        "transform_version": clean.transform_version,
        "committed_at": clean.committed_at,
    }


def warehouse_metadata(
    snapshot_id: str, table: str, counts: LoadCounts, skipped: bool
) -> dict[str, Any]:
    """What a load's materialization says: the snapshot loaded, the staged records, what the
    load did, the day's sales and amount in the table after it and its high-water mark."""
    payload = counts.as_payload()
    return {
        "snapshot_id": snapshot_id,
        "table": table,
        "records": counts.records,
        "valid": counts.staged,
        "rejected": counts.staged_rejected,
        "amount": payload["day_amount"],
        "high_water_mark": payload["high_water_mark"],
        "load_skipped": skipped,
        **payload,
    }
