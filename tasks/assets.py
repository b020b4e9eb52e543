"""Prefect 3 assets: the tasks that write a day's snapshots and table, bound to its asset keys.

A day's keys are known only when its run starts (the lake and the warehouse are
configuration), so the flow binds them at call time: :func:`materializing` turns a task into
a ``MaterializingTask`` of the day's asset (what ``@materialize(key)`` would build), with every
option of the task kept and the upstream asset as ``asset_deps``. A completed run of it emits
``prefect.asset.materialization.succeeded`` for the key (a failed one ``.failed``) and
``prefect.asset.referenced`` for the upstream asset; a cached run emits nothing (nothing was
written). The task itself attaches its metadata with :func:`describe_materialized`.

``sales.asset.due`` is this project's own event: a run of a day announces, when it starts, that
the day's warehouse asset must be materialized by the freshness deadline (the automation
"Daily Sales: warehouse asset not fresh" in ``deployments/automations.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.assets import add_asset_metadata
from prefect.context import AssetContext
from prefect.events import emit_event
from prefect.tasks import MaterializingTask

from sales_etl.assets import DayAssets

P = ParamSpec("P")
R = TypeVar("R")

ASSET_DUE = "sales.asset.due"
MATERIALIZATION_SUCCEEDED = "prefect.asset.materialization.succeeded"
MATERIALIZATION_FAILED = "prefect.asset.materialization.failed"
ASSET_REFERENCED = "prefect.asset.referenced"

# Task options whose attribute has another name (as in MaterializingTask.with_options).
_OPTION_ATTRIBUTES = {
    "on_completion": "on_completion_hooks",
    "on_failure": "on_failure_hooks",
    "on_running": "on_running_hooks",
    "on_rollback": "on_rollback_hooks",
    "on_commit": "on_commit_hooks",
    "persist_result": "_user_persist_result",
    "cache_policy": "_user_cache_policy",
}


def materializing(
    task: Task[P, R], asset: str, depends_on: Sequence[str] = ()
) -> MaterializingTask[P, R]:
    """``task`` (all its options kept) as the task that materializes asset key ``asset``,
    which depends on the assets ``depends_on``."""
    options: dict[str, Any] = {}
    for name in inspect.signature(Task.__init__).parameters:
        if name not in ("self", "fn"):
            options[name] = getattr(task, _OPTION_ATTRIBUTES.get(name, name))
    options["asset_deps"] = list(depends_on) or None
    return MaterializingTask(fn=task.fn, assets=[asset], **options)


def describe_materialized(metadata: Mapping[str, Any]) -> None:
    """Attach ``metadata`` to each asset the running task materializes; nothing when the task
    runs without assets (a test, a tool calling it directly)."""
    context = AssetContext.get()
    if context is None:
        return
    for asset in context.downstream_assets:
        add_asset_metadata(asset.key, dict(metadata))


def emit_asset_due(assets: DayAssets, due_from: datetime) -> None:
    """``sales.asset.due`` for the day's warehouse asset (its key is the event's resource): the
    freshness deadline runs from ``due_from``, the run's scheduled (or actual) start."""
    emit_event(
        ASSET_DUE,
        {
            "prefect.resource.id": assets.warehouse,
            "sales.day": assets.day.isoformat(),
        },
        occurred=due_from,
        payload={"day": assets.day.isoformat(), "due_from": due_from.isoformat()},
    )
