from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

import pandas as pd
import pytest

from devharness.demo_api import generate_record
from sales_etl import jsontext
from sales_etl.validate import validate_records

DAY = date(2026, 11, 23)


@pytest.fixture
def block_name() -> str:
    """A block document name no other test uses (the harness API lives for the session)."""
    return f"test-{uuid.uuid4().hex[:10]}"


def demo_records(count: int, first: int = 0, version: int = 1) -> list[Any]:
    """Demo API records as the pipeline parses them (numbers kept as their JSON text)."""
    records = [generate_record(DAY.isoformat(), i, version) for i in range(first, first + count)]
    return list(jsontext.loads(json.dumps(records)))


def clean_sales(count: int, first: int = 0, version: int = 1) -> pd.DataFrame:
    """``count`` valid demo sales of :data:`DAY`, validated like the pipeline does."""
    result = validate_records(demo_records(count, first, version), DAY)
    assert len(result.rejected) == 0
    return result.clean
