"""Create a work pool if it is missing, or bring its base job template up to date (idempotent)."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound


def ensure_work_pool(name: str, pool_type: str, base_job_template: dict[str, Any]) -> str:
    """Make the pool ``name`` exist with ``base_job_template``; say what was done.

    Returns:
        ``"created"``, ``"updated"`` (the template differed) or ``"unchanged"``.

    Raises:
        SystemExit: a pool of that name exists with another type.
    """
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=base_job_template)
            )
            return "created"
        if pool.type != pool_type:
            raise SystemExit(
                f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; "
                "pick another --pool"
            )
        if pool.base_job_template == base_job_template:
            return "unchanged"
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=base_job_template))
        return "updated"
