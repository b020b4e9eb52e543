"""Binding a task to a day's asset keeps every option of the task (no Prefect API needed)."""

from __future__ import annotations

from prefect.assets import Asset
from prefect.tasks import MaterializingTask

from tasks.assets import describe_materialized, materializing
from tasks.extract import extract_sales
from tasks.load import load_sales

RAW = "s3://lake/raw/sales/date=2026-11-23"
CLEAN = "s3://lake/clean/sales/date=2026-11-23"
WAREHOUSE = "postgresql://db:5432/dwh/public.sales/date=2026-11-23"


def test_the_extract_keeps_its_retries_cache_and_result_options() -> None:
    bound = materializing(extract_sales, RAW)
    assert isinstance(bound, MaterializingTask)
    assert bound.assets == [Asset(key=RAW)]
    assert bound.asset_deps == []
    assert bound.fn is extract_sales.fn
    assert bound.name == "extract-sales"
    assert (bound.retries, bound.retry_delay_seconds) == (2, [5, 30])
    assert bound.retry_condition_fn is extract_sales.retry_condition_fn
    assert bound.cache_policy == extract_sales.cache_policy
    assert bound.cache_expiration == extract_sales.cache_expiration
    assert bound.persist_result is True
    assert bound.result_serializer == "json"
    assert bound.timeout_seconds == 3600
    # Rebinding for another lake (results_in_lake, a refresh) keeps the asset.
    assert bound.with_options(refresh_cache=True).assets == [Asset(key=RAW)]


def test_the_load_depends_on_the_clean_asset() -> None:
    bound = materializing(load_sales, WAREHOUSE, [CLEAN])
    assert bound.assets == [Asset(key=WAREHOUSE)]
    assert bound.asset_deps == [Asset(key=CLEAN)]
    assert bound.name == "load-sales"
    assert load_sales.asset_deps == []  # the task itself is left as it was


def test_metadata_outside_a_materializing_run_is_a_no_op() -> None:
    describe_materialized({"records": 1})  # no asset context: nothing to describe, no error
