"""Arrow's allocator in the pipeline's processes (sales_etl/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sales_etl.memory import ARROW_POOL_VARIABLE, prefer_returning_allocator
from tests.utils import REPO


def test_jemalloc_is_chosen_unless_the_user_chose() -> None:
    unset: dict[str, str] = {}
    prefer_returning_allocator(unset)
    assert unset == {ARROW_POOL_VARIABLE: "jemalloc"}
    chosen = {ARROW_POOL_VARIABLE: "system"}
    prefer_returning_allocator(chosen)
    assert chosen == {ARROW_POOL_VARIABLE: "system"}


def test_an_entry_point_s_process_allocates_from_jemalloc_and_returns_soon() -> None:
    # As flows/cli.py does: choose before pyarrow is imported, then the flow sets the decay.
    script = (
        "from sales_etl.memory import prefer_returning_allocator, return_freed_memory_soon\n"
        "prefer_returning_allocator()\n"
        "return_freed_memory_soon()\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ARROW_POOL_VARIABLE}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "jemalloc"


# After freeing a 4 MB block, glibc calls 4 MB "large": a 2 MB block then comes from the heap.
# mallinfo2's hblkhd counts the bytes in blocks with a mapping of their own.
HEAP_OR_MAPPED = """
import ctypes, sys
from sales_etl.memory import return_freed_memory_soon

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    return_freed_memory_soon()  # as the flow does when it starts
libc.free(libc.malloc(4 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblkhd - before >= 2 << 20)
libc.free(block)
"""


@pytest.mark.parametrize(("threshold", "mapped"), [("dynamic", "False"), ("fixed", "True")])
def test_the_flow_s_process_maps_large_blocks_whatever_was_freed_before(
    threshold: str, mapped: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", HEAP_OR_MAPPED, threshold],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mapped


def test_the_collector_is_paused_while_any_user_is_inside_and_back_after_an_error() -> None:
    import gc

    from sales_etl.memory import cyclic_gc_paused

    def land_pages() -> None:
        with cyclic_gc_paused():
            with cyclic_gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the outer user is still inside
            raise RuntimeError("a failed page")

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        land_pages()
    assert gc.isenabled()
