"""The suite's own helpers: a missing component skips locally and fails under REQUIRE_ALL;
the reference implementation of the view rules stays independent of the product."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.support import reference_views

REPO = Path(__file__).resolve().parents[2]
ABSENT = "ticketexport_no_such_module"

IN_A_TEST = f"""
from tests.support.components import require_module


def test_uses_the_module():
    require_module("{ABSENT}", "the absent module")
"""

AT_MODULE_LEVEL = f"""
from tests.support.components import require_module

absent = require_module("{ABSENT}", "the absent module")


def test_uses_the_module():
    assert absent
"""

PRESENT = """
from tests.support.components import require_module

json = require_module("json", "the json module")


def test_uses_the_module():
    assert json.loads("[1]") == [1]
"""


def _run(tmp_path: Path, *, require_all: bool) -> tuple[dict[str, str], str]:
    """Runs the three files in a separate pytest (REQUIRE_ALL is read once, at import).

    Returns each file's outcome from the JUnit report (passed, skipped, failure or error)
    and the report's text, which holds the skip and failure messages.
    """
    for name, source in (
        ("test_in_a_test.py", IN_A_TEST),
        ("test_at_module_level.py", AT_MODULE_LEVEL),
        ("test_present.py", PRESENT),
    ):
        (tmp_path / name).write_text(source, encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TICKETEXPORT_REQUIRE_ALL", "PYTEST_ADDOPTS")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if require_all:
        env["TICKETEXPORT_REQUIRE_ALL"] = "1"
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            # A module that fails to import must not stop the other files from running.
            "--continue-on-collection-errors",
            f"--junitxml={report}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.exists(), proc.stdout + proc.stderr
    outcomes: dict[str, str] = {}
    # The report is the one the child pytest just wrote, not outside input.
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314
        module = case.get("classname") or case.get("name") or ""
        verdicts = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[module.rsplit(".", 1)[-1]] = verdicts[0] if verdicts else "passed"
    return outcomes, report.read_text(encoding="utf-8")


def test_a_missing_module_skips_locally(tmp_path: Path) -> None:
    outcomes, report = _run(tmp_path, require_all=False)
    assert outcomes == {
        "test_in_a_test": "skipped",
        "test_at_module_level": "skipped",
        "test_present": "passed",
    }
    assert "the absent module (No module named" in report
    assert "required component missing" not in report


def test_a_missing_module_fails_under_require_all(tmp_path: Path) -> None:
    outcomes, report = _run(tmp_path, require_all=True)
    # At module level the failure surfaces as a collection error: the run fails either way.
    assert outcomes == {
        "test_in_a_test": "failure",
        "test_at_module_level": "error",
        "test_present": "passed",
    }
    assert "required component missing: the absent module" in report


def test_reference_views_imports_nothing_from_the_product() -> None:
    """A cross-check is only worth something while the two implementations share no code."""
    tree = ast.parse(Path(reference_views.__file__).read_text(encoding="utf-8"))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.append("." * node.level + (node.module or ""))
    assert imported, "no imports found: the check would prove nothing"
    assert not [name for name in imported if name.startswith(("ticketexport", "."))], imported


SKIPS = {"importorskip", "skip", "skipif"}


def test_every_skip_goes_through_the_component_helper() -> None:
    """pytest.importorskip, pytest.skip and skip marks bypass TICKETEXPORT_REQUIRE_ALL: the
    only skip in the suite is the one in components.missing_component."""
    allowed = REPO / "tests" / "support" / "components.py"
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path == allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in SKIPS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and any(a.name in SKIPS for a in node.names):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} import")
    assert not found, f"skips outside components.missing_component: {found}"
