"""Save -> load through the real Prefect test API; secrets never come back out unmasked."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock
from tests.utils import API_KEY, DB_PASSWORD

pytestmark = pytest.mark.usefixtures("prefect_harness")

AWS_SECRET = "aws-SECRET-key-5c8e0f"
MASK = "**********"  # pydantic's SecretStr mask
API_MASK = "********"  # how the Prefect API returns a secret field without secrets


def full_blocks() -> list[tuple[Block, list[str], str]]:
    """One block of each class with every field set away from its default, its secret fields
    and the secret text one of them holds."""
    return [
        (
            WarehouseBlock(
                connection_string=SecretStr(
                    f"postgresql://etl:{DB_PASSWORD}@db.internal:5432/analytics"
                ),
                db_schema="analytics",
                table_name="daily_sales",
                pool_size=3,
                pool_timeout_seconds=12.5,
            ),
            ["connection_string"],
            DB_PASSWORD,
        ),
        (
            DataLakeBlock(
                bucket="sales-lake",
                prefix="prod/sales",
                region="eu-west-1",
                endpoint_url="http://127.0.0.1:9000",
                aws_access_key_id=SecretStr("AKIATESTKEY"),
                aws_secret_access_key=SecretStr(AWS_SECRET),
            ),
            ["aws_access_key_id", "aws_secret_access_key"],
            AWS_SECRET,
        ),
        (
            SalesApiBlock(
                base_url="https://sales.example.com/v1",
                api_key=SecretStr(API_KEY),
                page_size=250,
                timeout_seconds=7.5,
                max_retries=9,
            ),
            ["api_key"],
            API_KEY,
        ),
    ]


def plain(block: Block) -> dict[str, object]:
    """Every field's value, secrets revealed, for exact comparison."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in ((n, getattr(block, n)) for n in type(block).model_fields)
    }


@pytest.mark.parametrize("index", [0, 1, 2], ids=["warehouse", "data-lake", "sales-api"])
def test_save_then_load_keeps_every_field(index: int, block_name: str) -> None:
    block, _, _ = full_blocks()[index]
    block.save(block_name)
    loaded = type(block).load(block_name)
    assert type(loaded) is type(block)
    assert plain(loaded) == plain(block)
    assert loaded.to_config() == block.to_config()


@pytest.mark.parametrize("index", [0, 1, 2], ids=["warehouse", "data-lake", "sales-api"])
def test_secrets_are_masked_in_repr_dump_and_the_saved_document(
    index: int, block_name: str
) -> None:
    block, secret_fields, secret = full_blocks()[index]
    assert secret not in repr(block)
    assert secret not in str(block)
    assert secret not in str(block.model_dump())
    assert secret not in block.model_dump_json()
    assert all(block.model_dump(mode="json")[f] == MASK for f in secret_fields)

    block.save(block_name)
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            block_name, type(block).get_block_type_slug(), include_secrets=False
        )
    assert secret not in str(document.data)
    assert {f: document.data[f] for f in secret_fields} == {f: API_MASK for f in secret_fields}
    # The one place a secret comes back: an explicit read with secrets (what load() uses).
    with get_client(sync_client=True) as client:
        revealed = client.read_block_document_by_name(
            block_name, type(block).get_block_type_slug(), include_secrets=True
        )
    assert secret in str(revealed.data)


def test_save_with_overwrite_updates_the_block(block_name: str) -> None:
    SalesApiBlock(base_url="https://old.example.com", page_size=10).save(block_name)
    with pytest.raises(ValueError, match="already in use"):
        SalesApiBlock(base_url="https://new.example.com").save(block_name)
    SalesApiBlock(base_url="https://new.example.com", page_size=20).save(block_name, overwrite=True)
    loaded = SalesApiBlock.load(block_name)
    assert (loaded.base_url, loaded.page_size) == ("https://new.example.com", 20)
