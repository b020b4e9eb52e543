"""The Kubernetes work pool for real: manifests, RBAC, the in-cluster worker, Jobs, cancel.

``k8s/`` is applied to a real API server (``kubectl apply -k`` through a test overlay); the
worker Deployment of ``k8s/worker.yaml`` runs the project image with the ``prefect-worker``
service account's own token, so ``k8s/rbac.yaml`` is what allows (or forbids) what it does. A run
of ``Daily Sales ETL/hourly-kubernetes`` created through the API becomes a Job named after the
run whose pod gets its settings from the Secret ``daily-sales-etl`` through ``envFrom``.

The overlay adapts the worker to a cluster without a pod network (the CI's one node):
``hostNetwork``, the API server's loopback address instead of the ``kubernetes`` Service, and a
free port for its health endpoint; and it narrows the flow-run NetworkPolicy's destinations to
this machine's services, as docs/kubernetes-security.md tells an operator to. The flow-run pods
get ``hostNetwork`` from the pool's base job template (``deployments.kubernetes
--host-network``). Pods on the node's network are outside any NetworkPolicy, so here the
policies are checked as objects of the real API server whose selectors pick the worker's and
the Job's pods; enforcement needs a policy-enforcing network plugin (see the docs). With a
cluster whose pods cannot reach this machine's loopback, set ``DAILY_SALES_K8S_HOST_NETWORK=0``
and point ``TEST_POSTGRES_URL``/the Prefect server at addresses the pods reach.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from deployments.common import PROJECT_ROOT
from tests import postgres
from tests.utils import (
    API_KEY,
    DB_PASSWORD,
    IMAGE,
    INFRA_DAY,
    SLOW_SECONDS,
    PrefectServer,
    cancel_flow_run,
    create_flow_run,
    deploy,
    flow_run_state,
    kubectl,
    kubernetes_api_port,
    loaded_rows,
    password_database,
    summary_metrics,
    table_contents,
    wait_for,
    wait_for_final_state,
)

pytestmark = [pytest.mark.kubernetes, pytest.mark.e2e]

NAMESPACE = "daily-sales-etl"
POOL = "daily-sales-k8s"
RUN_TIMEOUT = 480
HOST_NETWORK = os.environ.get("DAILY_SALES_K8S_HOST_NETWORK", "1") != "0"
WORKER = f"system:serviceaccount:{NAMESPACE}:prefect-worker"


@dataclass(frozen=True)
class Cluster:
    server: PrefectServer
    kubeconfig: str
    s3_endpoint: str
    deployment: dict[str, Any]


def port_of(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None, url
    return port


def narrowed_flow_run_policy(prefect_api: str, warehouse: str, lake: str) -> list[dict[str, Any]]:
    """JSON patches narrowing the flow-run policy's egress rules 1-3 (Prefect API, warehouse,
    lake) to one address and port each: what an operator's overlay does with real addresses."""
    patches: list[dict[str, Any]] = []
    for index, url in enumerate((prefect_api, warehouse, lake), start=1):
        rule = {
            "to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
            "ports": [{"protocol": "TCP", "port": port_of(url)}],
        }
        patches.append({"op": "replace", "path": f"/spec/egress/{index}", "value": rule})
    return patches


def worker_overlay(directory: Path, kubeconfig: str, policy_patches: list[dict[str, Any]]) -> Path:
    """A kustomization over ``k8s/`` adapting the worker to a cluster without pod network."""
    overlay = directory / "overlay"
    overlay.mkdir()
    name, _, tag = IMAGE.rpartition(":")
    patches: list[dict[str, Any]] = []
    env = [{"name": "PREFECT_WORKER_QUERY_SECONDS", "value": "2"}]
    if HOST_NETWORK:
        api_host, api_port = kubernetes_api_port(kubeconfig)
        health_port = postgres.free_port()
        env += [
            {"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
            {"name": "PREFECT_WORKER_WEBSERVER_PORT", "value": str(health_port)},
        ]
        patches.append({"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True})
        patches.append(
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/ports/0/containerPort",
                "value": health_port,
            }
        )
    for item in env:
        patches.append(
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": item}
        )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(PROJECT_ROOT / "k8s", overlay)],
        "images": [{"name": "daily-sales-etl", "newName": name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "prefect-worker"},
                "patch": json.dumps(patches),
            },
            {
                "target": {"kind": "NetworkPolicy", "name": "flow-run"},
                "patch": json.dumps(policy_patches),
            },
        ],
    }
    (overlay / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
    return overlay


def create_secret(kubeconfig: str, name: str, values: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
    kubectl("apply", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(manifest))


def set_run_settings(cluster_: Cluster, warehouse_url: str, sales_api_url: str = "") -> str:
    """The Secret ``daily-sales-etl`` for the next runs: a fresh S3 lake and ``warehouse_url``.

    Without ``sales_api_url`` the runs use the flow's embedded demo API.
    """
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3", endpoint_url=cluster_.s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.create_bucket(Bucket=bucket)
    s3.close()
    create_secret(
        cluster_.kubeconfig,
        "daily-sales-etl",
        {
            "WAREHOUSE_URL": warehouse_url,
            "SALES_API_KEY": API_KEY,
            "DATA_LAKE_URL": f"s3://{bucket}/sales-lake",
            "AWS_ENDPOINT_URL": cluster_.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **({"SALES_API_URL": sales_api_url} if sales_api_url else {}),
        },
    )
    return bucket


@pytest.fixture(scope="module")
def k8s(
    cluster: str,
    prefect_server: PrefectServer,
    s3_endpoint: str,
    pg_admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """``k8s/`` applied, the pool and deployment created, the in-cluster worker polling."""
    directory = tmp_path_factory.mktemp("k8s")
    kubectl("apply", "-f", str(PROJECT_ROOT / "k8s" / "namespace.yaml"), kubeconfig=cluster)
    try:
        create_secret(cluster, "prefect-api", {"url": prefect_server.api_url})
        args = ["--image", IMAGE, *(["--host-network"] if HOST_NETWORK else [])]
        deployment = deploy(prefect_server, "kubernetes", *args)
        policy = narrowed_flow_run_policy(prefect_server.api_url, pg_admin_url, s3_endpoint)
        overlay = worker_overlay(directory, cluster, policy)
        kubectl("apply", "-k", str(overlay), kubeconfig=cluster)
        kubectl(
            "-n", NAMESPACE, "rollout", "status", "deployment/prefect-worker", "--timeout=180s",
            kubeconfig=cluster,
        )  # fmt: skip
        yield Cluster(prefect_server, cluster, s3_endpoint, deployment)
    finally:
        kubectl(
            "delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s",
            kubeconfig=cluster, check=False,
        )  # fmt: skip


def worker_logs(cluster_: Cluster) -> str:
    return kubectl(
        "-n", NAMESPACE, "logs", "deployment/prefect-worker", "--tail=60",
        kubeconfig=cluster_.kubeconfig, check=False,
    )  # fmt: skip


def jobs_of(cluster_: Cluster, flow_run_id: str) -> list[dict[str, Any]]:
    output = kubectl(
        "-n", NAMESPACE, "get", "jobs", "-l", f"prefect.io/flow-run-id={flow_run_id}",
        "-o", "json", kubeconfig=cluster_.kubeconfig,
    )  # fmt: skip
    items: list[dict[str, Any]] = json.loads(output)["items"]
    return items


def pods_of(cluster_: Cluster, job_name: str) -> list[dict[str, Any]]:
    output = kubectl(
        "-n", NAMESPACE, "get", "pods", "-l", f"job-name={job_name}", "-o", "json",
        kubeconfig=cluster_.kubeconfig,
    )  # fmt: skip
    items: list[dict[str, Any]] = json.loads(output)["items"]
    return items


@dataclass(frozen=True)
class KubernetesRun:
    run: dict[str, Any]
    job: dict[str, Any]
    pod: dict[str, Any]
    warehouse_url: str
    bucket: str


def run_day(cluster_: Cluster) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A run created through the API, its Job and pod (seen while it ran), once it ended."""
    created = create_flow_run(cluster_.server, cluster_.deployment["id"], run_date=INFRA_DAY)

    def job() -> dict[str, Any] | None:
        jobs = jobs_of(cluster_, created["id"])
        return jobs[0] if jobs else None

    job_ = wait_for(job, RUN_TIMEOUT, "the run's Job", interval=1)
    name = job_["metadata"]["name"]
    pod = wait_for(lambda: pods_of(cluster_, name), 120, f"a pod of Job {name}", interval=1)[0]
    run = wait_for_final_state(cluster_.server, created["id"], timeout=RUN_TIMEOUT)
    return run, job_, pod


@pytest.fixture(scope="module")
def clean_run(k8s: Cluster, pg_admin_url: str) -> Iterator[KubernetesRun]:
    with password_database(pg_admin_url) as warehouse_url:
        bucket = set_run_settings(k8s, warehouse_url)
        run, job, pod = run_day(k8s)
        yield KubernetesRun(run, job, pod, warehouse_url, bucket)


def test_the_worker_has_only_its_roles_permissions(k8s: Cluster) -> None:
    def can(verb: str, resource: str, namespace: str = NAMESPACE) -> bool:
        answer = kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, f"--as={WORKER}",
            kubeconfig=k8s.kubeconfig, check=False,
        )  # fmt: skip
        return answer.strip() == "yes"

    assert can("create", "jobs.batch") and can("delete", "jobs.batch")
    assert can("get", "pods/log") and can("watch", "pods")
    assert not can("get", "secrets")
    assert not can("create", "pods")
    assert not can("list", "jobs.batch", namespace="default")
    assert not can("list", "nodes")
    # The worker pod authenticates as that service account, with its own token.
    output = kubectl(
        "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=prefect-worker",
        "-o", "json", kubeconfig=k8s.kubeconfig,
    )  # fmt: skip
    [pod] = json.loads(output)["items"]
    assert pod["spec"]["serviceAccountName"] == "prefect-worker"
    assert pod["status"]["phase"] == "Running"


def test_a_run_through_the_kubernetes_worker_loads_postgres(
    clean_run: KubernetesRun, k8s: Cluster
) -> None:
    run = clean_run.run
    assert run["state"]["type"] == "COMPLETED", (run["state"], worker_logs(k8s))
    metrics = summary_metrics(k8s.server, run["id"])
    assert metrics["description"] == f"Daily Sales ETL {INFRA_DAY}: loaded"
    assert metrics["inserted"] > 0
    rows = loaded_rows(clean_run.warehouse_url, run["id"])
    assert rows == [(date.fromisoformat(INFRA_DAY), metrics["inserted"] + metrics["updated"])]
    # The lake is the S3 bucket of the Secret.
    s3 = boto3.client(
        "s3", endpoint_url=k8s.s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=clean_run.bucket)["Contents"]]
    assert any(k.startswith(f"sales-lake/raw/sales/date={INFRA_DAY}/") for k in keys), keys
    # Prefect's results (the cached extract) beside the lake, not on the pod's disk.
    assert any(k.startswith("sales-lake/prefect-results/") for k in keys), keys


def test_the_job_is_named_after_the_run_and_reads_the_secret(
    clean_run: KubernetesRun, k8s: Cluster
) -> None:
    job, pod = clean_run.job, clean_run.pod
    assert job["metadata"]["name"].startswith(f"daily-sales-{clean_run.run['name']}-")
    assert job["spec"]["completions"] == 1 and job["spec"]["parallelism"] == 1
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["image"] == IMAGE
    assert container["envFrom"] == [{"secretRef": {"name": "daily-sales-etl"}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["serviceAccountName"] == "daily-sales-etl-job"
    assert spec.get("hostNetwork", False) is HOST_NETWORK
    env_names = {item["name"] for item in container["env"]}
    assert not env_names & {"WAREHOUSE_URL", "SALES_API_KEY", "AWS_SECRET_ACCESS_KEY"}
    for secret in (DB_PASSWORD, API_KEY):
        assert secret not in json.dumps(job)
        assert secret not in json.dumps(k8s.deployment["job_variables"])


def job_stopped(cluster_: Cluster, flow_run_id: str, job_name: str) -> bool:
    """The Job is deleted, or finished with no pod left running."""
    jobs = jobs_of(cluster_, flow_run_id)
    if jobs and jobs[0]["status"].get("active"):
        return False
    return all(
        pod["status"]["phase"] in {"Succeeded", "Failed"} for pod in pods_of(cluster_, job_name)
    )


def test_cancelling_a_run_stops_its_job_and_a_rerun_matches_a_clean_run(
    clean_run: KubernetesRun, k8s: Cluster, pg_admin_url: str, slow_source: Any
) -> None:
    with password_database(pg_admin_url) as warehouse_url:
        set_run_settings(k8s, warehouse_url, sales_api_url=slow_source.url)
        slow_source.set_faults(slow_every=1, slow_seconds=SLOW_SECONDS)
        try:
            created = create_flow_run(k8s.server, k8s.deployment["id"], run_date=INFRA_DAY)

            def running_job() -> dict[str, Any] | None:
                jobs = jobs_of(k8s, created["id"])
                running = flow_run_state(k8s.server, created["id"]) == "RUNNING"
                return jobs[0] if jobs and running else None

            job = wait_for(running_job, RUN_TIMEOUT, "a RUNNING run with its Job", interval=1)
            name = job["metadata"]["name"]
            cancelled_at = time.monotonic()
            cancel_flow_run(k8s.server, created["id"])
            run = wait_for_final_state(k8s.server, created["id"], timeout=180)
            assert run["state"]["type"] == "CANCELLED", (run["state"], worker_logs(k8s))
            # Stopped, not left to finish its minute-long requests.
            wait_for(
                lambda: job_stopped(k8s, created["id"], name), 60, f"Job {name} stopped", interval=1
            )
            assert time.monotonic() - cancelled_at < SLOW_SECONDS - 10
        finally:
            slow_source.set_faults(slow_every=0)

        rerun, _, _ = run_day(k8s)
        assert rerun["state"]["type"] == "COMPLETED", (rerun["state"], worker_logs(k8s))
        assert table_contents(warehouse_url) == table_contents(clean_run.warehouse_url)


def pod_names(cluster_: Cluster, selector: str) -> set[str]:
    """The pods of the namespace the API server lists for a label selector ("" = all)."""
    output = kubectl(
        "-n", NAMESPACE, "get", "pods", *(["-l", selector] if selector else []), "-o", "json",
        kubeconfig=cluster_.kubeconfig,
    )  # fmt: skip
    return {item["metadata"]["name"] for item in json.loads(output)["items"]}


def selected_pods(cluster_: Cluster, policy: dict[str, Any]) -> set[str]:
    """The pods of the namespace the API server lists for the policy's podSelector."""
    assert set(policy["spec"]["podSelector"]) <= {"matchLabels"}
    match = policy["spec"]["podSelector"].get("matchLabels", {})
    return pod_names(cluster_, ",".join(f"{k}={v}" for k, v in sorted(match.items())))


def test_the_network_policies_select_the_worker_and_the_job_pods(
    clean_run: KubernetesRun, k8s: Cluster
) -> None:
    """The policies, accepted by the real API server, pick exactly the pods they guard; the run
    under them completed. (Not enforced here: the pods are on the node's network.)"""
    assert clean_run.run["state"]["type"] == "COMPLETED", worker_logs(k8s)
    output = kubectl(
        "-n", NAMESPACE, "get", "networkpolicies", "-o", "json", kubeconfig=k8s.kubeconfig
    )
    found = {item["metadata"]["name"]: item for item in json.loads(output)["items"]}
    assert sorted(found) == ["default-deny", "flow-run", "prefect-worker"]
    worker_pods = pod_names(k8s, "app.kubernetes.io/name=prefect-worker")
    job_pod = clean_run.pod["metadata"]["name"]
    assert len(worker_pods) == 1
    assert selected_pods(k8s, found["prefect-worker"]) == worker_pods
    assert job_pod in selected_pods(k8s, found["flow-run"])
    assert not worker_pods & selected_pods(k8s, found["flow-run"])
    everything = selected_pods(k8s, found["default-deny"])
    assert worker_pods | {job_pod} <= everything
    # The overlay's narrowing reached the server: one address and port per destination.
    egress = found["flow-run"]["spec"]["egress"]
    assert [rule["to"][0]["ipBlock"]["cidr"] for rule in egress[1:4]] == ["127.0.0.1/32"] * 3
    assert egress[1]["ports"] == [{"protocol": "TCP", "port": port_of(k8s.server.api_url)}]
    assert egress[3]["ports"] == [{"protocol": "TCP", "port": port_of(k8s.s3_endpoint)}]
    assert found["flow-run"]["spec"].get("ingress", []) == []
