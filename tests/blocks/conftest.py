"""Fixtures of the block tests."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def block_name() -> str:
    """A block document name no other test uses (the harness API lives for the session)."""
    return f"test-{uuid.uuid4().hex[:10]}"
