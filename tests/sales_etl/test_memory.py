"""Arrow's allocator in the pipeline's processes (sales_etl/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from sales_etl.memory import ARROW_POOL_VARIABLE, prefer_returning_allocator
from tests.utils import REPO


def test_jemalloc_is_chosen_unless_the_user_chose() -> None:
    unset: dict[str, str] = {}
    prefer_returning_allocator(unset)
    assert unset == {ARROW_POOL_VARIABLE: "jemalloc"}
    chosen = {ARROW_POOL_VARIABLE: "system"}
    prefer_returning_allocator(chosen)
    assert chosen == {ARROW_POOL_VARIABLE: "system"}


def test_an_entry_point_s_process_allocates_from_jemalloc_and_returns_at_once() -> None:
    # As flows/cli.py does: choose before pyarrow is imported, then the flow sets the decay.
    script = (
        "from sales_etl.memory import prefer_returning_allocator, return_freed_memory_at_once\n"
        "prefer_returning_allocator()\n"
        "return_freed_memory_at_once()\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_VARIABLE}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "jemalloc"
