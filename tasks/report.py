"""Task that publishes the run summary as Prefect artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from sales_etl.report import RunSummary


@task(
    name="publish-report",
    description="Publish the run summary as a table and a markdown artifact.",
    timeout_seconds=120,
    cache_policy=NO_CACHE,
    log_prints=True,
)
def publish_report(summary: RunSummary) -> None:
    """Create the ``daily-sales-summary`` table and ``daily-sales-report`` markdown artifacts,
    and print the summary (``log_prints``: the print lands in the run's logs)."""
    description = f"Daily Sales ETL {summary.day}: {summary.status}"
    create_table_artifact(
        key="daily-sales-summary", table=summary.table_rows(), description=description
    )
    create_markdown_artifact(
        key="daily-sales-report", markdown=summary.to_markdown(), description=description
    )
    print(summary.to_text())
