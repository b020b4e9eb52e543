"""Create the Docker work pool if missing and deploy the flow to it.

    python -m deployments.docker --image daily-sales-etl:0.1.0 --env-file /srv/etl/etl.env

The pool (type ``docker``, default ``daily-sales-docker``) uses prefect-docker's stock base job
template. The deployment (``Daily Sales ETL/hourly-docker``) sets the old guide's
``DockerContainer`` fields as job variables: ``image`` (built from ./Dockerfile, not built or
pushed here), ``image_pull_policy``, ``env`` (non-secret settings only) and ``volumes``: a named
volume for the local lake and Prefect's results, and, with ``--env-file``, the host's settings
file mounted read-only as ``.env`` in the image's working directory, where the pipeline's
settings reader finds it. Secrets stay in that file (or in blocks), never in job variables.

A worker (``prefect worker start --pool daily-sales-docker`` on a host with Docker) runs the
containers. Running the script again changes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prefect_docker.worker import DockerWorker

from deployments.common import (
    add_common_arguments,
    deploy_to_pool,
    enter_project_root,
    parse_env_pairs,
    runtime_env,
)
from deployments.pools import ensure_work_pool

POOL_TYPE = "docker"
DEFAULT_POOL = "daily-sales-docker"
DEFAULT_NAME = "hourly-docker"
DEFAULT_IMAGE = "daily-sales-etl:0.1.0"
# Must match WORKDIR in ./Dockerfile: the entrypoint flows/daily_sales.py is relative to it.
IMAGE_WORKDIR = "/opt/prefect/daily-sales-etl"
DATA_VOLUME = "daily-sales-data"
DATA_MOUNT = "/data"
# docker-py create() options the stock template has no variable for: the same posture as the
# Kubernetes pods (read-only root filesystem, writable /tmp only, no capabilities).
CONTAINER_HARDENING: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g"},  # noqa: S108 - the container's own tmpfs
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


def base_job_template() -> dict[str, Any]:
    """prefect-docker's own base job template (the pool needs nothing more)."""
    return DockerWorker.get_default_base_job_template()


def job_variables(
    *,
    image: str = DEFAULT_IMAGE,
    image_pull_policy: str = "IfNotPresent",
    env_file: str | None = None,
    data_volume: str = DATA_VOLUME,
    env: dict[str, str] | None = None,
    network_mode: str | None = None,
) -> dict[str, Any]:
    """The deployment's job variables for the Docker work pool (no secret values).

    The container runs as the image's uid 10001 on a read-only root filesystem with a tmpfs
    ``/tmp``, no capabilities and no privilege escalation. ``network_mode`` (e.g. ``host``)
    is for a Docker engine without a bridge, or runs that reach services on the host's loopback.
    """
    volumes = [f"{data_volume}:{DATA_MOUNT}"]
    if env_file:
        volumes.append(f"{env_file}:{IMAGE_WORKDIR}/.env:ro")
    container_env = {
        "DATA_LAKE_URL": f"{DATA_MOUNT}/lake",
        # Cached extracts must outlive the container: keep Prefect's results on the volume.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": f"{DATA_MOUNT}/prefect-results",
    }
    container_env.update(runtime_env(env))
    variables: dict[str, Any] = {
        "image": image,
        "image_pull_policy": image_pull_policy,
        "env": container_env,
        "volumes": volumes,
        "auto_remove": True,
        "labels": {"app": "daily-sales-etl"},
        "container_create_kwargs": CONTAINER_HARDENING,
    }
    if network_mode:
        variables["network_mode"] = network_mode
    return variables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.docker",
        description=(
            "Create the Docker work pool if missing, and create or update the hourly Docker "
            "deployment of the Daily Sales ETL on the Prefect API (PREFECT_API_URL). No image "
            "is built or pushed and no Docker engine is needed here."
        ),
    )
    add_common_arguments(parser, DEFAULT_NAME)
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default: {DEFAULT_POOL})")
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"image built from ./Dockerfile ({DEFAULT_IMAGE})"
    )
    parser.add_argument(
        "--image-pull-policy",
        default="IfNotPresent",
        choices=["IfNotPresent", "Always", "Never"],
    )
    parser.add_argument(
        "--env-file",
        default=None,
        help="absolute path, on the worker's host, of a settings file (WAREHOUSE_URL=..., "
        "SALES_API_KEY=...) mounted read-only as the container's .env",
    )
    parser.add_argument(
        "--data-volume",
        default=DATA_VOLUME,
        help=f"Docker volume mounted at {DATA_MOUNT} (default: {DATA_VOLUME})",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra non-secret environment variable for the runs (repeatable)",
    )
    parser.add_argument(
        "--network-mode",
        default=None,
        help="Docker network mode of the containers, e.g. host (default: the engine's default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enter_project_root()
    pool = ensure_work_pool(args.pool, POOL_TYPE, base_job_template())
    print(f"work pool {args.pool!r} ({POOL_TYPE}): {pool}")
    variables = job_variables(
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        env_file=args.env_file,
        data_volume=args.data_volume,
        env=parse_env_pairs(args.env),
        network_mode=args.network_mode,
    )
    deploy_to_pool(args.name, args.pool, args.image, variables, args.blocks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
