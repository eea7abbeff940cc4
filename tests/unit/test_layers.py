"""The import layers of pyproject.toml hold, and a back-import or a cycle breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the package under `root`, which is first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    """The package's sources and the contracts, to edit without touching the tree."""
    shutil.copytree(
        ROOT / "ticketexport",
        tmp_path / "ticketexport",
        ignore=shutil.ignore_patterns("__pycache__", "static"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_the_package_keeps_its_layers_and_has_no_cycle() -> None:
    linted = _lint(ROOT)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "3 kept, 0 broken" in linted.stdout


# Each edit adds one import that goes the wrong way: lazily inside a function, under
# TYPE_CHECKING, or at the top of a module.
BACK_IMPORTS = {
    "a use case's job queue imports the task code, lazily": (
        "jobqueue.py",
        "\n\ndef _back() -> object:\n    from ticketexport.exports import worker\n\n"
        "    return worker\n",
        "ticketexport.jobqueue -> ticketexport.exports.worker",
    ),
    "the domain imports the web layer for typing": (
        "domain/errors.py",
        "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from ticketexport.web import keys  # noqa: F401\n",
        "ticketexport.domain.errors -> ticketexport.web.keys",
    ),
    "the views import the exports": (
        "views/model.py",
        "\nfrom ticketexport.exports import formats  # noqa: F401\n",
        "ticketexport.views.model -> ticketexport.exports.formats",
    ),
    "a web handler runs a named query itself": (
        "web/tickets.py",
        "\nfrom ticketexport.db import q  # noqa: F401\n",
        "ticketexport.web.tickets -> ticketexport.db",
    ),
    "two modules of one layer import each other's side": (
        "events.py",
        "\nfrom ticketexport import storage  # noqa: F401\n",
        "ticketexport.events -> ticketexport.storage",
    ),
}


@pytest.mark.parametrize("case", sorted(BACK_IMPORTS))
def test_a_back_import_breaks_the_layers(tmp_path: Path, case: str) -> None:
    module, text, named = BACK_IMPORTS[case]
    root = _copy(tmp_path)
    _append(root / "ticketexport" / module, text)
    linted = _lint(root)
    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert "BROKEN" in linted.stdout
    assert named in linted.stdout


def test_a_cycle_between_sibling_modules_breaks_the_contract(tmp_path: Path) -> None:
    """Within one package and layer: exports.files already imports exports.service."""
    root = _copy(tmp_path)
    _append(
        root / "ticketexport" / "exports" / "service.py",
        "\n\ndef _back() -> object:\n    from ticketexport.exports import files\n\n"
        "    return files\n",
    )
    linted = _lint(root)
    assert linted.returncode == 1, linted.stdout + linted.stderr
    assert "no import cycles, at any depth BROKEN" in linted.stdout


# acyclic_siblings compares siblings only: a package whose __init__ imports one of its own
# modules, which imports the package back, passes it. This finds every strongly connected
# set of modules in the graph import-linter builds (grimp's), whatever their nesting.
_CYCLES = """
import grimp

graph = grimp.build_graph("ticketexport")
index, low, on_stack, stack, found = {}, {}, set(), [], []


def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        if imported not in index:
            visit(imported)
            low[module] = min(low[module], low[imported])
        elif imported in on_stack:
            low[module] = min(low[module], index[imported])
    if low[module] == index[module]:
        group = []
        while not group or group[-1] != module:
            group.append(stack.pop())
            on_stack.discard(group[-1])
        if len(group) > 1:
            found.append(" ".join(sorted(group)))


for module in sorted(graph.modules):
    if module not in index:
        visit(module)
for group in found:
    print(group)
"""


def _cycles(root: Path) -> list[str]:
    """Each set of modules that import each other round a loop, one line each."""
    found = subprocess.run(
        [sys.executable, "-c", _CYCLES],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return found.stdout.splitlines()


def test_no_module_imports_itself_round_a_loop() -> None:
    assert _cycles(ROOT) == []


def test_a_package_importing_its_module_back_is_a_cycle(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _append(
        root / "ticketexport" / "storage" / "__init__.py",
        "\n\ndef _back() -> object:\n    from ticketexport.storage import local\n\n"
        "    return local\n",
    )
    assert _cycles(root) == ["ticketexport.storage ticketexport.storage.local"]


def test_web_runs_statements_only_for_health_and_metrics() -> None:
    """What the import contract cannot see: a statement written out in a handler."""
    allowed = {"ops.py"}
    running = [
        path.name
        for path in sorted((ROOT / "ticketexport" / "web").glob("*.py"))
        if path.name not in allowed
        and any(
            call in path.read_text(encoding="utf-8") for call in (".execute(", ".cursor(", "copy(")
        )
    ]
    assert running == []


def test_every_web_module_but_ops_is_held_by_the_no_sql_contract() -> None:
    """A new web module is kept from the database too: the contract names every one."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (no_sql,) = [
        contract
        for contract in contracts["tool"]["importlinter"]["contracts"]
        if contract["id"] == "web-without-sql"
    ]
    modules = {
        f"ticketexport.web.{path.stem}"
        for path in (ROOT / "ticketexport" / "web").glob("*.py")
        if path.name not in {"__init__.py", "ops.py"}
    }
    assert sorted(no_sql["source_modules"]) == sorted(modules)
