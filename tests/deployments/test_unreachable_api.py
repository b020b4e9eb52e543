"""The registration scripts against a Prefect API that does not answer: one line naming
PREFECT_API_URL and exit status 1, within seconds, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.utils import REPO, closed_port_url, run_env


@pytest.mark.parametrize("script", ["automations", "docker", "kubernetes"])
def test_a_dead_api_fails_in_one_line_naming_it(script: str) -> None:
    url = f"{closed_port_url()}/api"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", f"deployments.{script}"],
        env=run_env(PREFECT_API_URL=url), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"cannot reach the Prefect API at PREFECT_API_URL={url} ")
