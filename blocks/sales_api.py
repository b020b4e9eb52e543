"""``SalesApiBlock``: how to reach the sales API."""

from __future__ import annotations

from typing import ClassVar

from pydantic import HttpUrl, SecretStr

from blocks.parameters import ConfigBlock
from sales_etl.settings import SourceConfig, field_of
from sales_etl.source import SalesApiClient


class SalesApiBlock(ConfigBlock):
    """The sales API the Daily Sales ETL extracts from: URL, API key, paging and retries.

    An empty ``base_url`` runs the flow against the embedded demo API.
    """

    _config_model: ClassVar[type[SourceConfig]] = SourceConfig
    _block_type_name: ClassVar[str] = "Sales API"
    _block_type_slug: ClassVar[str] = "sales-api"
    _description: ClassVar[str] = (
        "The sales API the Daily Sales ETL extracts from: base URL, API key (secret), "
        "page size, request timeout and retries."
    )
    _documentation_url: ClassVar[HttpUrl] = HttpUrl("https://docs.prefect.io/v3/concepts/blocks")
    _code_example: ClassVar[str] = """
        from datetime import date

        from blocks import SalesApiBlock

        sales_api_block = SalesApiBlock.load("BLOCK_NAME")
        with sales_api_block.client() as client:
            status = client.status(date(2026, 11, 23))
        """

    base_url: str | None = field_of(
        SourceConfig,
        "base_url",
        title="Base URL",
        description="Base URL of the sales API, e.g. https://sales.example.com; empty: demo API.",
    )
    api_key: SecretStr | None = field_of(
        SourceConfig,
        "api_key",
        title="API key",
        description="Bearer token sent as Authorization header; empty: no authentication.",
    )
    page_size: int = field_of(
        SourceConfig, "page_size", description="Records requested per page (1 to 10000)."
    )
    timeout_seconds: float = field_of(
        SourceConfig, "timeout_seconds", description="Timeout of one HTTP request, in seconds."
    )
    max_retries: int = field_of(
        SourceConfig,
        "max_retries",
        description="Retries of a failed request (5xx, 429, timeouts).",
    )

    def to_config(self) -> SourceConfig:
        """The plain configuration the tasks receive (validates the URL)."""
        return SourceConfig(**self.config_values())

    def client(self) -> SalesApiClient:
        """A client of the API; use it as ``with block.client() as client``."""
        config = self.to_config()
        if config.base_url is None:
            raise ValueError("this SalesApiBlock has no base_url (it stands for the demo API)")
        return SalesApiClient(config)
