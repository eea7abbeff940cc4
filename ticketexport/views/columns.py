"""Every list and export column, each declared once, and the lookups their SQL reads."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable
from typing import Literal, Protocol

from psycopg import sql

# How a typed format (a spreadsheet cell, say) holds a column's value; CSV and the list
# show the display text whatever the type. Only integer and timestamp columns declare a
# `value` of their own (see Column); the other types hold the displayed text.
ValueType = Literal["text", "integer", "timestamp", "boolean", "list"]
KeyKind = Literal["ts", "int", "text", "bool"]

TEXT_SORT_PREFIX = 60
# Empty dates sort last in both directions by standing in for far-future / far-past instants
# that a ticket never has (and Python's datetime can still represent in any zone).
LATE = datetime.datetime(9998, 12, 31, tzinfo=datetime.UTC)
EARLY = datetime.datetime(2, 1, 1, tzinfo=datetime.UTC)
INT_LATE = 2**63 - 1
INT_EARLY = -(2**63)

CI = sql.SQL("COLLATE ticketexport_text")


class FieldType(enum.StrEnum):
    """What kind of value a condition field holds; it decides the operators offered."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    STATUS = "status"
    PRIORITY = "priority"
    PERSON = "person"
    TEAM = "team"
    BOOLEAN = "boolean"


@dataclasses.dataclass(frozen=True)
class Field:
    """A field the view editor's conditions test. `order` is its place in the editor's
    list; the key is the column's own unless it differs (the Contact column's field is
    contact_name)."""

    key: str
    label: str
    type: FieldType
    order: int = dataclasses.field(default=0, compare=False, repr=False)


class Scope(Protocol):
    """What a column's SQL may depend on: the compilation's instant, zone and relations."""

    def table(self, name: str) -> sql.Composable: ...

    def now_(self) -> sql.Composable: ...

    def tz_(self) -> sql.Composable: ...

    def snoozed(self) -> sql.Composable: ...


@dataclasses.dataclass(frozen=True)
class SortKey:
    expr: sql.Composable
    descending: bool
    kind: KeyKind


# A column's displayed value as SQL text, '' for empty.
Display = Callable[[Scope], sql.Composable]
# A column's sort keys in one direction, given its display (text sorts on what is shown).
Sort = Callable[[Scope, Display, bool], list[SortKey]]


def lowered(expr: sql.Composable) -> sql.Composable:
    """The case-insensitive form of a text: each character's simple lower-case mapping
    (İ becomes i, ẞ becomes ß; one character never becomes two, so prefixes and lengths
    keep their meaning), with the final sigma ς folded to σ so that Σ, σ and ς match each
    other wherever they stand in a word. ß stays ß: "ss" does not find it."""
    return sql.SQL("translate(lower(({}) {}), 'ς', 'σ')").format(expr, CI)


def person(alias: str) -> sql.Composable:
    """A user's or contact's "First Last" (just the first name when there is no last)."""
    a = sql.Identifier(alias)
    return sql.SQL(
        "(CASE WHEN {a}.id IS NULL THEN '' WHEN {a}.last_name = '' THEN {a}.first_name "
        "ELSE {a}.first_name || ' ' || {a}.last_name END)"
    ).format(a=a)


def text_keys(text: sql.Composable, desc: bool) -> list[SortKey]:
    """Text order: the first 60 characters lower-cased, then as typed, in code-point order,
    empty values last in both directions."""
    return [
        # empty values last in both directions: false (non-empty) sorts first ascending
        SortKey(sql.SQL("(({}) = '')").format(text), False, "bool"),
        SortKey(
            sql.SQL('left({}, {}) COLLATE "C"').format(
                lowered(text), sql.Literal(TEXT_SORT_PREFIX)
            ),
            desc,
            "text",
        ),
        SortKey(
            sql.SQL('left({}, {}) COLLATE "C"').format(text, sql.Literal(TEXT_SORT_PREFIX)),
            desc,
            "text",
        ),
    ]


# Displays ---------------------------------------------------------------------------------


def _sql(expression: str | sql.Composable) -> sql.Composable:
    return sql.SQL(expression) if isinstance(expression, str) else expression


def constant(expression: str | sql.Composable) -> Display:
    """A display that needs nothing from the compilation."""
    x = _sql(expression)
    return lambda scope: x


def timestamp(expression: str) -> Display:
    """An instant as YYYY-MM-DDTHH:MM:SS±HH:MM in the organisation's zone, '' when NULL."""
    x = sql.SQL(expression)

    def shown(scope: Scope) -> sql.Composable:
        tz = scope.tz_()
        # The offset is the zone's at that instant (DST included), whatever the session's is.
        return sql.SQL(
            "(CASE WHEN {x} IS NULL THEN '' ELSE "
            "to_char({x} AT TIME ZONE {tz}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            "(CASE WHEN ({x} AT TIME ZONE {tz}) < ({x} AT TIME ZONE 'UTC') THEN '-' ELSE '+' END) "
            "|| to_char(greatest(({x} AT TIME ZONE {tz}) - ({x} AT TIME ZONE 'UTC'), "
            "({x} AT TIME ZONE 'UTC') - ({x} AT TIME ZONE {tz})), 'HH24:MI') END)"
        ).format(x=x, tz=tz)

    return shown


def local_time(expression: str) -> Display:
    """An instant as the organisation's wall-clock time (timestamp without time zone), to the
    second as the display shows it, NULL when NULL: what a spreadsheet's date-time holds."""
    x = sql.SQL(expression)
    return lambda scope: sql.SQL("date_trunc('second', {} AT TIME ZONE {})").format(x, scope.tz_())


def yes_no(predicate: Display) -> Display:
    """A boolean shown as Yes/No; `predicate` is the SQL boolean."""
    return lambda scope: sql.SQL("(CASE WHEN {} THEN 'Yes' ELSE 'No' END)").format(predicate(scope))


def _snoozed(scope: Scope) -> sql.Composable:
    return scope.snoozed()


# Sorts ------------------------------------------------------------------------------------


def by_text(scope: Scope, display: Display, descending: bool) -> list[SortKey]:
    """Sorts on the displayed text (see text_keys)."""
    return text_keys(display(scope), descending)


def _by_value(
    expression: str | sql.Composable,
    kind: KeyKind,
    empty: tuple[sql.Composable, sql.Composable] | None,
) -> Sort:
    """One key on `expression`. `empty` (what stands in for NULL ascending, descending) puts
    empty values last in both directions; without it the value is never NULL."""
    x = _sql(expression)

    def keys(scope: Scope, display: Display, descending: bool) -> list[SortKey]:
        if empty is None:
            return [SortKey(x, descending, kind)]
        stand_in = empty[1] if descending else empty[0]
        return [SortKey(sql.SQL("coalesce({}, {})").format(x, stand_in), descending, kind)]

    return keys


def by_number(expression: str | sql.Composable, *, nullable: bool = False) -> Sort:
    stand_ins = (sql.Literal(INT_LATE), sql.Literal(INT_EARLY))
    return _by_value(expression, "int", stand_ins if nullable else None)


def _stand_in(t: datetime.datetime) -> sql.Composable:
    return sql.SQL("{}::timestamptz").format(sql.Literal(t.isoformat()))


def by_time(expression: str, *, nullable: bool = False) -> Sort:
    return _by_value(expression, "ts", (_stand_in(LATE), _stand_in(EARLY)) if nullable else None)


def by_truth(predicate: Display) -> Sort:
    return lambda scope, display, descending: [SortKey(predicate(scope), descending, "bool")]


# Lookups ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lookup:
    """A row read beside each ticket from `table`, LEFT JOINed as `alias`.

    A plain lookup is the table's row whose id the ticket's `key` column holds; a computed
    one is the single row that `lateral`, a SELECT over the table written as {table}, makes
    for the ticket.
    """

    alias: str
    table: str
    _: dataclasses.KW_ONLY
    key: str = ""
    lateral: str = ""

    def join(self, scope: Scope) -> sql.Composable:
        relation, alias = scope.table(self.table), sql.SQL(self.alias)
        if self.lateral:
            return sql.SQL(" LEFT JOIN LATERAL ({}) {} ON true").format(
                sql.SQL(self.lateral).format(table=relation), alias
            )
        return sql.SQL(" LEFT JOIN {relation} {a} ON {a}.id = t.{key}").format(
            relation=relation, a=alias, key=sql.Identifier(self.key)
        )


# LEFT joins on NOT NULL foreign keys keep every ticket. Only the lookups an expression
# reads are joined, in this order: PostgreSQL 15/16 drop an unused LEFT join but keep its
# key column in the ticket scan's output, which rules out an index-only scan of the ticket
# indexes.
LOOKUPS: dict[str, Lookup] = {
    lookup.alias: lookup
    for lookup in (
        Lookup("st", "ticket_statuses", key="status_id"),
        Lookup("pr", "ticket_priorities", key="priority_id"),
        Lookup("ua", "users", key="assignee_id"),
        Lookup("uc", "users", key="created_by_id"),
        Lookup("tm", "teams", key="team_id"),
        Lookup("ct", "contacts", key="contact_id"),
        Lookup(
            "tk",
            "ticket_tasks",
            lateral="SELECT count(*) AS total, count(*) FILTER (WHERE x.is_closed) AS closed "
            "FROM {table} x WHERE x.ticket_id = t.id",
        ),
    )
}


# Columns ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the list and the export: all that the registry, the compiler, the pages
    and the export know about it.

    `display` is the text the list and the CSV show ('' for empty), reading the lookups
    named in `joins`; `sort` makes its sort keys, None declaring it unsortable; `searchable`
    says whether the search box looks at its text; `value_type` is how a typed format holds it,
    and `value` the SQL of that typed value (NULL for empty) where it is not the display: the
    bigint of an integer column, the local wall-clock timestamp of a timestamp column.
    `width` is what typical content needs, in characters (a spreadsheet's column width).
    `field` declares the condition field that filters on it, if any (see FIELDS).
    """

    key: str
    label: str
    value_type: ValueType
    display: Display
    sort: Sort | None
    _: dataclasses.KW_ONLY
    default: bool = False
    joins: tuple[str, ...] = ()
    searchable: bool = True
    value: Display | None = None
    width: int = 16
    field: Field | None = None

    @property
    def sortable(self) -> bool:
        return self.sort is not None


# The kinds of column most are: each sets what its kind decides (dates are not searched).


def _text(
    key: str,
    label: str,
    expression: str,
    *,
    default: bool = False,
    joins: tuple[str, ...] = (),
    width: int = 16,
    field: Field | None = None,
) -> Column:
    """Text shown as the ticket holds it, sorted as text."""
    shown = constant(expression)
    return Column(
        key, label, "text", shown, by_text, default=default, joins=joins, width=width, field=field
    )


def _person(
    key: str, label: str, alias: str, *, default: bool = False, field: Field | None = None
) -> Column:
    """A user or contact by name, from the lookup `alias`."""
    shown = constant(person(alias))
    return Column(
        key, label, "text", shown, by_text, default=default, joins=(alias,), width=22, field=field
    )


def _ranked(
    key: str, label: str, alias: str, *, default: bool = False, field: Field | None = None
) -> Column:
    """A status or priority: its lookup's label, in the lookup's sort order."""
    a = sql.Identifier(alias)
    shown = constant(sql.SQL("{}.label").format(a))
    rank = by_number(sql.SQL("{}.sort_order").format(a))
    return Column(
        key, label, "text", shown, rank, default=default, joins=(alias,), width=14, field=field
    )


def _number(
    key: str,
    label: str,
    expression: str,
    *,
    nullable: bool = False,
    default: bool = False,
    searchable: bool = True,
    field: Field | None = None,
) -> Column:
    """An integer (an id) shown as digits."""
    x = sql.SQL(expression)
    digits = sql.SQL("coalesce({}::text, '')" if nullable else "{}::text").format(x)
    order = by_number(x, nullable=nullable)
    return Column(
        key,
        label,
        "integer",
        constant(digits),
        order,
        default=default,
        searchable=searchable,
        value=constant(x),
        width=11,
        field=field,
    )


def _instant(
    key: str,
    label: str,
    expression: str,
    *,
    nullable: bool = False,
    default: bool = False,
    field: Field | None = None,
) -> Column:
    """A timestamp, in time order; dates are not searched."""
    shown, order = timestamp(expression), by_time(expression, nullable=nullable)
    return Column(
        key,
        label,
        "timestamp",
        shown,
        order,
        default=default,
        searchable=False,
        value=local_time(expression),
        # "2026-06-01 14:05:09" and the header's filter button
        width=20,
        field=field,
    )


def _flag(key: str, label: str, predicate: Display, *, field: Field | None = None) -> Column:
    """A boolean shown as Yes/No, false first; booleans are not searched."""
    shown, order = yes_no(predicate), by_truth(predicate)
    return Column(key, label, "boolean", shown, order, searchable=False, width=10, field=field)


_TASKS = "(CASE WHEN tk.total = 0 THEN '' ELSE tk.closed::text || ' / ' || tk.total::text END)"

TEXT, NUMBER, DATE = FieldType.TEXT, FieldType.NUMBER, FieldType.DATE

# In the order the view editor offers them. Dates, booleans, tasks and the contact id are
# not searched, as the brief says; Tasks ("closed / total") has no meaningful order. A
# column's `field` is its condition field, numbered in the editor's order of fields.
COLUMNS: dict[str, Column] = {
    column.key: column
    for column in (
        _number(
            "id", "Ticket ID", "t.id", default=True, field=Field("id", "Ticket ID", NUMBER, 100)
        ),
        _text(
            "title",
            "Title",
            "t.title",
            default=True,
            width=48,
            field=Field("title", "Title", TEXT, 10),
        ),
        _ranked(
            "status",
            "Status",
            "st",
            default=True,
            field=Field("status", "Status", FieldType.STATUS, 180),
        ),
        _ranked(
            "priority",
            "Priority",
            "pr",
            default=True,
            field=Field("priority", "Priority", FieldType.PRIORITY, 190),
        ),
        _text(
            "language",
            "Language",
            "coalesce(t.language, '')",
            field=Field("language", "Language", TEXT, 90),
        ),
        _text(
            "category",
            "Category",
            "coalesce(t.category, '')",
            field=Field("category", "Category", TEXT, 30),
        ),
        _person(
            "assignee",
            "Assignee",
            "ua",
            default=True,
            field=Field("assignee", "Assignee", FieldType.PERSON, 200),
        ),
        _text(
            "team",
            "Team",
            "coalesce(tm.name, '')",
            default=True,
            joins=("tm",),
            width=20,
            field=Field("team", "Team", FieldType.TEAM, 220),
        ),
        _number(
            "contact_id",
            "Contact ID",
            "t.contact_id",
            nullable=True,
            searchable=False,
            field=Field("contact_id", "Contact ID", NUMBER, 110),
        ),
        _person(
            "contact",
            "Contact",
            "ct",
            default=True,
            field=Field("contact_name", "Contact name", TEXT, 50),
        ),
        _text(
            "sla_status",
            "SLA Status",
            "coalesce(t.sla_status, '')",
            field=Field("sla_status", "SLA status", TEXT, 80),
        ),
        _instant(
            "sla_due_at",
            "SLA Due",
            "t.sla_due_at",
            nullable=True,
            field=Field("sla_due_at", "SLA due", DATE, 160),
        ),
        _instant(
            "created_at",
            "Created",
            "t.created_at",
            default=True,
            field=Field("created_at", "Created", DATE, 120),
        ),
        _instant(
            "updated_at",
            "Last Updated",
            "t.updated_at",
            field=Field("updated_at", "Last updated", DATE, 130),
        ),
        _instant(
            "closed_at",
            "Closed",
            "t.closed_at",
            nullable=True,
            field=Field("closed_at", "Closed", DATE, 150),
        ),
        Column(
            "tags",
            "Tags",
            "list",
            constant("array_to_string(t.tags, ', ')"),
            by_text,
            width=24,
            field=Field("tags", "Tags", TEXT, 40),
        ),
        _person(
            "created_by",
            "Created By",
            "uc",
            field=Field("created_by", "Created by", FieldType.PERSON, 210),
        ),
        _text(
            "description",
            "Description",
            "t.description",
            width=60,
            field=Field("description", "Description", TEXT, 20),
        ),
        _flag(
            "snoozed",
            "Snoozed",
            _snoozed,
            field=Field("snoozed", "Snoozed", FieldType.BOOLEAN, 240),
        ),
        _instant(
            "snoozed_until",
            "Snoozed Until",
            "t.snoozed_until",
            nullable=True,
            field=Field("snoozed_until", "Snoozed until", DATE, 170),
        ),
        Column(
            "tasks",
            "Tasks",
            "text",
            constant(_TASKS),
            None,
            joins=("tk",),
            searchable=False,
            width=8,
        ),
    )
}

# Condition fields that no column shows (their SQL is the compiler's, views/conditions.py).
FIELD_ONLY: tuple[Field, ...] = (
    Field("contact_email", "Contact email", TEXT, 60),
    Field("contact_organization", "Contact organisation", TEXT, 70),
    Field("resolved_at", "Resolved", DATE, 140),
    Field("sla_breached", "SLA breached", FieldType.BOOLEAN, 230),
    Field("has_contact", "Has contact", FieldType.BOOLEAN, 250),
    Field("has_tasks", "Has tasks", FieldType.BOOLEAN, 260),
    Field("has_open_tasks", "Has open tasks", FieldType.BOOLEAN, 270),
)

# Every condition field, in the editor's order.
FIELDS: dict[str, Field] = {
    f.key: f
    for f in sorted(
        [*(c.field for c in COLUMNS.values() if c.field is not None), *FIELD_ONLY],
        key=lambda f: f.order,
    )
}

DEFAULT_COLUMNS: tuple[str, ...] = tuple(k for k, c in COLUMNS.items() if c.default)
SORTABLE_COLUMNS: tuple[str, ...] = tuple(k for k, c in COLUMNS.items() if c.sortable)
SEARCHABLE_COLUMNS: tuple[str, ...] = tuple(k for k, c in COLUMNS.items() if c.searchable)

# The first column of a file of changes since an earlier export ("upsert" or "delete"). It
# is no view's column: the file puts it before the view's own (views/compiler.py
# compile_changes), so it is not in COLUMNS and no view can choose it.
CHANGE = Column("change", "Change", "text", constant("''"), None, searchable=False, width=8)
