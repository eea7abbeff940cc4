"""Every fixed statement lives in sql/queries.sql: named where used, used where named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ticketexport import db

PACKAGE = Path(db.__file__).resolve().parent
# A call that looks a statement up by name: q("x"), db.q("x"), queries()["x"].
_NAME_USE = re.compile(
    r"""\bq\(\s*["']([a-z_][a-z0-9_]*)["']\s*\)|queries\(\)\[["']([a-z_][a-z0-9_]*)["']\]"""
)
# The start of a statement in a string literal handed to the database.
_STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|SET|LISTEN|NOTIFY|TRUNCATE|COPY)\b",
    re.IGNORECASE,
)


def _sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}


def _names_used() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for path, text in _sources().items():
        for match in _NAME_USE.finditer(text):
            name = match.group(1) or match.group(2)
            used.setdefault(name, []).append(path.relative_to(PACKAGE).as_posix())
    return used


def test_every_named_query_the_code_uses_exists() -> None:
    missing = {name: where for name, where in _names_used().items() if name not in db.queries()}
    assert missing == {}, f"code names queries that sql/queries.sql does not define: {missing}"


def _string_constants() -> set[str]:
    """Every string literal in the package: a query name handed on to a helper that calls
    q() (the worker's guarded updates, say) counts as a use."""
    found: set[str] = set()
    for text in _sources().values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_named_query_is_used() -> None:
    unused = sorted(set(db.queries()) - set(_names_used()) - _string_constants())
    assert unused == [], f"sql/queries.sql defines queries no code uses: {unused}"


def test_no_fixed_statement_is_written_inline() -> None:
    """A string literal that starts like a statement and reaches execute() is a query that
    belongs in sql/queries.sql (SQL composed with psycopg.sql from parts is fine)."""
    found = []
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in {"execute", "executemany"}:
                continue
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if literal and _STATEMENT.match(first.value):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == [], f"inline SQL statements: {found}"


def test_the_query_file_has_a_description_for_each_statement() -> None:
    text = (db.SQL_DIR / "queries.sql").read_text(encoding="utf-8")
    headers = re.findall(r"^-- name: ([a-z_][a-z0-9_]*)\n(.*)$", text, re.MULTILINE)
    assert {name for name, _ in headers} == set(db.queries())
    undescribed = [name for name, line in headers if not line.startswith("-- ")]
    assert undescribed == [], f"queries without a one-line description: {undescribed}"


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The patterns find a name use and an inline statement where there is one."""
    assert _NAME_USE.search('cur.execute(q("export_get"), {})')
    assert _NAME_USE.search("db.q('seed_lock')")
    assert _STATEMENT.match("  select 1")
    assert not _STATEMENT.match("selection of views")
