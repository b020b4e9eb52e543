"""Tasks that talk to the sales API: check the day, extract it into the raw zone of the lake."""

from __future__ import annotations

import gc
from datetime import date, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State

from sales_etl.assets import raw_metadata
from sales_etl.contract import SchemaChange, Shape, compare, enforce
from sales_etl.errors import PartialExtractError, PermanentSourceError, TransientSourceError
from sales_etl.lake import open_lake
from sales_etl.memory import cyclic_gc_paused
from sales_etl.part_workers import LandedParts, running_part_workers
from sales_etl.progress import Progress
from sales_etl.settings import LakeConfig, SourceConfig
from sales_etl.snapshots import (
    RawManifest,
    RawSnapshotWriter,
    SnapshotRef,
    find_snapshot,
    list_snapshots,
    replay_chain,
)
from sales_etl.source import SalesApiClient, SourceStatus, max_pages_for
from tasks.assets import describe_materialized
from tasks.operations import emit_schema_changed
from tasks.progress import ProgressReporter


@task(
    name="check-source",
    description="Ask the sales API whether a day has data worth processing.",
    timeout_seconds=300,
)
def check_source(
    source: SourceConfig, day: date, updated_since: datetime | None = None
) -> SourceStatus:
    """``GET /sales/status`` for ``day`` (counting the records changed since ``updated_since``)."""
    with SalesApiClient(source) as client:
        return client.status(day, updated_since)


def _retry_unless_permanent(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retries transient failures only; a 4xx or a broken contract fails at once."""
    try:
        state.result()
    except PermanentSourceError:
        return False
    except Exception:
        return True
    return True


@task(
    name="extract-sales",
    description="Page through one day of the sales API and land the raw pages in the lake.",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_unless_permanent,
    timeout_seconds=3600,
    # Keyed on the day and the source's state (identity + record count), never on secrets.
    cache_policy=(INPUTS - "source" - "lake") + TASK_SOURCE,
    cache_expiration=timedelta(hours=1),
    persist_result=True,
    result_serializer="json",
)
def extract_sales(
    source: SourceConfig,
    lake: LakeConfig,
    day: date,
    source_state: str,
    lake_url: str,
    updated_since: datetime | None = None,
) -> RawManifest:
    """Extract ``day`` into a new raw snapshot; returns its manifest (id, counts, mode).

    ``source_state`` and ``lake_url`` are part of the cache key: a cached snapshot is reused only
    for the same source, the same record count at the source, and the same lake.
    ``updated_since`` (also in the key) asks only for the records changed since then; it is sent
    only when the status says the server supports it, and a server that refuses it gets the
    whole day. The manifest records ``mode`` ("full" | "incremental") and ``updated_since``.
    """
    logger = get_run_logger()
    with open_lake(lake) as store, SalesApiClient(source) as client:
        writer = RawSnapshotWriter(store, day)
        handoff = _handoff(lake, writer)
        try:
            status = client.status(day)
            since = updated_since if status.supports_updated_since else None
            if updated_since is not None and since is None:
                logger.info("The source does not support updated_since: extracting all of %s", day)
            # A whole day's size is known: its last parts taper off (RawSnapshotWriter).
            writer.expected_records = None if since else status.record_count
            _land_pages(client, writer, status, since, source.page_size, handoff)
            mode = client.mode
            used_since = since.isoformat() if since is not None and mode == "incremental" else None
            ref = writer.commit(
                source_state=source_state,
                source_record_count=status.record_count,
                requests=client.requests_made,
                retries=client.retries,
                mode=mode,
                updated_since=used_since,
            )
        except BaseException:
            if handoff is not None:
                handoff.discard()
            raise
        if handoff is not None:
            handoff.landed(writer.parts, writer.part_records)
        logger.info(
            "Landed %d records in %d pages as %s (%s extract%s, %d retries)",
            writer.records,
            writer.pages,
            store.uri(ref.prefix),
            mode,
            f" since {used_since}" if used_since else "",
            client.retries,
        )
    raw = RawManifest.from_ref(ref)
    describe_materialized(raw_metadata(raw))  # the raw lake asset, when the flow binds it
    return raw


def _handoff(lake: LakeConfig, writer: RawSnapshotWriter) -> LandedParts | None:
    """When this process has part workers, they transform each raw part as it lands (their
    results wait for the ``transform-part`` tasks); else None."""
    pool = running_part_workers()
    if pool is None:
        return None
    return LandedParts(pool, lake, writer.day, writer.snapshot_id)


def _land_pages(
    client: SalesApiClient,
    writer: RawSnapshotWriter,
    status: SourceStatus,
    since: datetime | None,
    page_size: int,
    handoff: LandedParts | None = None,
) -> None:
    """Write every page of the day (changed since ``since``, if given) to ``writer``, reporting
    progress and handing each full raw part to ``handoff``. A source lost after the first page
    raises :class:`PartialExtractError`."""
    # The lake keeps each body byte for byte and the transform parses it losslessly; here only
    # the envelope (cursor, record count) matters: the fast parser will do. The whole day's
    # count bounds the pages of a delta too (and of its fallback).
    progress = ProgressReporter(
        Progress("extract", expected=None if since else status.record_count),
        key="daily-sales-extract-progress",
    )
    try:
        # A page's records are parsed into ~60,000 objects without cycles: no collector pass
        # over them (and over the process's heap) while they land; the cycles made meanwhile
        # are collected at each part written.
        with cyclic_gc_paused():
            for page in client.iter_pages(
                writer.day,
                max_pages_for(status.record_count, page_size),
                lossless=False,
                updated_since=since,
            ):
                parts = len(writer.parts)
                writer.add(page)
                progress.add(len(page.records))
                if handoff is not None:
                    handoff.landed(writer.parts, writer.part_records)
                if len(writer.parts) != parts:
                    gc.collect(1)
    except TransientSourceError as exc:
        if not writer.pages:
            raise
        raise PartialExtractError(
            f"{exc} (after {writer.pages} pages, {writer.records} records of {writer.day} "
            "had arrived)"
        ) from exc
    progress.finish()


@task(
    name="find-raw-snapshot",
    description="Look up a committed raw snapshot of a day in the lake (newest, or by id).",
    timeout_seconds=300,
)
def find_raw_snapshot(
    lake: LakeConfig, day: date, snapshot_id: str | None = None
) -> RawManifest | None:
    """The manifest of the requested (or newest) raw snapshot of ``day``, or None."""
    with open_lake(lake) as store:
        if snapshot_id is not None:
            ref = find_snapshot(store, "raw", day, snapshot_id)
        else:
            refs = list_snapshots(store, "raw", day)
            ref = refs[0] if refs else None
        return None if ref is None else RawManifest.from_ref(ref)


@task(
    name="find-replay-snapshots",
    description="The raw snapshots a day needs replayed from the lake: newest full one onward.",
    timeout_seconds=300,
)
def find_replay_snapshots(lake: LakeConfig, day: date) -> list[RawManifest]:
    """Manifests, oldest first, of the newest full raw snapshot of ``day`` and every
    incremental one after it (all of them when there is no full one); [] when none."""
    with open_lake(lake) as store:
        chain = replay_chain(list_snapshots(store, "raw", day))
    return [RawManifest.from_ref(ref) for ref in chain]


@task(
    name="check-schema-contract",
    description="Compare the shape of a raw snapshot with the contract and the day's previous one.",
    timeout_seconds=300,
    cache_policy=NO_CACHE,
)
def check_schema_contract(lake: LakeConfig, raw: RawManifest, mode: str) -> SchemaChange | None:
    """How raw snapshot ``raw`` (its manifest) differs from the contract and from the snapshot
    of its day before it; None for a snapshot written before shapes were observed. A change is
    logged and emitted as ``sales.schema.changed``; under ``freeze`` it fails the task (a
    permanent ``SchemaContractError``, not retried) before a clean snapshot is committed or anything
    is loaded."""
    day = raw.day
    shape = Shape.from_manifest(raw.manifest)
    if shape is None:
        return None
    with open_lake(lake) as store:
        previous = _previous_snapshot(list_snapshots(store, "raw", day), raw.snapshot_id)
    before, before_id = (
        (None, None)
        if previous is None
        else (Shape.from_manifest(previous.manifest), previous.snapshot_id)
    )
    change = compare(shape, raw.snapshot_id, before, before_id)
    if change:
        get_run_logger().warning("The shape of %s changed (%s): %s", day, mode, change.describe())
        emit_schema_changed(day, change, mode)
    enforce(change, mode, day.isoformat())
    return change


def _previous_snapshot(newest_first: list[SnapshotRef], snapshot_id: str) -> SnapshotRef | None:
    """The committed snapshot just before ``snapshot_id`` (ids sort by time), if any."""
    return next((ref for ref in newest_first if ref.snapshot_id < snapshot_id), None)
