"""``DataLakeBlock``: where raw and clean snapshots land, an S3 bucket or a local folder.

The block holds settings only; reading and writing go through :mod:`sales_etl.lake` (``LocalLake``
or ``S3Lake``) and :mod:`sales_etl.snapshots`, the same code the pipeline's tasks run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import ClassVar

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator

from blocks.parameters import ConfigBlock
from sales_etl.errors import LakeError
from sales_etl.lake import Lake, open_lake
from sales_etl.schema import CLEAN_SCHEMA, REJECTED_SCHEMA
from sales_etl.settings import DEFAULT_DATA_DIR, LakeConfig
from sales_etl.snapshots import (
    RAW_SCHEMA,
    CleanSnapshotWriter,
    SnapshotRef,
    find_snapshot,
    list_snapshots,
    new_snapshot_id,
    read_parquet,
)
from sales_etl.transform import clean_table, rejected_table

PART_SCHEMAS = {"sales": CLEAN_SCHEMA, "rejected": REJECTED_SCHEMA}


class DataLakeBlock(ConfigBlock):
    """The data lake of the Daily Sales ETL: ``s3://bucket/prefix`` or a local folder.

    Set ``bucket`` (with ``prefix``, ``region``, ``endpoint_url`` and optionally credentials) for
    S3, or ``path`` for a folder. With neither, the local default ``.data/lake`` is used. Empty
    credentials mean boto3's default chain (environment, profile, instance or pod role).
    """

    _config_model: ClassVar[type[LakeConfig]] = LakeConfig
    _config_names: ClassVar[dict[str, str]] = {
        "aws_access_key_id": "access_key_id",
        "aws_secret_access_key": "secret_access_key",
    }
    _block_type_name: ClassVar[str] = "Sales Data Lake"
    _block_type_slug: ClassVar[str] = "sales-data-lake"
    _description: ClassVar[str] = (
        "The Daily Sales ETL data lake: an S3 bucket and prefix (any S3-compatible endpoint) "
        "or a local folder, holding the raw and clean Parquet snapshots of each day."
    )
    _documentation_url: ClassVar[HttpUrl] = HttpUrl("https://docs.prefect.io/v3/concepts/blocks")
    _code_example: ClassVar[str] = """
        from datetime import date

        from blocks import DataLakeBlock

        data_lake_block = DataLakeBlock.load("BLOCK_NAME")
        newest = data_lake_block.list_snapshots(date(2026, 11, 23))[0]
        sales = data_lake_block.read_snapshot(date(2026, 11, 23), newest.snapshot_id)
        """

    path: str | None = Field(
        default=None,
        description="Local folder of the lake; leave empty when using a bucket.",
    )
    bucket: str | None = Field(
        default=None,
        description="S3 bucket of the lake; leave empty for a local folder.",
    )
    prefix: str = Field(default="", description="Key prefix inside the bucket, e.g. sales-lake.")
    region: str | None = Field(
        default=None, description="AWS region of the bucket; empty: boto3's default."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for MinIO, moto or another S3-compatible store; empty: AWS.",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        title="AWS access key ID",
        description="Access key ID; empty: boto3's default credential chain.",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        title="AWS secret access key",
        description="Secret access key; empty: boto3's default credential chain.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> DataLakeBlock:
        if self.path and self.bucket:
            raise ValueError("set either path (local folder) or bucket (S3), not both")
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            raise ValueError("set both AWS credentials, or neither to use the default chain")
        return self

    @classmethod
    def from_config(cls, config: BaseModel) -> DataLakeBlock:
        """A block holding the same settings as ``config`` (a :class:`LakeConfig`)."""
        if not isinstance(config, LakeConfig):
            raise TypeError(f"a DataLakeBlock holds a LakeConfig, not {type(config).__name__}")
        if not config.is_s3:
            return cls(path=config.url.removeprefix("file://"))
        bucket, _, prefix = config.url.removeprefix("s3://").partition("/")
        return cls(bucket=bucket, prefix=prefix.strip("/"), **cls.block_values(config))

    def to_config(self) -> LakeConfig:
        """The plain configuration the tasks receive: the block's folder or bucket as a URL."""
        if not self.bucket:
            return LakeConfig(url=self.path or str(DEFAULT_DATA_DIR / "lake"))
        prefix = self.prefix.strip("/")
        url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        return LakeConfig(url=url, **self.config_values())

    @contextmanager
    def open(self) -> Iterator[Lake]:
        """The lake (``LocalLake`` or ``S3Lake``), closed on exit."""
        with open_lake(self.to_config()) as store:
            yield store

    def list_snapshots(self, day: date, zone: str = "clean") -> list[SnapshotRef]:
        """Committed snapshots of ``day`` in ``zone`` (``raw`` or ``clean``), newest first."""
        with self.open() as store:
            return list_snapshots(store, zone, day)

    def write_snapshot(
        self,
        day: date,
        sales: pd.DataFrame | pa.Table,
        rejected: pd.DataFrame | pa.Table | None = None,
        snapshot_id: str | None = None,
    ) -> SnapshotRef:
        """Write a clean snapshot of ``day`` (one Parquet part per frame, manifest last).

        The layout is the pipeline's clean zone, so the load step can load the snapshot.
        """
        sales_table = _as_table(sales, "sales")
        empty = REJECTED_SCHEMA.empty_table()
        rejected_table_ = _as_table(rejected, "rejected") if rejected is not None else empty
        with self.open() as store:
            # The pipeline's own writer: the same parts, counts and manifest as a transform.
            writer = CleanSnapshotWriter(store, day, snapshot_id or new_snapshot_id())
            writer.add(
                sales_table.num_rows + rejected_table_.num_rows, sales_table, rejected_table_
            )
            return writer.commit()

    def read_snapshot(
        self,
        day: date,
        snapshot_id: str | None = None,
        zone: str = "clean",
        part: str = "sales",
    ) -> pa.Table:
        """One snapshot of ``day`` as an Arrow table: the newest, or ``snapshot_id``.

        ``part`` picks ``sales`` or ``rejected`` in the clean zone; the raw zone has pages.
        """
        with self.open() as store:
            if snapshot_id is None:
                refs = list_snapshots(store, zone, day)
                ref = refs[0] if refs else None
            else:
                ref = find_snapshot(store, zone, day, snapshot_id)
            if ref is None:
                which = f"snapshot {snapshot_id}" if snapshot_id else "snapshot"
                raise LakeError(f"the {zone} zone of {store.uri('')} has no {which} of {day}")
            if zone == "raw":
                keys, schema = ref.manifest["parts"], RAW_SCHEMA
            else:
                keys, schema = ref.manifest[f"{part}_parts"], PART_SCHEMAS[part]
            tables = [read_parquet(store, key) for key in keys]
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _as_table(frame: pd.DataFrame | pa.Table, part: str) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame.select(PART_SCHEMAS[part].names).cast(PART_SCHEMAS[part])
    return clean_table(frame) if part == "sales" else rejected_table(frame)
