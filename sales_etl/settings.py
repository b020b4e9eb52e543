"""The configuration models: one per outside system, each field's default and limits stated once.

:class:`SourceConfig`, :class:`LakeConfig` and :class:`WarehouseConfig` are what the tasks
receive. ``Settings`` reads the environment (and an optional ``.env`` file) into them; the blocks
in ``blocks/`` hold the same fields (:func:`field_of`: the block's field *is* the model's, with
its default and limits) for Prefect's UI. Which of the two a run uses is chosen in
``flows/config.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from sales_etl.contract import DEFAULT_MODE, ContractMode
from sales_etl.errors import ConfigError

DEFAULT_DATA_DIR = Path(".data")
# A PostgreSQL identifier the load may quote: the schema and the table names.
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


def field_of(model: type[BaseModel], name: str, **overrides: Any) -> Any:
    """Field ``name`` of ``model`` (its default and limits) for another model: an environment
    setting or a block field, with its own title and description (``overrides``)."""
    return FieldInfo.merge_field_infos(model.model_fields[name], **overrides)


class SourceConfig(BaseModel):
    """How to reach the sales API. ``base_url=None`` means: start the embedded demo API."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None
    api_key: SecretStr | None = None
    page_size: int = Field(default=5000, ge=1, le=10_000)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    backoff_base_seconds: float = Field(default=0.5, ge=0)
    backoff_cap_seconds: float = Field(default=30.0, ge=0)
    max_page_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"sales API URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


class LakeConfig(BaseModel):
    """Where raw and clean data land: a local folder or ``s3://bucket/prefix``."""

    model_config = ConfigDict(frozen=True)

    url: str = str(DEFAULT_DATA_DIR / "lake")
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    # Housekeeping keeps this many newest raw snapshots per day (and what replay and the
    # ledger still need: sales_etl/housekeeping.py).
    keep_snapshots: int = Field(default=3, ge=1, le=1000)
    # Where ``url`` was set, for error messages: the variable, or the block that holds it.
    setting: str = Field(default="DATA_LAKE_URL", exclude=True)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


class WarehouseConfig(BaseModel):
    """Which PostgreSQL database to load. ``url`` holds the password, hence a ``SecretStr``.

    ``url=None`` means: the embedded PostgreSQL server in ``./.data/postgres``, started for the
    run (``flows.config.warehouse_endpoint`` resolves it to a real URL).
    """

    model_config = ConfigDict(frozen=True)

    url: SecretStr | None = None
    db_schema: str = Field(default="public", pattern=IDENTIFIER)
    table_name: str = Field(default="sales", pattern=IDENTIFIER)
    pool_size: int = Field(default=5, ge=1)
    pool_timeout_seconds: float = Field(default=30.0, gt=0)
    # SET LOCAL work_mem of a load: its sorts and hashes stay in memory (None: the server's).
    work_mem: str | None = Field(default="128MB", pattern=r"^\d+(kB|MB|GB)$")
    # Where ``url`` was set, for error messages: the variable, or the block that holds it.
    setting: str = Field(default="WAREHOUSE_URL", exclude=True)

    @property
    def is_embedded(self) -> bool:
        """True when no URL is configured: the run starts the embedded PostgreSQL server."""
        return self.url is None

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with a plain ``postgresql://`` pinned to psycopg2, the chosen driver."""
        if self.url is None:  # a bug of the caller, never a user's configuration
            raise RuntimeError(
                "the warehouse is the embedded PostgreSQL, which has no URL until it is started: "
                "resolve the config with flows.config.warehouse_endpoint"
            )
        raw = self.url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if raw.startswith(prefix):
                return "postgresql+psycopg2://" + raw[len(prefix) :]
        return raw

    @property
    def dialect(self) -> str:
        return self.sqlalchemy_url.split(":", 1)[0].split("+", 1)[0]


class QualityConfig(BaseModel):
    """When a day's reject rate (rejected / records) degrades its quality or fails its run."""

    model_config = ConfigDict(frozen=True)

    # Degraded above this rate, or above ``relative_factor`` x the median of the previous
    # ``baseline_days`` loaded days; the run fails (after loading) above ``fail_rate``.
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)
    relative_factor: float = Field(default=3.0, ge=1)
    baseline_days: int = Field(default=7, ge=1, le=90)
    fail_rate: float = Field(default=0.5, ge=0, le=1)


class Settings(BaseSettings):
    """Environment settings; every field has a default that makes a local run work."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    sales_api_url: str | None = None
    sales_api_key: SecretStr | None = None
    sales_api_page_size: int = field_of(SourceConfig, "page_size")
    sales_api_timeout_seconds: float = field_of(SourceConfig, "timeout_seconds")
    sales_api_max_retries: int = field_of(SourceConfig, "max_retries")
    data_lake_url: str = field_of(LakeConfig, "url")
    lake_keep_snapshots: int = field_of(LakeConfig, "keep_snapshots")
    aws_endpoint_url: str | None = None
    aws_default_region: str | None = None
    warehouse_url: SecretStr | None = None
    warehouse_schema: str = field_of(WarehouseConfig, "db_schema")
    # Hourly runs extract the records changed since the day's high-water mark minus this lag
    # (records committed late at the source); the day's closing run extracts the whole day.
    incremental_lag_minutes: int = Field(default=10, ge=0)
    # How the transform's per-part tasks run (flows/runners.py): auto | threads[:N] |
    # processes[:N] | tcp://scheduler:8786 (Dask); and how many may be unfinished at once.
    task_runner: str = "auto"
    transform_max_in_flight: int | None = Field(default=None, ge=1)
    quality_max_reject_rate: float = field_of(QualityConfig, "max_reject_rate")
    quality_relative_factor: float = field_of(QualityConfig, "relative_factor")
    quality_fail_reject_rate: float = field_of(QualityConfig, "fail_rate")
    # What a change of the source's record shape does (sales_etl.contract): evolve (keep unknown
    # fields in sales.extra), freeze (fail the day before loading) or discard (load without them).
    schema_contract: ContractMode = DEFAULT_MODE

    def source(self) -> SourceConfig:
        return SourceConfig(
            base_url=self.sales_api_url,
            api_key=self.sales_api_key
            if self.sales_api_key and self.sales_api_key.get_secret_value()
            else None,
            page_size=self.sales_api_page_size,
            timeout_seconds=self.sales_api_timeout_seconds,
            max_retries=self.sales_api_max_retries,
        )

    def lake(self) -> LakeConfig:
        # Credentials stay with boto3's default chain (AWS_ACCESS_KEY_ID, profiles, IRSA, ...).
        return LakeConfig(
            url=self.data_lake_url,
            endpoint_url=self.aws_endpoint_url,
            region=self.aws_default_region,
            keep_snapshots=self.lake_keep_snapshots,
        )

    def warehouse(self) -> WarehouseConfig:
        # An unset or empty WAREHOUSE_URL means the embedded PostgreSQL server.
        url = (
            self.warehouse_url
            if self.warehouse_url and self.warehouse_url.get_secret_value()
            else None
        )
        return WarehouseConfig(url=url, db_schema=self.warehouse_schema)

    def quality(self) -> QualityConfig:
        return QualityConfig(
            max_reject_rate=self.quality_max_reject_rate,
            relative_factor=self.quality_relative_factor,
            fail_rate=self.quality_fail_reject_rate,
        )


def load_settings() -> Settings:
    """Read the environment now (never at import time)."""
    try:
        return Settings()
    except ValueError as exc:  # pydantic's ValidationError; its text never holds SecretStr values
        raise ConfigError(f"invalid environment settings: {exc}") from None
