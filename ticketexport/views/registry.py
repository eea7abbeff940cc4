"""The names a view is built from: fields, operators, columns, built-in views and sorts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, Protocol

from psycopg import sql

from ticketexport.views import columns

# Each column is declared once, in columns.py; the registry's names for them read it.
Column = columns.Column
COLUMNS = columns.COLUMNS
DEFAULT_COLUMNS = columns.DEFAULT_COLUMNS
SORTABLE_COLUMNS = columns.SORTABLE_COLUMNS
SEARCHABLE_COLUMNS = columns.SEARCHABLE_COLUMNS
# Condition fields are declared with their columns, or beside them when no column shows them.
FieldType = columns.FieldType
Field = columns.Field
FIELDS = columns.FIELDS


@dataclasses.dataclass(frozen=True)
class Operator:
    """One comparison; value_kind tells the editor which input to render."""

    key: str
    label: str
    value_kind: str


VALUE_KINDS = (
    "none",
    "text",
    "number",
    "date",
    "relative",
    "preset",
    "ids",
    "status_type",
    "priority_ref",
)

_EMPTY = (
    Operator("is_empty", "is empty", "none"),
    Operator("is_not_empty", "is not empty", "none"),
)
_MEMBERSHIP = (
    Operator("is", "is", "ids"),
    Operator("is_not", "is not", "ids"),
    Operator("any_of", "is any of", "ids"),
    Operator("none_of", "is none of", "ids"),
)

OPERATORS: dict[FieldType, tuple[Operator, ...]] = {
    FieldType.TEXT: (
        Operator("equals", "equals", "text"),
        Operator("not_equals", "does not equal", "text"),
        Operator("contains", "contains", "text"),
        Operator("not_contains", "does not contain", "text"),
        Operator("starts_with", "starts with", "text"),
        Operator("not_starts_with", "does not start with", "text"),
        Operator("ends_with", "ends with", "text"),
        Operator("not_ends_with", "does not end with", "text"),
        *_EMPTY,
    ),
    FieldType.NUMBER: (
        Operator("eq", "=", "number"),
        Operator("ne", "≠", "number"),
        Operator("lt", "<", "number"),
        Operator("le", "≤", "number"),
        Operator("gt", ">", "number"),
        Operator("ge", "≥", "number"),
        *_EMPTY,
    ),
    FieldType.DATE: (
        Operator("on", "is on", "date"),
        Operator("before", "is before", "date"),
        Operator("after", "is after", "date"),
        Operator("on_or_before", "is on or before", "date"),
        Operator("on_or_after", "is on or after", "date"),
        Operator("within_past", "is within the past", "relative"),
        Operator("within_next", "is within the next", "relative"),
        Operator("preset", "is in", "preset"),
        *_EMPTY,
    ),
    FieldType.STATUS: (*_MEMBERSHIP, Operator("type_is", "type is", "status_type")),
    FieldType.PRIORITY: (
        *_MEMBERSHIP,
        Operator("more_important_than", "is more important than", "priority_ref"),
        Operator("less_important_than", "is less important than", "priority_ref"),
    ),
    FieldType.PERSON: (*_MEMBERSHIP, *_EMPTY),
    FieldType.TEAM: (*_MEMBERSHIP, *_EMPTY),
    FieldType.BOOLEAN: (
        Operator("is_true", "is true", "none"),
        Operator("is_false", "is false", "none"),
    ),
}

PRESETS: tuple[str, ...] = (
    "today",
    "yesterday",
    "this_week",
    "last_week",
    "next_week",
    "this_month",
    "last_month",
    "next_month",
)

RELATIVE_UNITS: tuple[str, ...] = ("hours", "days", "months")


# What a built-in view selects its open tickets by (RuleScope.owned_open): the ticket's
# team, assignee or creator, or having neither assignee nor team.
Owner = Literal["team", "assignee", "creator", "unassigned"]


class RuleScope(columns.Scope, Protocol):
    """What a built-in view's rule is written with, beside a column's Scope."""

    def open_(self) -> sql.Composable: ...

    def closed_(self) -> sql.Composable: ...

    def followed_open(self, alias: str) -> sql.Composable: ...

    def my_teams(self) -> sql.Composable: ...

    def owned_open(self, owner: Owner, condition: sql.Composable) -> sql.Composable: ...


# A built-in view's rule: its conditions, given the scope and the acting user's id.
Rule = Callable[[RuleScope, sql.Composable], list[sql.Composable]]


@dataclasses.dataclass(frozen=True)
class BuiltinView:
    """One built-in view: all that the pages, the compiler and the export know about it.

    `rule` gives its conditions. `not_snoozed` says its rule includes "not snoozed", the
    part the top-bar snoozed= replaces; `statuses` is the status type its rule keeps
    ("open", "closed"), when it keeps one, so a status-grouped page reads no other status;
    `sort` is its default order, (column, descending) levels.
    """

    key: str
    label: str
    rule: Rule
    _: dataclasses.KW_ONLY
    not_snoozed: bool = False
    statuses: str | None = None
    sort: tuple[tuple[str, bool], ...] = (("created_at", True),)


def _team_tickets(scope: RuleScope, me: sql.Composable) -> list[sql.Composable]:
    return [scope.owned_open("team", sql.SQL("(t.team_id = ANY ({}))").format(scope.my_teams()))]


def _following(scope: RuleScope, me: sql.Composable) -> list[sql.Composable]:
    followed = sql.SQL(
        "(t.id IN (SELECT f.ticket_id FROM {} f WHERE f.user_id = {} AND {}))"
    ).format(scope.table("ticket_followers"), me, scope.followed_open("f"))
    return [followed, scope.open_()]


def _recently_closed(scope: RuleScope, me: sql.Composable) -> list[sql.Composable]:
    return [
        scope.closed_(),
        sql.SQL("(t.closed_at >= {} - interval '7 days')").format(scope.now_()),
    ]


BUILTINS: dict[str, BuiltinView] = {
    v.key: v
    for v in (
        BuiltinView("all", "All tickets", lambda s, me: []),
        BuiltinView("open", "Open", lambda s, me: [s.open_()], not_snoozed=True, statuses="open"),
        BuiltinView(
            "unassigned",
            "Unassigned",
            lambda s, me: [
                s.owned_open("unassigned", sql.SQL("(t.assignee_id IS NULL AND t.team_id IS NULL)"))
            ],
            not_snoozed=True,
            statuses="open",
        ),
        BuiltinView(
            "my-tickets",
            "My tickets",
            lambda s, me: [s.owned_open("assignee", sql.SQL("(t.assignee_id = {})").format(me))],
            not_snoozed=True,
            statuses="open",
        ),
        BuiltinView(
            "created-by-me",
            "Created by me",
            lambda s, me: [s.owned_open("creator", sql.SQL("(t.created_by_id = {})").format(me))],
            not_snoozed=True,
            statuses="open",
        ),
        BuiltinView(
            "team-tickets", "My teams' tickets", _team_tickets, not_snoozed=True, statuses="open"
        ),
        BuiltinView("following", "Following", _following, not_snoozed=True, statuses="open"),
        BuiltinView(
            "overdue",
            "Overdue",
            lambda s, me: [s.open_(), sql.SQL("t.sla_breached")],
            not_snoozed=True,
            statuses="open",
        ),
        BuiltinView("snoozed", "Snoozed", lambda s, me: [s.snoozed()]),
        BuiltinView(
            "closed",
            "Closed",
            lambda s, me: [s.closed_()],
            statuses="closed",
            sort=(("closed_at", True),),
        ),
        BuiltinView(
            "recently-closed",
            "Recently closed",
            _recently_closed,
            statuses="closed",
            sort=(("closed_at", True),),
        ),
    )
}

BUILTIN_VIEWS: dict[str, str] = {key: v.label for key, v in BUILTINS.items()}

SORTS: dict[str, str] = {
    "newest": "Newest",
    "oldest": "Oldest",
    "priority": "Priority",
    "status": "Status",
    "assignee": "Assignee",
    "sla": "SLA due",
    "view": "View order",
}

FILTER_PARAMS: tuple[str, ...] = (
    "status",
    "type",
    "priority",
    "assignee",
    "team",
    "contact",
    "created_by",
    "snoozed",
)

PAGE_SIZE = 50
COUNT_CAP = 10_000
MAX_SEARCH = 200
MAX_CONDITIONS = 50
MAX_COLUMNS = 20
MAX_SORT_LEVELS = 6
MAX_TEXT_VALUE = 500
MAX_IDS = 200
MAX_RELATIVE = 1000


def operator(field_type: FieldType, key: str) -> Operator | None:
    """The operator with this key for this field type, if offered."""
    for op in OPERATORS[field_type]:
        if op.key == key:
            return op
    return None
