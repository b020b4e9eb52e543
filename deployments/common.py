"""Settings every deployment of the Daily Sales ETL shares: schedule, limit, tags, parameters.

``serve.py``, ``docker.py`` and ``kubernetes.py`` differ only in where the run executes (the
serve process, a Docker container, a Kubernetes Job); what runs, when, and with which default
parameters is chosen here, once.

Nothing here holds a secret: the pipeline reads its credentials at run time from the environment
of the run (a mounted ``.env``, a Kubernetes Secret) or from the blocks named by ``--blocks``
(the deployment holds references to the block documents, not their contents).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron, Interval, Schedule

from blocks.setup import saved_name
from deployments.api import unreachable_api_in_one_line
from deployments.pools import ensure_work_pool
from flows.config import BLOCK_PARAMETERS, load_block
from flows.daily_sales import daily_sales
from sales_etl.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Relative to PROJECT_ROOT locally and to the image's WORKDIR (same layout) in a container.
ENTRYPOINT = "flows/daily_sales.py:daily_sales"
FLOW_NAME = daily_sales.name
TAGS = ["etl"]
SCHEDULE_INTERVAL = timedelta(hours=1)
# Runs fall on the full hour UTC, so "the run just after midnight" is the 00:00 run.
SCHEDULE_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE_SLUG = "hourly"
HOUSEKEEPING_CRON = "30 3 * * *"
HOUSEKEEPING_SLUG = "daily-housekeeping"
# Non-secret runtime settings a worker-launched run gets in its environment.
RUNTIME_ENV_VARS = ("DATA_LAKE_URL", "WAREHOUSE_SCHEMA", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def hourly_schedule() -> Schedule:
    """Every hour on the hour, UTC (the business-date rule in the flow relies on UTC)."""
    return Interval(
        SCHEDULE_INTERVAL, anchor_date=SCHEDULE_ANCHOR, timezone="UTC", slug=SCHEDULE_SLUG
    )


def housekeeping_schedule() -> Schedule:
    """Lake housekeeping of the whole lake once a day, at 03:30 UTC (the daily runs tidy their
    own day after each load; this catches the days no run touches any more)."""
    return Cron(HOUSEKEEPING_CRON, timezone="UTC", slug=HOUSEKEEPING_SLUG)


def concurrency_limit() -> ConcurrencyLimitConfig:
    """One run at a time; a late run queues instead of overlapping the next one."""
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def default_parameters(blocks: str | None = None) -> dict[str, Any]:
    """The deployment's default parameters.

    ``run_date`` stays empty so each run derives its day from its scheduled start time. With
    ``blocks``, the prefix ``python -m blocks.setup --prefix`` saved an environment's blocks
    under, each block parameter is that saved block (``<blocks>-warehouse``, ...): the
    deployment stores it as a reference to the block document, ``{"$ref": {"block_document_id":
    ...}}``, which the run form shows as the picked block and every run loads. Without it they
    stay unset and the runs read the environment.

    Raises:
        SystemExit: a block of ``blocks`` does not exist in the Prefect API.
    """
    parameters: dict[str, Any] = {"run_date": None, "refresh": False}
    if blocks is None:
        return parameters
    try:
        for parameter, cls in BLOCK_PARAMETERS.items():
            parameters[parameter] = load_block(cls, saved_name(blocks, cls))
    except ConfigError as exc:
        raise SystemExit(f"--blocks {blocks!r}: {exc}") from None
    return parameters


def deployment_options(blocks: str | None = None) -> dict[str, Any]:
    """Keyword arguments common to ``flow.to_deployment`` and ``flow.deploy``."""
    return {
        "schedules": [hourly_schedule()],
        "concurrency_limit": concurrency_limit(),
        "parameters": default_parameters(blocks),
        "tags": list(TAGS),
        "description": (
            "Daily Sales ETL, hourly. An empty run_date means: the day of the scheduled start "
            "(UTC); the 00:00 run closes the previous day."
        ),
    }


def deploy_to_pool(
    name: str, pool: str, image: str, job_variables: dict[str, Any], blocks: str | None
) -> None:
    """Create or update deployment ``name`` on a work pool (the image is built elsewhere)."""
    deployment_id = daily_sales.deploy(
        name,
        work_pool_name=pool,
        image=image,
        build=False,
        push=False,
        job_variables=job_variables,
        print_next_steps=False,
        **deployment_options(blocks),
    )
    print(f"deployment '{daily_sales.name}/{name}': {deployment_id}")


def runtime_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Non-secret pipeline settings passed to a worker-launched run (from this environment).

    Only names listed in ``RUNTIME_ENV_VARS`` are copied, so a key or password set in the
    deploying shell never lands in the deployment's job variables.
    """
    env = {"PREFECT_LOGGING_LEVEL": "INFO"}
    env.update({name: os.environ[name] for name in RUNTIME_ENV_VARS if os.environ.get(name)})
    env.update(extra or {})
    return env


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    """``NAME=value`` command-line pairs as a dict (for non-secret settings only)."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=value, got {pair!r}")
        env[name] = value
    return env


def add_common_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    """The options every deployment script takes."""
    parser.add_argument(
        "--name",
        default=default_name,
        help=f"deployment name (default: {default_name})",
    )
    parser.add_argument(
        "--blocks",
        metavar="NAME",
        default=os.environ.get("ETL_BLOCKS") or None,
        help=(
            "prefix of the saved blocks <NAME>-warehouse, <NAME>-data-lake and <NAME>-sales-api "
            "(python -m blocks.setup --prefix NAME) the runs load: the flow's *_block "
            "parameters reference them (default: $ETL_BLOCKS; unset: the run's environment)"
        ),
    )


def add_pool_arguments(
    parser: argparse.ArgumentParser,
    default_name: str,
    default_pool: str,
    default_image: str,
    image_help: str,
) -> None:
    """The options of a work-pool script (``docker.py``, ``kubernetes.py``): the common ones,
    the pool, the image and its pull policy, and extra non-secret environment variables."""
    add_common_arguments(parser, default_name)
    parser.add_argument("--pool", default=default_pool, help=f"work pool (default: {default_pool})")
    parser.add_argument("--image", default=default_image, help=image_help)
    parser.add_argument(
        "--image-pull-policy", default="IfNotPresent", choices=["IfNotPresent", "Always", "Never"]
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra non-secret environment variable for the runs (repeatable)",
    )


def deploy_on_pool(
    args: argparse.Namespace,
    pool_type: str,
    base_job_template: dict[str, Any],
    job_variables: dict[str, Any],
) -> int:
    """A work-pool script's ``main``: create (or update) the pool, then the deployment on it."""
    enter_project_root()
    with unreachable_api_in_one_line():
        pool = ensure_work_pool(args.pool, pool_type, base_job_template)
        print(f"work pool {args.pool!r} ({pool_type}): {pool}")
        deploy_to_pool(args.name, args.pool, args.image, job_variables, args.blocks)
    return 0


def enter_project_root() -> None:
    """Run from the project root so the recorded entrypoint is ``flows/daily_sales.py``."""
    os.chdir(PROJECT_ROOT)
