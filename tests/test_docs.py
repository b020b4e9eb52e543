"""The README and docs/ cannot rot: their commands, paths and links must exist.

Every fenced shell command is checked: ``make X`` names a Makefile target, ``python -m M`` names
an importable module (a project module's ``--help`` lists every ``--flag`` the doc uses, and a
pytest path exists), other programs are known tools whose file arguments exist. Fenced Python
parses and its imports exist. Every backticked path of the repository and every relative link
(with its ``#anchor``) resolves. The README stays a front door: small, free of figures that go
stale, and its folder table lists every module.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import itertools
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils import REPO

# Paths the docs name that a run creates (not in the repository).
RUNTIME_PATHS = frozenset({"benchmarks/.work/"})

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
# Programs the docs may run besides make and python; their file arguments must exist.
KNOWN_PROGRAMS = {
    "prefect",
    ".venv/bin/prefect",
    "kubectl",
    "docker",
    "createdb",
    "kind",
    "k3d",
    "bash",
    "export",
    # Everyday shell tools the operations pages may show.
    "cd",
    "chmod",
    "mkdir",
    "git",
    "kill",
    "timeout",
    "env",
    "psql",
    "curl",
}
# The module a make target passes its ARGS (or BENCH_ARGS) to.
MAKE_ARGS = {
    ("run", "ARGS"): "flows.daily_sales",
    ("serve", "ARGS"): "deployments.serve",
    ("psql", "ARGS"): "devharness.embedded_postgres",
    ("bench", "BENCH_ARGS"): "benchmarks.run",
}
# Modules whose arguments after this word go to another program (psql).
PASSTHROUGH = {"devharness.embedded_postgres": "psql"}
SEPARATORS = {"&&", "||", ";", "|"}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@functools.cache
def tracked_top_level() -> frozenset[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return frozenset(line.split("/", 1)[0] for line in out.splitlines() if line)


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


def without_fences(text: str) -> str:
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(without_fences(path.read_text()))}


# --- commands -------------------------------------------------------------------------------


def shell_commands(text: str) -> Iterator[list[str]]:
    """The commands of the fenced shell blocks: continuations joined, comments and leading
    ``NAME=value`` assignments dropped, split at ``&&``, ``;`` and pipes."""
    for language, body in FENCE.findall(text):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if language == "console":  # commands behind a "$ " prompt, the rest is output
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            command: list[str] = []
            for token in [*shlex.split(line, comments=True), ";"]:
                if token in SEPARATORS:
                    while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                        command.pop(0)
                    if command:
                        yield command
                    command = []
                else:
                    command.append(token)


@functools.cache
def help_texts() -> dict[str, str]:
    """``python -m M --help`` of every project module the docs run, in one child process (one
    import of Prefect); the self-test's module is among them."""
    modules = sorted(
        {
            command[2]
            for doc in doc_files()
            for command in shell_commands(doc.read_text())
            if command[0] in PYTHONS and command[1:2] == ["-m"] and len(command) > 2
        }
        | set(MAKE_ARGS.values())
    )
    modules = [m for m in modules if project_module(m) and importlib.util.find_spec(m)]
    script = (
        "import contextlib, io, json, runpy, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "modules, out, stdout = sys.argv[1:], {}, sys.stdout\n"
        "for m in modules:\n"
        "    buf = io.StringIO()\n"
        "    sys.argv = [m, '--help']\n"
        "    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
        "        runpy.run_module(m, run_name='__main__', alter_sys=True)\n"
        "    out[m] = buf.getvalue()\n"
        "stdout.write('\\n' + json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    texts: dict[str, str] = json.loads(done.stdout.rsplit("\n", 1)[-1])
    return texts


def project_module(module: str) -> bool:
    return module.split(".", 1)[0] in tracked_top_level()


def python_problems(args: list[str]) -> list[str]:
    if len(args) < 2 or args[0] != "-m":
        return [f"python without -m MODULE: {shlex.join(args)}"]
    module, rest = args[1], args[2:]
    if importlib.util.find_spec(module) is None:
        return [f"no module {module}"]
    if module == "pytest":
        paths = [a.split("::")[0] for a in rest if not a.startswith("-") and "/" in a]
        return [f"no path {p} (pytest)" for p in paths if not (REPO / p).exists()]
    if not project_module(module):
        return []
    if module in PASSTHROUGH and PASSTHROUGH[module] in rest:
        rest = rest[: rest.index(PASSTHROUGH[module])]
    flags = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    text = help_texts().get(module, "")
    return [
        f"{module} has no option {flag}"
        for flag in flags
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
    ]


def make_problems(args: list[str]) -> list[str]:
    """Each target exists; the options in ``ARGS=...`` exist in the module the target runs."""
    targets = [a for a in args if "=" not in a]
    problems = [f"no make target {t}" for t in targets if t not in makefile_targets()]
    for assignment in (a for a in args if "=" in a):
        variable, value = assignment.split("=", 1)
        for target in targets:
            module = MAKE_ARGS.get((target, variable))
            if module is None:
                continue
            if module in PASSTHROUGH:  # make psql ARGS=...: psql's own options
                value = f"{PASSTHROUGH[module]} {value}"
            problems += python_problems(["-m", module, *shlex.split(value)])
    return problems


def command_problems(command: list[str]) -> list[str]:
    program, args = command[0], command[1:]
    if program == "make":
        return make_problems(args)
    if program in PYTHONS:
        return python_problems(args)
    if program in KNOWN_PROGRAMS:
        problems = []
        for flag, value in itertools.pairwise(args):
            if program == "kubectl" and flag in ("-f", "-k") and not (REPO / value).exists():
                problems.append(f"no path {value} ({program} {flag})")
        if program == "bash" and args and not (REPO / args[0]).exists():
            problems.append(f"no script {args[0]}")
        return problems
    if "/" in program:
        return [] if (REPO / program).exists() else [f"no script {program}"]
    return [f"unknown command {program}: add it to KNOWN_PROGRAMS if it is meant"]


# --- paths and links ------------------------------------------------------------------------


def path_problems(text: str) -> list[str]:
    """Backticked repository paths (``flows/config.py``, ``k8s/``, ``blocks/x.py: Name``)."""
    tops = tracked_top_level()
    problems = []
    for span in CODE_SPAN.findall(without_fences(text)):
        candidate = span.removeprefix("./").split(":", 1)[0].strip()
        if " " in candidate or candidate.split("/", 1)[0] not in tops:
            continue
        if "/" not in candidate and "." not in candidate:
            continue  # a bare word that happens to name a folder
        if candidate in RUNTIME_PATHS:
            continue
        if not (list(REPO.glob(candidate)) if "*" in candidate else (REPO / candidate).exists()):
            problems.append(f"no path {candidate}")
    return problems


def link_problems(text: str, doc: Path) -> list[str]:
    problems = []
    for target in LINK.findall(without_fences(text)):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        relative = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else ""
        if not relative:
            problems.append(f"link {target} points outside the repository")
        elif not resolved.exists():
            problems.append(f"link {target}: no {relative}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"link {target}: no heading #{anchor} in {relative}")
    return problems


def python_block_problems(text: str) -> list[str]:
    """Fenced Python parses, and what it imports exists."""
    problems = []
    for language, body in FENCE.findall(text):
        if language != "python":
            continue
        try:
            tree = ast.parse(body)
        except SyntaxError as exc:
            problems.append(f"python block does not parse: {exc.msg}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if importlib.util.find_spec(node.module) is None:
                    problems.append(f"no module {node.module}")
                    continue
                module = importlib.import_module(node.module)
                problems += [
                    f"{node.module} has no {a.name}"
                    for a in node.names
                    if not hasattr(module, a.name)
                ]
    return problems


def problems_in(text: str, doc: Path) -> list[str]:
    problems = [p for c in shell_commands(text) for p in command_problems(c)]
    problems += python_block_problems(text)
    return problems + path_problems(text) + link_problems(text, doc)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_commands_paths_and_links_exist(doc: Path) -> None:
    assert problems_in(doc.read_text(), doc) == []


def test_the_checks_find_a_broken_page() -> None:
    """The checks above can fail: a page with one mistake of each kind."""
    broken = """# Broken

See [the guide](missing.md), [the flow](architecture.md#no-such-heading) and `sales_etl/nope.py`.

```bash
make no-such-target ARGS="--date 2026-11-23"
make run ARGS="--date 2026-11-23 --no-such-option"
.venv/bin/python -m no_such_module --help
.venv/bin/python -m flows.daily_sales --date 2026-11-23 --no-such-flag
.venv/bin/python -m pytest tests/no_such_dir -q
kubectl apply -f k8s/no-such.yaml
frobnicate --all
```

```python
from blocks import WarehouseBlock, NoSuchBlock
```
"""
    assert problems_in(broken, REPO / "docs" / "broken.md") == [
        "no make target no-such-target",
        "flows.daily_sales has no option --no-such-option",
        "no module no_such_module",
        "flows.daily_sales has no option --no-such-flag",
        "no path tests/no_such_dir (pytest)",
        "no path k8s/no-such.yaml (kubectl -f)",
        "unknown command frobnicate: add it to KNOWN_PROGRAMS if it is meant",
        "blocks has no NoSuchBlock",
        "no path sales_etl/nope.py",
        "link missing.md: no docs/missing.md",
        "link architecture.md#no-such-heading: no heading #no-such-heading in docs/architecture.md",
    ]


def test_nothing_points_outside_the_repository() -> None:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    outside = re.compile(r"\.\./shared|/work/|shared/[A-Z_]+\.md")
    hits = []
    for name in out.splitlines():
        path = REPO / name
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert hits == []


def test_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) < 16 * 1024
    assert 150 <= len(text.splitlines()) <= 250
    stale = re.compile(
        r"\b\d+(?:[.,]\d+)?\s?(?:s|ms|sec|seconds|min|minutes|MB|GB|rows/s|records/s)\b"
        r"|\b\d+ (?:tests|passed|failed)\b"
    )
    assert stale.findall(text) == []
    for command in ("make run", "make test"):
        assert f"\n{command} " in text


def test_readme_folder_table_lists_every_module() -> None:
    """The README's table: a row per folder, then rows whose second cell names its modules."""
    listed: set[str] = set()
    folder = ""
    for line in (REPO / "README.md").read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3:
            continue
        if cells[0]:
            folder = cells[0].split(",")[0].strip("` ")
        listed |= {f"{folder}{m}" for m in re.findall(r"`([\w]+\.py)`", cells[1])}
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    packages = (
        "sales_etl/",
        "tasks/",
        "flows/",
        "blocks/",
        "deployments/",
        "devharness/",
        "benchmarks/",
    )
    modules = {
        name
        for name in out.splitlines()
        if name.startswith(packages) and name.count("/") == 1 and not name.endswith("__init__.py")
    }
    assert sorted(modules - listed) == []
    assert sorted(listed - modules) == []
