"""The per-part transform: any order of parts gives the sequential snapshot, record for record."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from devharness.raw_days import write_realistic_day
from sales_etl import jsontext
from sales_etl.errors import LakeError
from sales_etl.lake import LocalLake
from sales_etl.snapshots import (
    MANIFEST,
    CleanManifest,
    SnapshotRef,
    iter_tables,
    raw_part_records,
)
from sales_etl.transform import (
    clean_table,
    commit_clean_snapshot,
    plan_parts,
    rejected_table,
    transform_part,
    transform_snapshot,
)
from sales_etl.validate import REASON_ORDER, validate_chunk
from tests.sales_etl import validate_reference
from tests.utils import DAY


def raw_day(root: Path, records: int = 4000) -> tuple[LocalLake, SnapshotRef]:
    lake = LocalLake(root)
    return lake, write_realistic_day(lake, DAY, records, page_size=150, part_bytes=120_000)


def rows(lake: LocalLake, clean: SnapshotRef) -> tuple[pa.Table, pa.Table]:
    def whole(keys: list[str]) -> pa.Table:
        return pa.concat_tables(iter_tables(lake, keys)).sort_by("record_index")

    return whole(clean.manifest["sales_parts"]), whole(clean.manifest["rejected_parts"])


def test_parts_in_any_order_give_the_sequential_snapshot(tmp_path: Path) -> None:
    lake, raw = raw_day(tmp_path / "a")
    other, raw_b = raw_day(tmp_path / "b")
    parts = plan_parts(lake, raw)
    assert len(parts) >= 5
    assert [p.first_index for p in parts] == [
        sum(p.records for p in parts[:i]) for i in range(len(parts))
    ]

    sequential = transform_snapshot(lake, raw, chunk_records=333)
    shuffled = {p.number: transform_part(other, p, 333) for p in reversed(plan_parts(other, raw_b))}
    parallel = commit_clean_snapshot(other, raw_b, [shuffled[n] for n in sorted(shuffled)])

    for key in ("records", "clean", "rejected", "by_reason", "clean_amount_total"):
        assert parallel.manifest[key] == sequential.manifest[key]
    assert set(sequential.manifest["by_reason"]) == set(REASON_ORDER)
    sales, rejected = rows(lake, sequential)
    assert rows(other, parallel) == (sales, rejected)
    assert sales.num_rows + rejected.num_rows == 4000
    indexes = sorted(sales["record_index"].to_pylist() + rejected["record_index"].to_pylist())
    assert indexes == list(range(4000))
    total = sum(sales["amount"].to_pylist(), Decimal(0))
    assert str(total) == sequential.manifest["clean_amount_total"]


def test_the_snapshot_equals_the_reference_validator_on_one_chunk(tmp_path: Path) -> None:
    lake, raw = raw_day(tmp_path, records=3000)
    clean = transform_snapshot(lake, raw)
    records = []
    for table in iter_tables(lake, raw.manifest["parts"]):
        for body in table["body"].to_pylist():
            records.extend(jsontext.loads(body)["data"])
    reference = validate_reference.validate_records(records, DAY)
    sales, rejected = rows(lake, clean)
    assert sales == clean_table(reference.clean)
    assert rejected == rejected_table(reference.rejected)


def test_old_raw_manifests_without_part_records_are_numbered_from_the_parts(
    tmp_path: Path,
) -> None:
    lake, raw = raw_day(tmp_path)
    counts = raw.manifest["part_records"]
    old = {k: v for k, v in raw.manifest.items() if k != "part_records"}
    (tmp_path / raw.prefix / MANIFEST).write_text(json.dumps(old))
    legacy = SnapshotRef("raw", DAY, raw.snapshot_id, old)
    assert raw_part_records(lake, legacy) == counts
    assert [p.first_index for p in plan_parts(lake, legacy)] == [
        p.first_index for p in plan_parts(lake, raw)
    ]


def test_a_part_with_another_record_count_than_its_manifest_fails(tmp_path: Path) -> None:
    lake, raw = raw_day(tmp_path)
    part = plan_parts(lake, raw)[1]
    wrong = type(part)(**{**part.__dict__, "records": part.records + 1})
    with pytest.raises(LakeError, match=r"holds .* records, its snapshot says"):
        transform_part(lake, wrong)


def test_clean_manifest_is_typed_and_a_rerun_reuses_it(tmp_path: Path) -> None:
    lake, raw = raw_day(tmp_path, records=1000)
    first = transform_snapshot(lake, raw)
    manifest = CleanManifest.from_ref(first)
    assert manifest.records == 1000 and manifest.clean + manifest.rejected == 1000
    assert sum(manifest.by_reason.values()) == manifest.rejected
    assert transform_snapshot(lake, raw).manifest == first.manifest


def test_sub_microsecond_timestamps_are_cut_not_fatal() -> None:
    record = {
        "sale_id": "S-1",
        "sale_date": "2026-11-23T10:00:00.123456789Z",
        "store_id": "s",
        "product_id": "p",
        "customer_id": None,
        "quantity": 1,
        "unit_price": "1.50",
        "amount": "1.50",
        "currency": "EUR",
        "updated_at": "2026-11-23T10:00:00Z",
    }
    chunk = validate_chunk([jsontext.loads(json.dumps(record))], DAY)
    table = clean_table(chunk.clean)
    assert table["sale_date"][0].as_py() == pd.Timestamp("2026-11-23T10:00:00.123456Z")
    assert table["amount"][0].as_py() == Decimal("1.5000")


@pytest.mark.parametrize(
    ("literal", "stored"),
    [
        ("99999999999999.9999", "99999999999999.9999"),
        ('"99999999999999.9999"', "99999999999999.9999"),
        ("12345678901234.5678", "12345678901234.5678"),
        ('"12345678901234.5678"', "12345678901234.5678"),
        ('"0.10"', "0.1000"),
        ("0.10", "0.1000"),
    ],
)
def test_money_beyond_float64_stays_exact(literal: str, stored: str) -> None:
    """18 significant digits (numeric(18,4)'s maximum) survive parse, validation and typing."""
    text = (
        '{"sale_id":"S-1","sale_date":"2026-11-23T10:00:00Z","store_id":"s","product_id":"p",'
        f'"customer_id":null,"quantity":1,"unit_price":{literal},"amount":{literal},'
        '"currency":"EUR","updated_at":"2026-11-23T10:00:00Z"}'
    )
    chunk = validate_chunk([jsontext.loads(text)], DAY)
    table = clean_table(chunk.clean)
    assert str(table["unit_price"][0].as_py()) == stored
    assert str(table["amount"][0].as_py()) == stored
