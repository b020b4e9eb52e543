"""TASK_RUNNER: which task runner the transform's part tasks get."""

from __future__ import annotations

import pytest
from prefect_dask import DaskTaskRunner

from flows.runners import RunnerChoice, parse_task_runner, runner_from_settings
from sales_etl.errors import ConfigError
from sales_etl.settings import Settings


def test_default_is_auto_inline_for_one_part_and_processes_for_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TASK_RUNNER", raising=False)
    choice = runner_from_settings()
    assert choice == RunnerChoice("auto")
    assert choice.for_parts(1) == RunnerChoice("inline", 1, max_in_flight=1)
    assert choice.for_parts(1).in_flow
    several = choice.for_parts(10)
    assert several.kind == "processes" and several.workers is not None
    assert not several.in_flow
    assert several.part_processes == several.workers
    assert not several.in_subflow  # the parts are tasks of the calling flow


@pytest.mark.parametrize(
    ("spec", "kind", "workers", "processes"),
    [
        ("threads", "threads", None, 0),
        ("threads:3", "threads", 3, 0),
        ("PROCESSES:2", "processes", 2, 2),
    ],
)
def test_local_runners(spec: str, kind: str, workers: int | None, processes: int) -> None:
    choice = parse_task_runner(spec)
    assert (choice.kind, choice.workers, choice.part_processes) == (kind, workers, processes)
    assert not choice.in_subflow
    with pytest.raises(ValueError, match="runs no subflow"):
        choice.task_runner()
    assert choice.for_parts(1) == choice  # only auto adapts to the number of parts


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("dask://scheduler:8786", "tcp://scheduler:8786"),
    ],
)
def test_a_scheduler_address_means_dask(spec: str, address: str) -> None:
    choice = parse_task_runner(spec)
    assert (choice.kind, choice.address, choice.in_flight()) == ("dask", address, 16)
    runner = choice.task_runner()
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == address


def test_max_in_flight_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_RUNNER", "tcp://127.0.0.1:8786")
    monkeypatch.setenv("TRANSFORM_MAX_IN_FLIGHT", "3")
    assert runner_from_settings().in_flight() == 3
    assert Settings().task_runner == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize("spec", ["dask", "threads:0", "threads:x", "auto:2", "dask://", "k8s"])
def test_nonsense_is_refused_with_the_choices(spec: str) -> None:
    with pytest.raises(ConfigError, match="TASK_RUNNER"):
        parse_task_runner(spec)
