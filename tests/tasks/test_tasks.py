"""The tasks' own policies: which failures Prefect retries, what the cache key depends on."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from prefect import Task
from prefect.logging import disable_run_logger
from prefect.states import Failed

from sales_etl.errors import PermanentSourceError, TransientSourceError
from sales_etl.settings import LakeConfig
from tasks.extract import _retry_unless_permanent, extract_sales, find_raw_snapshot
from tasks.load import _retry_unless_cancelled, load_sales


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (PermanentSourceError("GET x answered 403"), False),
        (TransientSourceError("GET x still failing"), True),
        (OSError("disk full"), True),
    ],
)
def test_only_transient_extract_failures_are_retried(error: Exception, retried: bool) -> None:
    state = Failed(data=error)
    assert _retry_unless_permanent(extract_sales, None, state) is retried  # type: ignore[arg-type]


def cancelled_by_the_server(url: str, wrapped: bool) -> Exception:
    """The error PostgreSQL's cancel gives (here by ``statement_timeout``): psycopg2's own, as
    a COPY raises it, or wrapped by SQLAlchemy, as a statement does."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SET statement_timeout = 50"))
            try:
                conn.execute(sa.text("SELECT pg_sleep(5)"))
            except sa.exc.DBAPIError as exc:
                return exc if wrapped else exc.orig  # type: ignore[return-value]
    finally:
        engine.dispose()
    raise AssertionError("the statement was not cancelled")


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_cancelled_load_statement_is_not_retried(pg_url: str, wrapped: bool) -> None:
    cancelled = Failed(data=cancelled_by_the_server(pg_url, wrapped))
    assert _retry_unless_cancelled(load_sales, None, cancelled) is False  # type: ignore[arg-type]
    refused = Failed(data=OSError("connection refused"))
    assert _retry_unless_cancelled(load_sales, None, refused) is True  # type: ignore[arg-type]


def test_extract_cache_key_ignores_configs_with_secrets() -> None:
    policy = extract_sales.cache_policy
    excluded = {name for p in policy.policies for name in getattr(p, "exclude", [])}
    assert {"source", "lake"} <= excluded


def test_find_raw_snapshot_in_an_empty_lake(local_lake: LakeConfig) -> None:
    assert find_raw_snapshot.fn(local_lake, date(2026, 11, 23)) is None


def _project_tasks() -> list[Task[..., object]]:
    import flows.backfill
    import tasks.extract
    import tasks.load
    import tasks.operations
    import tasks.report
    import tasks.transform

    modules = (tasks.extract, tasks.load, tasks.operations, tasks.report, tasks.transform)
    found = [v for m in (*modules, flows.backfill) for v in vars(m).values() if isinstance(v, Task)]
    return list({id(t): t for t in found}.values())


def test_no_task_carries_tags() -> None:
    """Every tagged task run asks the server for concurrency slots; a SQLite-backed server
    answers 503 when busy and the client waits 2 s (docs/decisions/0005-untagged-tasks.md)."""
    found = _project_tasks()
    assert len(found) >= 10
    assert {t.name: sorted(t.tags) for t in found if t.tags} == {}


def test_progress_outside_a_run_writes_no_orphan_artifact() -> None:
    """A task's ``.fn`` called from plain Python has no run to attach a progress artifact to;
    Prefect deprecates creating one there (FutureWarning), so only the log line is written."""
    import warnings

    from sales_etl.progress import Progress
    from tasks.progress import ProgressReporter

    reporter = ProgressReporter(Progress("extract", expected=10), key="test-progress")
    with disable_run_logger(), warnings.catch_warnings():
        warnings.simplefilter("error")
        reporter.add(10)
        reporter.finish()
    assert reporter._artifact is None
