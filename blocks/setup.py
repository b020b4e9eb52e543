"""Create or update the three blocks from the current environment settings.

    python -m blocks.setup --prefix prod

reads the environment (and ``.env``) like a pipeline run does, and saves ``prod-warehouse``,
``prod-data-lake`` and ``prod-sales-api`` to the configured Prefect API, overwriting blocks of
those names. Secrets are saved but never printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from prefect.blocks.core import Block

from blocks.data_lake import DataLakeBlock
from blocks.sales_api import SalesApiBlock
from blocks.warehouse import WarehouseBlock
from sales_etl.errors import ConfigError
from sales_etl.settings import Settings, load_settings

# The three blocks of an environment are saved as <prefix>-<suffix>.
NAME_SUFFIXES: dict[type[Block], str] = {
    WarehouseBlock: "warehouse",
    DataLakeBlock: "data-lake",
    SalesApiBlock: "sales-api",
}


def saved_name(prefix: str, cls: type[Block]) -> str:
    """The name the block of type ``cls`` of environment ``prefix`` is saved under."""
    return f"{prefix}-{NAME_SUFFIXES[cls]}"


def blocks_from_settings(settings: Settings, prefix: str) -> dict[str, Block]:
    """The three blocks the settings describe, by the names they are saved under."""
    blocks: list[Block] = [
        WarehouseBlock.from_config(settings.warehouse()),
        DataLakeBlock.from_config(settings.lake()),
        SalesApiBlock.from_config(settings.source()),
    ]
    return {saved_name(prefix, type(block)): block for block in blocks}


def save_blocks(settings: Settings, prefix: str) -> dict[str, Block]:
    """Save (create or overwrite) the three blocks; returns them by name."""
    blocks = blocks_from_settings(settings, prefix)
    for name, block in blocks.items():
        block.save(name, overwrite=True)
    return blocks


def _prefix(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", text):
        raise argparse.ArgumentTypeError(
            f"prefix must be lowercase letters, digits and dashes: {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m blocks.setup",
        description=(
            "Create or update the Daily Sales ETL blocks from the current environment "
            "(SALES_API_URL, SALES_API_KEY, SALES_API_PAGE_SIZE, SALES_API_TIMEOUT_SECONDS, "
            "SALES_API_MAX_RETRIES, DATA_LAKE_URL, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, "
            "WAREHOUSE_URL, WAREHOUSE_SCHEMA, or a .env file). Saves <prefix>-warehouse, "
            "<prefix>-data-lake and <prefix>-sales-api to the Prefect API in PREFECT_API_URL "
            "(overwriting blocks of those names); run the flow with --warehouse-block "
            "<prefix>-warehouse and so on. Secrets are saved, never printed."
        ),
    )
    parser.add_argument(
        "--prefix",
        type=_prefix,
        default="default",
        help="block name prefix, e.g. prod or dev (default: default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: exit 0 when all three blocks are saved, 1 with the reason otherwise."""
    args = build_parser().parse_args(argv)
    try:
        blocks = save_blocks(load_settings(), args.prefix)
    except ConfigError as exc:
        print(f"blocks.setup failed: {exc}", file=sys.stderr)
        return 1
    for name, block in blocks.items():
        # repr masks every SecretStr field
        print(f"saved {block.get_block_type_slug()}/{name}: {block!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
