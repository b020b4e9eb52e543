"""The benchmark's own measuring: what it reports must be what happened."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.stages import cpu_class, cpu_sampler

# A child that burns CPU, prints the CPU seconds it used by its own account, then idles a
# second (the sampler sees its whole work before it ends); the comment marks its command line.
BURN = (
    "import time\nsum(range(30_000_000))\nprint(time.process_time(), flush=True)\n"
    "time.sleep(1)  # cpu-burner"
)


def test_the_cpu_sampler_counts_a_child_that_ended_between_samples_by_its_class() -> None:
    with cpu_sampler(interval=0.05, classes=(("burner", "cpu-burner"),)) as spent:
        child = subprocess.run(
            [sys.executable, "-c", BURN], capture_output=True, text=True, check=True, timeout=120
        )
    own = float(child.stdout)
    # Its own account and the sampler's agree (to the clock tick), although it had ended.
    assert abs(spent.get("burner", 0.0) - own) <= 0.03, (own, spent)


def test_processes_are_classed_by_their_command_line() -> None:
    me = os.getpid()
    assert cpu_class(me, "python python -m benchmarks.stages flow", me) == "pipeline process"
    spawn = "python python -B -c from multiprocessing.spawn import spawn_main; spawn_main(...)"
    assert cpu_class(me + 1, spawn, me) == "part workers"
    assert cpu_class(me + 1, "python python -m uvicorn --factory prefect", me) == "Prefect server"
    # A backend by its name, whatever its command line says at that moment.
    for cmdline in ("postgres: 15/main: postgres bench 127.0.0.1 COPY", ""):
        assert cpu_class(me + 1, "postgres " + cmdline, me) == "PostgreSQL"
    assert cpu_class(me + 1, "python python -m devharness.demo_api --port 1", me) == "demo API"
    assert cpu_class(me + 1, "redis-server redis-server 127.0.0.1:6379", me) == "other"
