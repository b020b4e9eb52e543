"""The transform of one day: plan, one ``transform-part`` task per raw part, one commit.

A single raw part (an hourly day of the demo size) is one task in the calling flow. Several
parts run where ``TASK_RUNNER`` says (:mod:`flows.runners`): on threads or the part worker
processes, as tasks of the calling flow submitted on its own thread pool; on the workers of a
``dask.distributed`` cluster, in the subflow "Transform Sales Parts", whose task runner is the
cluster's. Whatever runs them and in whatever order they finish, the clean snapshot is the
same, record for record (each part numbers its records from the raw manifest's counts, and the
commit lists parts in raw order).
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import Task, flow
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger

from flows.runners import RunnerChoice, runner_from_settings
from sales_etl.assets import DayAssets
from sales_etl.part_workers import shared_part_workers
from sales_etl.progress import Progress
from sales_etl.settings import LakeConfig
from sales_etl.snapshots import CleanManifest, CleanParts, RawManifest
from sales_etl.transform import DEFAULT_CHUNK_RECORDS, RawPart
from tasks.assets import materializing
from tasks.progress import ProgressReporter
from tasks.transform import commit_clean_snapshot, plan_transform, transform_part

TRANSFORM_PARTS_FLOW = "Transform Sales Parts"


def transform_day(
    lake: LakeConfig,
    raw: RawManifest,
    runner: RunnerChoice | None = None,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    assets: DayAssets | None = None,
) -> CleanManifest:
    """Build (or reuse) the clean snapshot of raw snapshot ``raw``; call inside a flow.

    Args:
        lake: where the raw snapshot is and the clean one goes.
        raw: the raw snapshot to transform (as the extract or the lake returned it).
        runner: where the part tasks run; None: ``TASK_RUNNER`` from the environment.
        chunk_records: records validated at once inside a part (bounds memory).
        assets: the day's asset keys: the commit materializes the clean lake asset (upstream:
            the raw one). None: no asset events.

    Returns:
        The clean snapshot's :class:`~sales_etl.snapshots.CleanManifest`.
    """
    choice = runner or runner_from_settings()
    plan = plan_transform(lake, raw)
    if plan.reused is not None:
        return plan.reused
    choice = choice.for_parts(len(plan.parts))
    get_run_logger().info(
        "Transforming %d raw parts on %s, at most %d at once",
        len(plan.parts),
        choice.describe(),
        choice.in_flight(),
    )
    if choice.in_flow:
        parts = [transform_part(lake, part, chunk_records) for part in plan.parts]
    elif choice.in_subflow:
        parts = transform_parts.with_options(task_runner=choice.task_runner())(
            lake, list(plan.parts), choice.in_flight(), chunk_records
        )
    else:
        # No subflow: it would cost a flow run, created synchronously through the API (on the
        # temporary server's SQLite an answer 503 "busy" at that moment cost ~2 s of retry).
        parts = submit_parts(
            lake, plan.parts, choice.in_flight(), chunk_records, choice.part_processes
        )
    return _committer(assets)(lake, raw, parts)


def _committer(assets: DayAssets | None) -> Task[..., CleanManifest]:
    """``commit-clean-snapshot``, materializing the day's clean lake asset when it has one."""
    if assets is None:
        return commit_clean_snapshot
    return materializing(commit_clean_snapshot, assets.clean, [assets.raw])


@flow(
    name=TRANSFORM_PARTS_FLOW,
    description="Validate the raw parts of a snapshot in parallel on the configured task runner.",
    validate_parameters=False,
)
def transform_parts(
    lake: LakeConfig,
    parts: Sequence[RawPart],
    max_in_flight: int,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
) -> list[CleanParts]:
    """:func:`submit_parts` on this subflow's task runner (a Dask cluster's workers)."""
    return submit_parts(lake, parts, max_in_flight, chunk_records)


def submit_parts(
    lake: LakeConfig,
    parts: Sequence[RawPart],
    max_in_flight: int,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    processes: int = 0,
) -> list[CleanParts]:
    """Submit one ``transform-part`` task per raw part on the current flow's task runner, at
    most ``max_in_flight`` unfinished; with ``processes``, each task hands its part to one of
    that many part worker processes (started now if not yet).

    Returns:
        What each part wrote, in raw part order (whatever order they finished in).
    """
    if processes:
        shared_part_workers(processes)
    done: dict[int, CleanParts] = {}
    pending: dict[PrefectFuture[CleanParts], int] = {}
    queue = list(parts)
    records = {part.number: part.records for part in parts}
    progress = ProgressReporter(
        Progress("transform", expected=sum(records.values())), key="daily-sales-transform-progress"
    )
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            part = queue.pop(0)
            pending[transform_part.submit(lake, part, chunk_records, processes)] = part.number
        finished = next(as_completed(list(pending)))
        number = pending.pop(finished)
        done[number] = finished.result()
        progress.add(records[number])
    progress.finish()
    return [done[part.number] for part in parts]
