"""The Docker work pool for real: image, worker, container, PostgreSQL, lake volume, cancel.

A real ``prefect server start``, the real ``python -m deployments.docker`` and a real
``prefect worker start --pool daily-sales-docker`` (prefect-docker) against a Docker engine.
Runs are created through the API as the UI does. Each container runs the project image as uid
10001 on a read-only root filesystem, reaches PostgreSQL on the host's loopback (host network),
writes the lake and Prefect's results into a named volume, and gets its secrets only from the
env file mounted as ``.env``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.utils import (
    API_KEY,
    DB_PASSWORD,
    IMAGE,
    INFRA_DAY,
    SLOW_SECONDS,
    PrefectServer,
    Worker,
    cancel_flow_run,
    create_flow_run,
    deploy,
    flow_run_state,
    loaded_rows,
    log_tail,
    password_database,
    start_worker,
    stop_worker,
    summary_metrics,
    table_contents,
    wait_for,
    wait_for_final_state,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

POOL = "daily-sales-docker"
RUN_TIMEOUT = 420


@dataclass(frozen=True)
class DockerSetup:
    server: PrefectServer
    engine: Any
    worker: Worker
    home: Path


@dataclass(frozen=True)
class DockerRun:
    run: dict[str, Any]
    container: dict[str, Any]  # `docker inspect` of the run's container, taken while it ran
    deployment: dict[str, Any]
    warehouse_url: str
    volume: str


@pytest.fixture(scope="module")
def docker_setup(
    docker_engine: Any, prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerSetup]:
    """The worker of the Docker pool (created by the first deployment) on the session server."""
    home = tmp_path_factory.mktemp("docker-worker")
    home.chmod(0o755)
    # The worker creates the pool with prefect-docker's stock template, the one the
    # deployment script asks for.
    worker = start_worker(prefect_server, POOL, "docker", home)
    try:
        yield DockerSetup(prefect_server, docker_engine, worker, home)
    finally:
        stop_worker(worker)


def write_env_file(directory: Path, warehouse_url: str) -> Path:
    """The host's settings file: the only way secrets reach the container."""
    path = directory / f"etl-{uuid.uuid4().hex[:6]}.env"
    path.write_text(f"WAREHOUSE_URL={warehouse_url}\nSALES_API_KEY={API_KEY}\n")
    if os.geteuid() == 0:
        os.chown(path, 0, 10001)  # readable by the container's uid 10001, by no one else
        path.chmod(0o640)
    else:
        path.chmod(0o644)
    return path


def deploy_docker(setup: DockerSetup, warehouse_url: str, volume: str, *env: str) -> dict[str, Any]:
    """The Docker deployment for the next runs; ``env``: extra ``NAME=value`` (non-secret)."""
    env_file = write_env_file(setup.home, warehouse_url)
    extra = [arg for pair in env for arg in ("--env", pair)]
    return deploy(
        setup.server, "docker", "--image", IMAGE, "--env-file", str(env_file),
        "--data-volume", volume, "--network-mode", "host", *extra,
    )  # fmt: skip


def find_container(engine: Any, flow_run_id: str) -> Any | None:
    containers = engine.containers.list(
        all=True, filters={"label": f"io.prefect.flow-run-id={flow_run_id}"}
    )
    return containers[0] if containers else None


def run_and_watch(setup: DockerSetup, deployment: dict[str, Any]) -> tuple[dict, dict]:
    """Create a run of ``deployment``, inspect its container while it runs, wait for the end."""
    created = create_flow_run(setup.server, deployment["id"], run_date=INFRA_DAY)

    def container_attrs() -> dict[str, Any] | None:
        container = find_container(setup.engine, created["id"])
        if container is not None:
            return dict(container.attrs)
        if flow_run_state(setup.server, created["id"]) in {"COMPLETED", "FAILED", "CRASHED"}:
            pytest.fail(f"run ended before its container was seen:\n{log_tail(setup.worker.log)}")
        return None

    attrs = wait_for(container_attrs, RUN_TIMEOUT, "the run's container", interval=0.5)
    run = wait_for_final_state(setup.server, created["id"], timeout=RUN_TIMEOUT)
    return run, attrs


def remove_volume(engine: Any, volume: str) -> None:
    """Remove a run's volume once its container is gone (``auto_remove`` lags the run's end)."""

    def removed() -> bool:
        try:
            engine.volumes.get(volume).remove(force=True)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if "in use" in str(exc):
                return False
            raise
        return True

    wait_for(removed, 60, f"volume {volume} to be unused", interval=0.5)


def volume_listing(engine: Any, volume: str) -> list[str]:
    """Files on the data volume, listed by a throwaway container of the same image."""
    output = engine.containers.run(
        IMAGE,
        ["find", "/data", "-type", "f"],
        volumes={volume: {"bind": "/data", "mode": "ro"}},
        network_mode="none",
        remove=True,
    )
    return sorted(output.decode().split())


@pytest.fixture(scope="module")
def clean_run(docker_setup: DockerSetup, pg_admin_url: str) -> Iterator[DockerRun]:
    """One run of the day through the Docker worker, from a fresh database and volume."""
    volume = f"daily-sales-test-{uuid.uuid4().hex[:8]}"
    with password_database(pg_admin_url) as warehouse_url:
        deployment = deploy_docker(docker_setup, warehouse_url, volume)
        try:
            run, attrs = run_and_watch(docker_setup, deployment)
            yield DockerRun(run, attrs, deployment, warehouse_url, volume)
        finally:
            remove_volume(docker_setup.engine, volume)


def test_a_run_through_the_docker_worker_loads_postgres(
    clean_run: DockerRun, docker_setup: DockerSetup
) -> None:
    run = clean_run.run
    assert run["state"]["type"] == "COMPLETED", (run["state"], log_tail(docker_setup.worker.log))
    metrics = summary_metrics(docker_setup.server, run["id"])
    assert metrics["description"] == f"Daily Sales ETL {INFRA_DAY}: loaded"
    assert metrics["inserted"] > 0
    rows = loaded_rows(clean_run.warehouse_url, run["id"])
    assert rows == [(date.fromisoformat(INFRA_DAY), metrics["inserted"] + metrics["updated"])]


def test_the_container_runs_non_root_read_only_on_the_host_network(clean_run: DockerRun) -> None:
    attrs = clean_run.container
    assert attrs["Config"]["Image"] == IMAGE
    assert attrs["Config"]["User"] == "10001:10001"
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "host"
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    mounts = {mount["Destination"]: mount for mount in attrs["Mounts"]}
    assert mounts["/data"]["Type"] == "volume"
    assert mounts["/data"]["Name"] == clean_run.volume
    assert mounts["/opt/prefect/daily-sales-etl/.env"]["RW"] is False


def test_the_lake_and_prefect_results_are_on_the_named_volume(
    clean_run: DockerRun, docker_setup: DockerSetup
) -> None:
    files = volume_listing(docker_setup.engine, clean_run.volume)
    raw = [f for f in files if f.startswith(f"/data/lake/raw/sales/date={INFRA_DAY}/")]
    clean = [f for f in files if f.startswith(f"/data/lake/clean/sales/date={INFRA_DAY}/")]
    assert any(f.endswith("/_manifest.json") for f in raw), files
    assert any(f.endswith(".parquet") for f in raw), files
    assert any(f.endswith(".parquet") for f in clean), files
    # The extract's cached result: a rescheduled container finds it on the volume.
    assert any(f.startswith("/data/prefect-results/") for f in files), files


def test_no_secret_in_job_variables_or_docker_inspect(clean_run: DockerRun) -> None:
    job_variables = json.dumps(clean_run.deployment["job_variables"])
    inspected = json.dumps(clean_run.container)
    for secret in (DB_PASSWORD, API_KEY):
        assert secret not in job_variables
        assert secret not in inspected
    env_names = {item.split("=", 1)[0] for item in clean_run.container["Config"]["Env"]}
    assert not env_names & {"WAREHOUSE_URL", "SALES_API_KEY"}


def test_cancelling_a_run_stops_its_container_and_a_rerun_matches_a_clean_run(
    clean_run: DockerRun, docker_setup: DockerSetup, pg_admin_url: str, slow_source: Any
) -> None:
    volume = f"daily-sales-test-{uuid.uuid4().hex[:8]}"
    with password_database(pg_admin_url) as warehouse_url:
        deployment = deploy_docker(
            docker_setup, warehouse_url, volume, f"SALES_API_URL={slow_source.url}"
        )
        try:
            slow_source.set_faults(slow_every=1, slow_seconds=SLOW_SECONDS)
            created = create_flow_run(docker_setup.server, deployment["id"], run_date=INFRA_DAY)

            def running_container() -> Any | None:
                container = find_container(docker_setup.engine, created["id"])
                state = flow_run_state(docker_setup.server, created["id"])
                return container if container is not None and state == "RUNNING" else None

            container = wait_for(
                running_container, RUN_TIMEOUT, "a RUNNING run in a container", interval=1
            )
            cancelled_at = time.monotonic()
            cancel_flow_run(docker_setup.server, created["id"])
            run = wait_for_final_state(docker_setup.server, created["id"], timeout=120)
            assert run["state"]["type"] == "CANCELLED", (
                run["state"],
                log_tail(docker_setup.worker.log),
            )

            def container_stopped() -> bool:
                try:
                    container.reload()
                except docker.errors.NotFound:  # auto_remove: stopped and removed
                    return True
                return bool(container.status in {"exited", "dead"})

            # Stopped, not left to finish its minute-long requests.
            wait_for(container_stopped, 60, "the cancelled run's container to stop", interval=1)
            assert time.monotonic() - cancelled_at < SLOW_SECONDS - 10

            slow_source.set_faults(slow_every=0)
            rerun, _ = run_and_watch(docker_setup, deployment)
            assert rerun["state"]["type"] == "COMPLETED", rerun["state"]
            assert table_contents(warehouse_url) == table_contents(clean_run.warehouse_url)
        finally:
            slow_source.set_faults(slow_every=0)
            remove_volume(docker_setup.engine, volume)
