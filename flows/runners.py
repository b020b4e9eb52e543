"""Where the transform's per-part tasks run: the task runner, chosen by configuration.

``TASK_RUNNER`` (environment or ``.env``, read when a run starts, never at import time):

===========================  ============================================================
``auto`` (default)           one raw part: in the flow's own process; several: ``processes``
                             with one process per core
``threads`` / ``threads:N``  N part tasks at once (default: cores) on the flow's own thread
                             pool
``processes[:N]``            N worker processes (default: cores) that run each part's pure
                             function (:mod:`sales_etl.part_workers`); the part tasks run on
                             the flow's own thread pool, N at once, each waiting for its worker
``tcp://host:8786``          the subflow "Transform Sales Parts" on ``DaskTaskRunner`` from
(or ``dask://host:8786``)    ``prefect-dask``: an existing ``dask.distributed`` scheduler; its
                             workers run the tasks
===========================  ============================================================

``TRANSFORM_MAX_IN_FLIGHT`` bounds how many part tasks are submitted at once (default: the
runner's workers for threads and processes, 16 for a Dask cluster); each part task holds one
raw part (~32 MB of pages) and one chunk of parsed records in memory.

The worker processes have no Prefect in them: no API client, no temporary server, no run
context to set up (Prefect's ``ProcessPoolTaskRunner`` cost ~5 s of set-up and shut-down around
~5 s of work on a 1M-record day). They are started once per process, when the first day likely to
have several parts begins (:func:`start_part_workers_for`), and reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prefect.task_runners import TaskRunner

from sales_etl.errors import ConfigError
from sales_etl.part_workers import shared_part_workers
from sales_etl.settings import Settings, load_settings

DASK_SCHEMES = ("tcp://", "tls://", "dask://")
DEFAULT_DASK_IN_FLIGHT = 16
# About one raw part (32 MB of pages): a day announced with more records will likely run on the
# part workers, so they are started before its extract (their start then overlaps it).
RECORDS_PER_PART_GUESS = 100_000


@dataclass(frozen=True)
class RunnerChoice:
    """A parsed ``TASK_RUNNER``: its kind, worker count and Dask address, if any."""

    kind: str  # "auto", "inline", "threads", "processes" or "dask"
    workers: int | None = None
    address: str | None = None
    max_in_flight: int | None = None

    def for_parts(self, parts: int) -> RunnerChoice:
        """``auto`` made concrete for a snapshot of ``parts`` raw parts."""
        if self.kind != "auto":
            return self
        if parts <= 1:
            return RunnerChoice("inline", 1, max_in_flight=1)
        return RunnerChoice("processes", min(parts, _cores()), max_in_flight=self.max_in_flight)

    @property
    def in_flow(self) -> bool:
        """True for ``inline``: the part task runs in the calling flow, no runner, no subflow."""
        return self.kind == "inline"

    def in_flight(self) -> int:
        """How many part tasks may be submitted and unfinished at once."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        if self.kind == "dask":
            return DEFAULT_DASK_IN_FLIGHT
        return self.workers or _cores()

    def task_runner(self) -> TaskRunner[Any]:
        """The subflow's task runner (:attr:`in_subflow`: a Dask cluster's); the other kinds
        run their part tasks on the calling flow's own runner and have none."""
        if not self.in_subflow:
            raise ValueError(f"TASK_RUNNER {self.kind!r} runs no subflow: it has no task runner")
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(
                f"TASK_RUNNER={self.address} needs prefect-dask: pip install "
                "'daily-sales-etl[deploy]' (the image has it)"
            ) from None
        return DaskTaskRunner(address=self.address)

    @property
    def in_subflow(self) -> bool:
        """True for ``dask``: the part tasks run in a subflow whose task runner is the cluster's
        (threads and processes run them as tasks of the calling flow, on its thread pool)."""
        return self.kind == "dask"

    @property
    def part_processes(self) -> int:
        """Worker processes the part tasks hand their work to (0: the task does it itself)."""
        return self.workers or _cores() if self.kind == "processes" else 0

    def describe(self) -> str:
        if self.kind == "dask":
            return f"dask ({self.address})"
        return f"{self.kind} ({self.workers or _cores()})"


def parse_task_runner(spec: str, max_in_flight: int | None = None) -> RunnerChoice:
    """Parse a ``TASK_RUNNER`` value (see the module docstring); raises :class:`ConfigError`."""
    text = spec.strip()
    lowered = text.lower()
    if lowered.startswith(DASK_SCHEMES):
        address = "tcp://" + text[len("dask://") :] if lowered.startswith("dask://") else text
        if not address.split("://", 1)[1]:
            raise ConfigError(f"TASK_RUNNER={spec!r} names no scheduler address")
        return RunnerChoice("dask", address=address, max_in_flight=max_in_flight)
    kind, _, count = lowered.partition(":")
    if kind not in ("auto", "threads", "processes") or (kind == "auto" and count):
        raise ConfigError(
            f"TASK_RUNNER={spec!r} is not one of auto, threads[:N], processes[:N], "
            "tcp://host:port (a Dask scheduler)"
        )
    workers = None
    if count:
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"TASK_RUNNER={spec!r}: the worker count must be a positive integer")
        workers = int(count)
    return RunnerChoice(kind, workers, max_in_flight=max_in_flight)


def start_part_workers_for(records: int, choice: RunnerChoice | None = None) -> None:
    """Start the part workers now if a day of ``records`` records (the source's count) will
    likely use them: their start (~1.5 s of imports) then overlaps the extract, not the
    transform. A guess: the transform still chooses by the parts the extract wrote."""
    parts = -(-records // RECORDS_PER_PART_GUESS)
    workers = (choice or runner_from_settings()).for_parts(parts).part_processes
    if parts > 1 and workers:
        shared_part_workers(workers)


def runner_from_settings(settings: Settings | None = None) -> RunnerChoice:
    """The runner chosen by the settings (``TASK_RUNNER``, ``TRANSFORM_MAX_IN_FLIGHT``)."""
    current = settings or load_settings()
    return parse_task_runner(current.task_runner, current.transform_max_in_flight)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
