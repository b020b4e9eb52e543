"""Create the Kubernetes work pool with the project's base job template and deploy to it.

    python -m deployments.kubernetes --image registry.example.com/daily-sales-etl:0.1.0

The pool (type ``kubernetes``, default ``daily-sales-k8s``) gets ``k8s/base-job-template.json``:
the stock prefect-kubernetes template plus non-root, read-only-root-filesystem pods, a writable
``/tmp``, no service-account token, and ``envFrom`` the Secret named by the ``secret_name``
variable, which is where the run's credentials come from. The deployment
(``Daily Sales ETL/hourly-kubernetes``) sets the old guide's ``KubernetesJob`` fields as job
variables: namespace, image, image_pull_policy, service_account_name, labels, annotations, env,
CPU/memory requests and limits, and a Job name that carries the flow run's name.

A worker in the cluster (``k8s/worker.yaml``) picks the runs up. Running the script again
changes nothing; a changed template file updates the pool.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deployments.common import (
    PROJECT_ROOT,
    add_common_arguments,
    deploy_to_pool,
    enter_project_root,
    parse_env_pairs,
    runtime_env,
)
from deployments.pools import ensure_work_pool

POOL_TYPE = "kubernetes"
DEFAULT_POOL = "daily-sales-k8s"
DEFAULT_NAME = "hourly-kubernetes"
DEFAULT_IMAGE = "ghcr.io/daily-sales-etl/daily-sales-etl:0.1.0"
BASE_JOB_TEMPLATE = PROJECT_ROOT / "k8s" / "base-job-template.json"
# The prepared Job's generateName becomes "daily-sales-<flow run name>-".
JOB_NAME = "daily-sales-{{ ctx.flow_run.name }}"


def load_base_job_template(path: Path = BASE_JOB_TEMPLATE) -> dict[str, Any]:
    """The work pool's base job template, as kept in ``k8s/``."""
    template: dict[str, Any] = json.loads(path.read_text())
    return template


def job_variables(
    *,
    image: str = DEFAULT_IMAGE,
    image_pull_policy: str = "IfNotPresent",
    namespace: str = "daily-sales-etl",
    service_account_name: str = "daily-sales-etl-job",
    secret_name: str = "daily-sales-etl",  # noqa: S107 - the Secret's name, not a value
    cpu_request: str = "500m",
    cpu_limit: str = "1000m",
    memory_request: str = "512Mi",
    memory_limit: str = "2Gi",
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    """The deployment's job variables for the Kubernetes work pool (no secret values).

    ``host_network`` is for clusters without a pod network only (the CI's one-node cluster),
    where the flow-run pod reaches PostgreSQL and the Prefect API on the node's loopback.
    """
    variables: dict[str, Any] = {
        "name": JOB_NAME,
        "namespace": namespace,
        "image": image,
        "image_pull_policy": image_pull_policy,
        "service_account_name": service_account_name,
        "secret_name": secret_name,
        "labels": {
            "app.kubernetes.io/part-of": "daily-sales-etl",
            "app.kubernetes.io/component": "flow-run",
            **(labels or {}),
        },
        "annotations": {
            "daily-sales-etl.dev/owner": "data-platform",
            "daily-sales-etl.dev/runbook": "README.md#deployments",
            **(annotations or {}),
        },
        "env": runtime_env(env),
        "cpu_request": cpu_request,
        "cpu_limit": cpu_limit,
        "memory_request": memory_request,
        "memory_limit": memory_limit,
    }
    if host_network:
        variables["host_network"] = True
    return variables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.kubernetes",
        description=(
            "Create the Kubernetes work pool (with k8s/base-job-template.json) if missing, and "
            "create or update the hourly Kubernetes deployment of the Daily Sales ETL on the "
            "Prefect API (PREFECT_API_URL). No cluster is contacted: a worker in the cluster "
            "runs the flow runs."
        ),
    )
    add_common_arguments(parser, DEFAULT_NAME)
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default: {DEFAULT_POOL})")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image built from ./Dockerfile")
    parser.add_argument(
        "--image-pull-policy", default="IfNotPresent", choices=["IfNotPresent", "Always", "Never"]
    )
    parser.add_argument("--namespace", default="daily-sales-etl")
    parser.add_argument("--service-account", default="daily-sales-etl-job")
    parser.add_argument(
        "--secret",
        default="daily-sales-etl",
        help="Secret in the namespace holding WAREHOUSE_URL, SALES_API_KEY, ... (default: "
        "daily-sales-etl)",
    )
    parser.add_argument("--cpu-request", default="500m")
    parser.add_argument("--cpu-limit", default="1000m")
    parser.add_argument("--memory-request", default="512Mi")
    parser.add_argument("--memory-limit", default="2Gi")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra non-secret environment variable for the runs (repeatable)",
    )
    parser.add_argument(
        "--host-network",
        action="store_true",
        help="run the flow-run pods in the node's network namespace (only for a cluster "
        "without a pod network whose runs reach services on the node's loopback, e.g. CI)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enter_project_root()
    pool = ensure_work_pool(args.pool, POOL_TYPE, load_base_job_template())
    print(f"work pool {args.pool!r} ({POOL_TYPE}): {pool}")
    variables = job_variables(
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        namespace=args.namespace,
        service_account_name=args.service_account,
        secret_name=args.secret,
        cpu_request=args.cpu_request,
        cpu_limit=args.cpu_limit,
        memory_request=args.memory_request,
        memory_limit=args.memory_limit,
        env=parse_env_pairs(args.env),
        host_network=args.host_network,
    )
    deploy_to_pool(args.name, args.pool, args.image, variables, args.blocks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
