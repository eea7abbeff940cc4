"""Each column's one declaration is complete, and every table the compiler reads is named
through the compilation context."""

from __future__ import annotations

import datetime
import re
import typing

import pytest
from psycopg import sql

from ticketexport.domain.actor import Actor
from ticketexport.exports import formats
from ticketexport.views import columns, compiler, registry, scope
from ticketexport.views.model import ResolvedView, parse_definition
from ticketexport.views.service import builtin_view, parse_list_request

TABLES = (
    "tickets",
    "ticket_statuses",
    "ticket_priorities",
    "users",
    "teams",
    "team_memberships",
    "contacts",
    "ticket_tasks",
    "ticket_followers",
)
# A lookup alias used as a qualifier, quoted or not: `st.label`, `"ua".id`.
ALIAS_USE = re.compile(r'(?<![\w."])"?(' + "|".join(columns.LOOKUPS) + r')"?\.')


class Scope:
    """The compilation's inputs as plain SQL, so a declaration renders without a compiler."""

    def table(self, name: str) -> sql.Composable:
        return sql.Identifier(f"via:{name}")

    def now_(self) -> sql.Composable:
        return sql.SQL("now()")

    def tz_(self) -> sql.Composable:
        return sql.Literal("UTC")

    def snoozed(self) -> sql.Composable:
        return sql.SQL("(t.snoozed_until > now())")


def text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def aliases_read(rendered: str) -> set[str]:
    return set(ALIAS_USE.findall(rendered))


@pytest.mark.parametrize("key", list(columns.COLUMNS))
def test_every_column_is_declared_completely(key: str) -> None:
    column = columns.COLUMNS[key]
    scope = Scope()
    assert column.key == key
    assert column.label.strip() == column.label != ""
    assert column.value_type in typing.get_args(columns.ValueType)
    shown = text(column.display(scope))
    assert shown.strip() != ""
    read = aliases_read(shown)
    if column.sort is not None:
        for descending in (False, True):
            keys = column.sort(scope, column.display, descending)
            assert keys, f"{key} is sortable but has no sort keys"
            assert all(isinstance(k, columns.SortKey) for k in keys)
            assert any(k.descending == descending for k in keys)
            read |= {a for k in keys for a in aliases_read(text(k.expr))}
    # The joins named are exactly the lookups the column's SQL reads: a missing one would
    # break the statement, an extra one would cost index-only scans (see columns.LOOKUPS).
    assert set(column.joins) == read, key
    assert len(column.joins) == len(set(column.joins))


def test_flags_follow_the_brief() -> None:
    for key, column in columns.COLUMNS.items():
        # Dates, booleans, tasks and the contact id are not searched.
        expected = column.value_type not in ("timestamp", "boolean") and key not in (
            "tasks",
            "contact_id",
        )
        assert column.searchable == expected, key
        # Every column can be a sort level except Tasks.
        assert column.sortable == (key != "tasks"), key
        assert column.sortable == (column.sort is not None), key
    assert {c.key: c.value_type for c in columns.COLUMNS.values()} == {
        "id": "integer",
        "title": "text",
        "status": "text",
        "priority": "text",
        "language": "text",
        "category": "text",
        "assignee": "text",
        "team": "text",
        "contact_id": "integer",
        "contact": "text",
        "sla_status": "text",
        "sla_due_at": "timestamp",
        "created_at": "timestamp",
        "updated_at": "timestamp",
        "closed_at": "timestamp",
        "tags": "list",
        "created_by": "text",
        "description": "text",
        "snoozed": "boolean",
        "snoozed_until": "timestamp",
        "tasks": "text",
    }


def test_the_registry_reads_the_declarations() -> None:
    assert registry.COLUMNS is columns.COLUMNS
    assert registry.SEARCHABLE_COLUMNS == (
        "id",
        "title",
        "status",
        "priority",
        "language",
        "category",
        "assignee",
        "team",
        "contact",
        "sla_status",
        "tags",
        "created_by",
        "description",
    )
    assert [*registry.SORTABLE_COLUMNS, "tasks"] == list(registry.COLUMNS)


@pytest.mark.parametrize("alias", list(columns.LOOKUPS))
def test_every_lookup_reads_its_table_through_the_scope(alias: str) -> None:
    lookup = columns.LOOKUPS[alias]
    assert lookup.alias == alias
    assert lookup.table in TABLES
    joined = text(lookup.join(Scope()))
    assert joined.startswith(" LEFT JOIN ")
    assert f'"via:{lookup.table}"' in joined
    assert re.search(rf"\b{alias} ON ", joined)
    assert not re.search(r"(?<!via:)\b(" + "|".join(TABLES) + r")\b", joined)


# Every table the compiled SQL reads --------------------------------------------------------

NOW = datetime.datetime(2026, 3, 9, 14, 5, 17, tzinfo=datetime.UTC)
ACTOR = Actor(id=7, is_admin=False, permissions=512)
KEY_VALUES = {"int": 5, "ts": NOW, "text": "abc", "bool": True}


def _conditions() -> list[dict[str, object]]:
    """One condition of every field and operator."""
    values: dict[str, object] = {
        "none": None,
        "text": "ab",
        "number": 3,
        "date": "2026-03-08",
        "relative": {"amount": 2, "unit": "days"},
        "preset": "this_week",
        "status_type": "open",
        "priority_ref": "high",
    }
    found = []
    for field in registry.FIELDS.values():
        for op in registry.OPERATORS[field.type]:
            value = values.get(op.value_kind)
            if op.value_kind == "ids":
                names = field.type in (registry.FieldType.STATUS, registry.FieldType.PRIORITY)
                value = ["open"] if names else [1]
            found.append({"field": field.key, "operator": op.key, "value": value})
    return found


def _statements(view: ResolvedView, params: dict[str, str]) -> list[sql.Composable]:
    request = parse_list_request(params)
    shape = compiler.compile_list(view, request, ACTOR, now=NOW, tz="UTC")
    after = tuple(KEY_VALUES[kind] for kind in shape.key_kinds)
    pages = [
        compiler.compile_list(
            view, request, ACTOR, now=NOW, tz="UTC", after=a, limit=51, grouped=g
        ).statement
        for a in (None, after)
        for g in (False, True)
    ]
    exported = compiler.compile_export(view, request, ACTOR, NOW, "UTC", snapshot=None)
    return [
        shape.statement,
        *pages,
        compiler.compile_count(view, request, ACTOR, now=NOW, tz="UTC")[0],
        formats.CSV.select(exported.rows),
        exported.count,
    ]


def test_the_compiler_names_every_table_through_its_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scope.Context, "table", lambda self, name: sql.Identifier(f"via:{name}"))
    statements: list[sql.Composable] = []
    for key in registry.BUILTIN_VIEWS:
        for sort in registry.SORTS:
            for extra in ({}, {"q": "a", "status": "open", "type": "open", "priority": "high"}):
                statements += _statements(builtin_view(key), {"view": key, "sort": sort, **extra})
    everything = list(registry.COLUMNS)
    for condition in _conditions():
        definition = parse_definition(
            {
                "name": "x",
                "conditions_and": [condition],
                "conditions_or": [condition],
                "columns": everything[:10],
                "sort": [{"column": "tags", "direction": "asc"}],
            }
        )
        view = ResolvedView("1", "x", definition, saved_view_id=1, builtin=None)
        statements += _statements(view, {"q": "a"})
    for start in (0, 10):
        definition = parse_definition(
            {
                "name": "x",
                "conditions_and": [],
                "conditions_or": [],
                "columns": everything[start : start + 20],
                "sort": [{"column": c, "direction": "desc"} for c in registry.SORTABLE_COLUMNS][
                    start // 2 : start // 2 + 6
                ],
            }
        )
        view = ResolvedView("1", "x", definition, saved_view_id=1, builtin=None)
        statements += _statements(view, {"q": "a", "sort": "view"})
    seen: set[str] = set()
    raw = re.compile(r"(?<!via:)\b(" + "|".join(TABLES) + r")\b")
    for statement in statements:
        rendered = text(statement)
        assert not raw.search(rendered), raw.search(rendered)
        seen.update(re.findall(r'"via:(\w+)"', rendered))
    # Every table is read somewhere above, so the check covers each of them.
    assert seen == set(TABLES)
