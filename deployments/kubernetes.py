"""Create the Kubernetes work pool with the project's base job template and deploy to it.

    python -m deployments.kubernetes --image registry.example.com/daily-sales-etl:0.1.0

The pool (type ``kubernetes``, default ``daily-sales-k8s``) gets ``k8s/base-job-template.json``:
the stock prefect-kubernetes template plus non-root, read-only-root-filesystem pods, a writable
``/tmp``, no service-account token, an ``activeDeadlineSeconds`` on every Job, and ``envFrom``
the settings Secret, which is where the run's credentials come from. Which Secret (``--secret``)
and whether pods share the node's network (``--host-network``, CI only) are the pool's, fixed in
its base job template by whoever manages the pool: they are not job variables, so editing a
deployment cannot point its pods at another Secret of the namespace (``prefect-api`` say) or
take them out of the NetworkPolicies (docs/kubernetes-security.md). The deployment
(``Daily Sales ETL/hourly-kubernetes``) sets the old guide's ``KubernetesJob`` fields as job
variables: namespace, image, image_pull_policy, service_account_name, labels, annotations, env,
CPU/memory requests and limits, the Job's deadline, and a Job name that carries the flow run's
name.

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
    add_pool_arguments,
    deploy_on_pool,
    parse_env_pairs,
    runtime_env,
)

POOL_TYPE = "kubernetes"
DEFAULT_POOL = "daily-sales-k8s"
DEFAULT_NAME = "hourly-kubernetes"
DEFAULT_IMAGE = "ghcr.io/daily-sales-etl/daily-sales-etl:0.1.0"
DEFAULT_SECRET = "daily-sales-etl"  # noqa: S105 - the Secret's name, not a value
DEFAULT_ACTIVE_DEADLINE_SECONDS = 3600
BASE_JOB_TEMPLATE = PROJECT_ROOT / "k8s" / "base-job-template.json"
# The prepared Job's generateName becomes "daily-sales-<flow run name>-".
JOB_NAME = "daily-sales-{{ ctx.flow_run.name }}"


def load_base_job_template(path: Path = BASE_JOB_TEMPLATE) -> dict[str, Any]:
    """The work pool's base job template, as kept in ``k8s/``."""
    template: dict[str, Any] = json.loads(path.read_text())
    return template


def pool_base_job_template(
    *, secret_name: str = DEFAULT_SECRET, host_network: bool = False, path: Path = BASE_JOB_TEMPLATE
) -> dict[str, Any]:
    """The pool's base job template with the pool owner's choices written into the Job.

    ``secret_name`` is the one Secret a flow-run pod gets as its environment; ``host_network``
    is for clusters without a pod network only (the CI's one-node cluster), where the pod
    reaches PostgreSQL and the Prefect API on the node's loopback, outside any NetworkPolicy.
    """
    template = load_base_job_template(path)
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    container["envFrom"] = [{"secretRef": {"name": secret_name}}]
    pod["hostNetwork"] = host_network
    return template


def job_variables(
    *,
    image: str = DEFAULT_IMAGE,
    image_pull_policy: str = "IfNotPresent",
    namespace: str = "daily-sales-etl",
    service_account_name: str = "daily-sales-etl-job",
    active_deadline_seconds: int = DEFAULT_ACTIVE_DEADLINE_SECONDS,
    cpu_request: str = "500m",
    cpu_limit: str = "1000m",
    memory_request: str = "512Mi",
    memory_limit: str = "2Gi",
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The deployment's job variables for the Kubernetes work pool (no secret values).

    ``active_deadline_seconds`` bounds a run's Job: Kubernetes stops its pod after that long.
    """
    variables: dict[str, Any] = {
        "name": JOB_NAME,
        "namespace": namespace,
        "image": image,
        "image_pull_policy": image_pull_policy,
        "service_account_name": service_account_name,
        "active_deadline_seconds": active_deadline_seconds,
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
    add_pool_arguments(
        parser, DEFAULT_NAME, DEFAULT_POOL, DEFAULT_IMAGE, "image built from ./Dockerfile"
    )
    parser.add_argument("--namespace", default="daily-sales-etl")
    parser.add_argument("--service-account", default="daily-sales-etl-job")
    parser.add_argument(
        "--secret",
        default=DEFAULT_SECRET,
        help="the pool's settings Secret in the namespace (WAREHOUSE_URL, SALES_API_KEY, ...), "
        "written into the pool's base job template, not a job variable "
        f"(default: {DEFAULT_SECRET})",
    )
    parser.add_argument(
        "--active-deadline-seconds",
        type=int,
        default=DEFAULT_ACTIVE_DEADLINE_SECONDS,
        help="seconds a run's Job may run before Kubernetes stops it (60..86400, default: "
        f"{DEFAULT_ACTIVE_DEADLINE_SECONDS})",
    )
    parser.add_argument("--cpu-request", default="500m")
    parser.add_argument("--cpu-limit", default="1000m")
    parser.add_argument("--memory-request", default="512Mi")
    parser.add_argument("--memory-limit", default="2Gi")
    parser.add_argument(
        "--host-network",
        action="store_true",
        help="the pool's flow-run pods share the node's network namespace, outside any "
        "NetworkPolicy (only for a cluster without a pod network whose runs reach services on "
        "the node's loopback, e.g. CI)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variables = job_variables(
        image=args.image,
        image_pull_policy=args.image_pull_policy,
        namespace=args.namespace,
        service_account_name=args.service_account,
        active_deadline_seconds=args.active_deadline_seconds,
        cpu_request=args.cpu_request,
        cpu_limit=args.cpu_limit,
        memory_request=args.memory_request,
        memory_limit=args.memory_limit,
        env=parse_env_pairs(args.env),
    )
    template = pool_base_job_template(secret_name=args.secret, host_network=args.host_network)
    return deploy_on_pool(args, POOL_TYPE, template, variables)


if __name__ == "__main__":
    raise SystemExit(main())
