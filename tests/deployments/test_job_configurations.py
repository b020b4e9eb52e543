"""The Docker and Kubernetes deployments, created by their scripts on the real server, and the
job configurations their work pools will produce, rendered offline by prefect-docker's and
prefect-kubernetes' own code (no Docker engine or cluster here).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.base import BaseJobConfiguration
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from deployments import docker, kubernetes
from deployments.common import PROJECT_ROOT
from tests.utils import KUBERNETES_VERSION, PrefectServer, deployment_by_name, run_env

pytestmark = pytest.mark.e2e

# Recognisable secrets in the deploying shell: none may reach a deployment or a job.
SECRETS = {
    "WAREHOUSE_URL": "postgresql://etl:pw-SECRET-deploy-4b1c@db.internal:5432/sales",
    "SALES_API_KEY": "sk-live-SECRET-deploy-91ad",
    "SALES_API_URL": "https://sales.internal/api",
}
ENV_FILE = "/srv/daily-sales-etl/etl.env"


def deploy_with_secrets(server: PrefectServer, module: str, *args: str) -> str:
    env = run_env(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(server.home / f"client-{module}"),
        DATA_LAKE_URL="s3://sales-lake/daily",
        **SECRETS,
    )
    done = subprocess.run(
        [sys.executable, "-m", f"deployments.{module}", *args],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def pool_line(output: str, pool: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(f"work pool {pool!r}")]
    return line


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> dict[str, dict[str, Any]]:
    """Both scripts run twice: the second run must find everything as the first left it."""
    first = {
        "docker": deploy_with_secrets(prefect_server, "docker", "--env-file", ENV_FILE),
        "kubernetes": deploy_with_secrets(prefect_server, "kubernetes"),
    }
    assert pool_line(first["docker"], "daily-sales-docker").endswith(": created")
    assert pool_line(first["kubernetes"], "daily-sales-k8s").endswith(": created")
    before = {
        "docker": deployment_by_name(prefect_server, "hourly-docker"),
        "kubernetes": deployment_by_name(prefect_server, "hourly-kubernetes"),
    }
    second = {
        "docker": deploy_with_secrets(prefect_server, "docker", "--env-file", ENV_FILE),
        "kubernetes": deploy_with_secrets(prefect_server, "kubernetes"),
    }
    assert pool_line(second["docker"], "daily-sales-docker").endswith(": unchanged")
    assert pool_line(second["kubernetes"], "daily-sales-k8s").endswith(": unchanged")
    after = {
        "docker": deployment_by_name(prefect_server, "hourly-docker"),
        "kubernetes": deployment_by_name(prefect_server, "hourly-kubernetes"),
    }
    stable = ("id", "job_variables", "parameters", "tags", "entrypoint", "work_pool_name")
    result: dict[str, dict[str, Any]] = {}
    for kind, now in after.items():
        then = before[kind]
        assert then is not None and now is not None
        assert {k: now[k] for k in stable} == {k: then[k] for k in stable}
        assert [s["schedule"] for s in now["schedules"]] == [
            s["schedule"] for s in then["schedules"]
        ]
        result[kind] = now
    return result


async def resolve(
    server: PrefectServer,
    deployment: dict[str, Any],
    configuration: type[BaseJobConfiguration],
    job_variables: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Create a flow run of ``deployment`` (with the run's own ``job_variables``, as the UI's
    custom run does) and build its job configuration as a worker would."""
    async with PrefectClient(server.api_url) as client:
        flow_run = await client.create_flow_run_from_deployment(
            deployment["id"], parameters={"run_date": "2026-11-20"}, job_variables=job_variables
        )
        pool = await client.read_work_pool(deployment["work_pool_name"])
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            config = await configuration.resolve_for_flow_run(
                flow_run, client=client, work_pool=pool, worker_name="offline-render"
            )
    return config, flow_run.model_dump(mode="json")


@pytest.mark.long
def test_deployments_carry_no_secret(deployed: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(deployed)
    for value in SECRETS.values():
        assert value not in text
    for deployment in deployed.values():
        assert deployment["tags"] == ["etl"]
        assert deployment["parameters"] == {"run_date": None, "refresh": False}
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["entrypoint"] == "flows/daily_sales.py:daily_sales"
        # No pull step: the run starts in the image's WORKDIR, where the entrypoint is.
        assert not deployment["pull_steps"]
        assert deployment["path"] == "."
        [schedule] = deployment["schedules"]
        assert schedule["schedule"]["interval"] == 3600


def test_docker_job_configuration(
    prefect_server: PrefectServer, deployed: dict[str, dict[str, Any]]
) -> None:
    deployment = deployed["docker"]
    assert deployment["work_pool_name"] == "daily-sales-docker"
    config, flow_run = asyncio.run(
        resolve(prefect_server, deployment, DockerWorkerJobConfiguration)
    )
    assert isinstance(config, DockerWorkerJobConfiguration)
    assert config.image == docker.DEFAULT_IMAGE
    assert config.image_pull_policy == "IfNotPresent"
    assert config.volumes == [
        "daily-sales-data:/data",
        f"{ENV_FILE}:/opt/prefect/daily-sales-etl/.env:ro",
    ]
    assert config.command == "prefect flow-run execute"
    assert config.name == flow_run["name"]
    assert config.auto_remove is True
    env = config.env
    # The deploying shell's non-secret DATA_LAKE_URL wins over the volume default.
    assert env["DATA_LAKE_URL"] == "s3://sales-lake/daily"
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] == "/data/prefect-results"
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"
    assert env["PREFECT__FLOW_RUN_ID"] == flow_run["id"]
    assert env["PREFECT_API_URL"] == prefect_server.api_url  # the worker's own API
    for name in SECRETS:
        assert name not in env
    assert config.labels["app"] == "daily-sales-etl"
    assert config.labels["io.prefect.flow-run-id"] == flow_run["id"]
    assert config.labels["io.prefect.deployment-name"] == "hourly-docker"
    # The pool is prefect-docker's stock template.
    assert DockerWorker.get_default_base_job_template() == docker.base_job_template()


def test_docker_runs_default_to_the_lake_on_the_data_volume() -> None:
    variables = docker.job_variables(data_volume="etl-data")
    assert variables["volumes"] == ["etl-data:/data"]
    assert variables["env"] == {
        "DATA_LAKE_URL": "/data/lake",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": "/data/prefect-results",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def test_kubernetes_job_configuration(
    prefect_server: PrefectServer, deployed: dict[str, dict[str, Any]]
) -> None:
    deployment = deployed["kubernetes"]
    assert deployment["work_pool_name"] == "daily-sales-k8s"
    config, flow_run = asyncio.run(
        resolve(prefect_server, deployment, KubernetesWorkerJobConfiguration)
    )
    assert isinstance(config, KubernetesWorkerJobConfiguration)
    job = config.job_manifest
    assert config.namespace == "daily-sales-etl"
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["namespace"] == "daily-sales-etl"
    # The Job name carries the run name.
    assert meta["generateName"] == f"daily-sales-{flow_run['name']}-"
    assert meta["labels"]["app.kubernetes.io/part-of"] == "daily-sales-etl"
    assert meta["labels"]["app.kubernetes.io/component"] == "flow-run"
    assert meta["labels"]["prefect.io/flow-run-name"] == flow_run["name"]
    assert meta["labels"]["prefect.io/flow-run-id"] == flow_run["id"]
    assert meta["annotations"] == {
        "daily-sales-etl.dev/owner": "data-platform",
        "daily-sales-etl.dev/runbook": "README.md#deployments",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert spec["activeDeadlineSeconds"] == kubernetes.DEFAULT_ACTIVE_DEADLINE_SECONDS == 3600
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["annotations"] == meta["annotations"]
    assert pod["serviceAccountName"] == "daily-sales-etl-job"
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    [container] = pod["containers"]
    assert container["image"] == kubernetes.DEFAULT_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "2Gi"},
    }
    assert container["envFrom"] == [{"secretRef": {"name": "daily-sales-etl"}}]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DATA_LAKE_URL"] == "s3://sales-lake/daily"  # non-secret, from the deploying shell
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"
    assert env["PREFECT__FLOW_RUN_ID"] == flow_run["id"]
    assert env["PREFECT_API_URL"] == prefect_server.api_url
    for name in SECRETS:
        assert name not in env
    assert not any(value in json.dumps(job) for value in SECRETS.values())

    # completions/parallelism belong to the Job spec (prefect-kubernetes' stock template puts
    # them in the pod spec, where kubectl rejects them and the API server drops them).
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    assert pod["hostNetwork"] is False
    # The rendered Job is a valid batch/v1 Job, strictly: no field is unknown.
    manifest = copy.deepcopy(job)
    manifest["metadata"]["name"] = meta["generateName"] + "abcde"
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_base_job_template_extends_the_stock_one() -> None:
    ours = kubernetes.load_base_job_template()
    stock = KubernetesWorker.get_default_base_job_template()
    assert set(stock["variables"]["properties"]) < set(ours["variables"]["properties"])
    # The Secret and the pod network are the pool's, not variables a deployment may set.
    assert set(ours["variables"]["properties"]) - set(stock["variables"]["properties"]) == {
        "active_deadline_seconds",
    }
    deadline = ours["variables"]["properties"]["active_deadline_seconds"]
    assert (deadline["type"], deadline["minimum"], deadline["maximum"]) == ("integer", 60, 86400)
    assert set(ours["job_configuration"]) == set(stock["job_configuration"])
    defaults = {k: v.get("default") for k, v in ours["variables"]["properties"].items()}
    assert defaults["cpu_request"] == "500m" and defaults["cpu_limit"] == "1000m"
    assert defaults["memory_request"] == "512Mi" and defaults["memory_limit"] == "2Gi"
    assert defaults["namespace"] == "daily-sales-etl"


def test_the_image_workdir_matches_the_entrypoint() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", dockerfile, flags=re.M)
    assert workdirs[-1] == docker.IMAGE_WORKDIR
    entry_file = "flows/daily_sales.py"
    assert (PROJECT_ROOT / entry_file).is_file()
    # Every package the entrypoint imports is copied into the working directory.
    for package in ("sales_etl", "tasks", "flows", "blocks"):
        assert re.search(rf"^COPY --chown=root:root {package} \./{package}$", dockerfile, re.M)
    assert re.search(r"^USER \$\{APP_UID\}", dockerfile, re.M)
    assert Path(PROJECT_ROOT / ".dockerignore").is_file()


def test_a_run_cannot_pick_its_secret_or_the_node_network(
    prefect_server: PrefectServer, deployed: dict[str, dict[str, Any]]
) -> None:
    """Whoever may edit a deployment or start a custom run sets job variables: naming another
    Secret of the namespace (the worker's ``prefect-api``) or the node's network changes nothing.
    The deadline, the deployment owner's, is theirs to set within the pool's bounds."""
    hostile = {"secret_name": "prefect-api", "host_network": True, "active_deadline_seconds": 900}
    config, _ = asyncio.run(
        resolve(prefect_server, deployed["kubernetes"], KubernetesWorkerJobConfiguration, hostile)
    )
    spec = config.job_manifest["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "daily-sales-etl"}}]
    assert pod["hostNetwork"] is False
    assert spec["activeDeadlineSeconds"] == 900
    assert "prefect-api" not in json.dumps(config.job_manifest)


def test_a_deadline_outside_the_pools_bounds_is_refused(
    prefect_server: PrefectServer, deployed: dict[str, dict[str, Any]]
) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    with pytest.raises(PrefectHTTPStatusError, match="422"):
        asyncio.run(
            resolve(
                prefect_server,
                deployed["kubernetes"],
                KubernetesWorkerJobConfiguration,
                {"active_deadline_seconds": 10**6},
            )
        )


def test_the_pool_owner_fixes_the_secret_and_the_network() -> None:
    default = kubernetes.pool_base_job_template()
    assert default == kubernetes.load_base_job_template()
    template = kubernetes.pool_base_job_template(secret_name="etl-staging", host_network=True)
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "etl-staging"}}]
    assert pod["hostNetwork"] is True
    assert "{{ secret_name }}" not in json.dumps(template)
    variables = kubernetes.job_variables(active_deadline_seconds=1800)
    assert variables["active_deadline_seconds"] == 1800
    assert not {"secret_name", "host_network"} & set(variables)
