"""Prefect's own checks for block classes (description, field docs, code example, ...)."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks import DataLakeBlock, SalesApiBlock, WarehouseBlock


class TestBlocksStandard(BlockStandardTestSuite):
    @pytest.fixture(params=[WarehouseBlock, DataLakeBlock, SalesApiBlock], ids=lambda c: c.__name__)
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Replaces the suite's logo check, which needs Pillow and downloads the logo from the
        internet (and is skipped without Pillow). The blocks ship no logo, on purpose: the UI
        shows its default icon, and nothing is fetched from outside the machine."""
        assert block._logo_url is None


def test_blocks_package_exports_the_three_block_classes() -> None:
    import blocks

    found = {
        name
        for name in dir(blocks)
        if isinstance(getattr(blocks, name), type) and issubclass(getattr(blocks, name), Block)
    }
    assert found == {"WarehouseBlock", "DataLakeBlock", "SalesApiBlock"}
    slugs = {cls.get_block_type_slug() for cls in (WarehouseBlock, DataLakeBlock, SalesApiBlock)}
    assert slugs == {"sales-warehouse", "sales-data-lake", "sales-api"}
