"""Every ``from <project module> import name`` in code that mypy does not check resolves.

``make lint`` type-checks the product packages only; the tests and benchmarks are not (Prefect's
sync/async overloads give ~100 false positives there). An import inside a function body is
not run by collection either: one such stale import (``from flows.daily_sales import
DEMO_DATA`` after the name moved to ``flows.config``) broke the Docker and Kubernetes groups in
CI while ``make test`` passed. This test reads those imports and resolves each one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.utils import REPO

UNCHECKED = ("tests", "benchmarks")
PROJECT_PACKAGES = {
    "sales_etl",
    "flows",
    "tasks",
    "blocks",
    "deployments",
    "devharness",
    "tests",
    "benchmarks",
}


def project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each absolute ``from`` import of a project module in ``path``."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.ImportFrom) or node.level != 0 or not node.module:
            continue
        if node.module.split(".")[0] in PROJECT_PACKAGES:
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def resolves(module: str, name: str) -> bool:
    imported = importlib.import_module(module)
    if name == "*" or hasattr(imported, name):
        return True
    try:  # a submodule: ``from flows import daily_sales``
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def sources() -> list[Path]:
    return sorted(p for folder in UNCHECKED for p in (REPO / folder).rglob("*.py"))


def test_a_stale_import_inside_a_fixture_body_is_found(tmp_path: Path) -> None:
    """The case that broke CI: collection imports the module, but not the fixture's body."""
    module = tmp_path / "conftest.py"
    module.write_text(
        "import pytest\n\n@pytest.fixture\ndef demo():\n"
        "    from flows.daily_sales import DEMO_DATA_THAT_MOVED\n"
        "    from flows.config import DEMO_DATA\n"
        "    return DEMO_DATA\n"
    )
    found = project_imports(module)
    assert found == [
        (5, "flows.daily_sales", "DEMO_DATA_THAT_MOVED"),
        (6, "flows.config", "DEMO_DATA"),
    ]
    assert [resolves(m, n) for _, m, n in found] == [False, True]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_project_import_resolves(path: Path) -> None:
    stale = [
        f"{path.relative_to(REPO)}:{line}: from {module} import {name}"
        for line, module, name in project_imports(path)
        if not resolves(module, name)
    ]
    assert stale == []
