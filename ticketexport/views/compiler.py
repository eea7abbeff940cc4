"""The one compiler from a view to SQL: the list page and the CSV export both run its SELECT.

Semantics (tests/reference_views.py implements the same rules independently):

- Text conditions compare the displayed value, NULL shown as '' (contact fields of a
  ticket without contact are ''), case-folded by `columns.lowered`: each character's simple
  lower-case mapping under the fixed C.UTF-8 collation (İ → i, ẞ → ß, never one character
  to two), final sigma ς folded to σ. Negated
  operators are the exact complement, so "does not equal X" includes empty values. Tags
  match per tag: "contains x" holds when some tag contains x, its negation when none does;
  "is empty" means no tags.
- Numbers: "≠" includes empty values; <, ≤, >, ≥ never match an empty value.
- Dates never match an empty value except through "is empty". Days are days in the
  organisation's time zone; "within the past N" runs from now minus N to now inclusive
  (hours are exact; days and months are calendar steps in that zone); weeks start on Monday.
- People and teams: "is not" and "is none of" include tickets with nobody / no team.
- Snoozed means snoozed_until > now. The built-in views whose rule includes "not snoozed"
  (open, unassigned, my-tickets, created-by-me, team-tickets, following, overdue) let the
  top-bar `snoozed=` replace that part of their rule; everywhere else `snoozed=` is ANDed.
  `snoozed=any` therefore shows snoozed tickets in those views too. No `snoozed=` keeps the
  view's own rule.
- Search looks for the query (case-folded) inside the case-folded displayed text of the
  view's visible searchable columns; with no searchable column visible nothing matches.
- Sorting: text sorts on its first 60 displayed characters, case-folded then as typed, in
  code-point order (collation "C"), empty values last in both directions; dates, numbers
  and people/team names put empty values last in both directions; status and priority sort
  by their lookup's sort order. Every order ends with the ticket id, so it is total.
  `sort=view` is the saved view's own levels; a built-in view has levels too (its default:
  newest first, closed views by closing time), so `sort=view` is never an error.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from psycopg import sql

from ticketexport.db import VERSIONED_TABLES
from ticketexport.domain.actor import Actor
from ticketexport.views import registry
from ticketexport.views.columns import (
    COLUMNS,
    LOOKUPS,
    KeyKind,
    SortKey,
    lowered,
    person,
    text_keys,
)
from ticketexport.views.model import (
    Condition,
    ListRequest,
    ResolvedView,
    SortLevel,
)

Cast = Literal["text", "bigint", "bigint[]", "text[]", "timestamptz", "date", "integer"]

_CASTS: dict[Cast, sql.SQL] = {
    "text": sql.SQL("::text"),
    "bigint": sql.SQL("::bigint"),
    "bigint[]": sql.SQL("::bigint[]"),
    "text[]": sql.SQL("::text[]"),
    "timestamptz": sql.SQL("::timestamptz"),
    "date": sql.SQL("::date"),
    "integer": sql.SQL("::integer"),
}


class Binder:
    """Turns values into bound named placeholders, or into quoted literals for COPY."""

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self.params: dict[str, Any] = {}

    def __call__(self, value: Any, cast: Cast) -> sql.Composable:
        if self.inline:
            if isinstance(value, list):
                # psycopg quotes array literals with their element types; the cast fixes the type
                inner: sql.Composable = sql.SQL("ARRAY[{}]").format(
                    sql.SQL(", ").join(sql.Literal(v) for v in value)
                )
                return sql.Composed([inner, _CASTS[cast]])
            return sql.Composed([sql.Literal(value), _CASTS[cast]])
        name = f"p{len(self.params)}"
        self.params[name] = value
        return sql.Composed([sql.Placeholder(name), _CASTS[cast]])


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A SELECT of display strings per column (typed values where `typed`, see compile_list),
    then the ticket id, then the sort keys."""

    statement: sql.Composed
    params: dict[str, Any]
    columns: tuple[registry.Column, ...]
    key_kinds: tuple[KeyKind, ...]
    key_desc: tuple[bool, ...]
    signature: str


class _Context:
    """Everything one compilation needs: the binder, the evaluation instant, zone, actor."""

    def __init__(
        self,
        binder: Binder,
        now: datetime.datetime,
        tz: str,
        actor: Actor,
        *,
        snapshot: str | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("the evaluation instant must be timezone-aware")
        self.bind = binder
        self.now = now
        self.tz = tz
        self.actor = actor
        # A recorded pg_snapshot: read every table as it was then (see _as_of below).
        self.snapshot = snapshot
        # Aliases of the lookups (columns.LOOKUPS) the expressions built so far read.
        self.joins: set[str] = set()
        # The search's lookup matches, found beforehand (see search_lookups), by column.
        self.search_matches: Mapping[str, list[int]] | None = None

    def table(self, name: str) -> sql.Composable:
        """The relation a table is read through. Every table the compiled SQL reads is named
        here and nowhere else: as of a snapshot, each one is its versions' `<table>_as_of`
        function (sql/migrations/0007_versions.sql), which PostgreSQL inlines."""
        if self.snapshot is None:
            return sql.Identifier(name)
        if name not in VERSIONED_TABLES:
            raise AssertionError(f"{name} keeps no versions and cannot be read as of a snapshot")
        return sql.SQL("{}({}::pg_snapshot)").format(
            sql.Identifier(f"{name}_as_of"), sql.Literal(self.snapshot)
        )

    def take_joins(self) -> set[str]:
        """The lookup joins read since the last call, so each part's needs are known apart."""
        found, self.joins = self.joins, set()
        return found

    def now_(self) -> sql.Composable:
        return self.bind(self.now, "timestamptz")

    def tz_(self) -> sql.Composable:
        return self.bind(self.tz, "text")

    def local_now(self) -> sql.Composable:
        return sql.SQL("({} AT TIME ZONE {})").format(self.now_(), self.tz_())

    def at_zone(self, local: sql.Composable) -> sql.Composable:
        """A local wall-clock timestamp in the organisation's zone as an instant."""
        return sql.SQL("(({}) AT TIME ZONE {})").format(local, self.tz_())

    def snoozed(self) -> sql.Composable:
        return sql.SQL("(t.snoozed_until IS NOT NULL AND t.snoozed_until > {})").format(self.now_())

    def not_snoozed(self) -> sql.Composable:
        return sql.SQL("(t.snoozed_until IS NULL OR t.snoozed_until <= {})").format(self.now_())

    def open_(self) -> sql.Composable:
        return _open(self)

    def closed_(self) -> sql.Composable:
        return _closed(self)


# Display text of each column ------------------------------------------------------------


def display(column: str, ctx: _Context) -> sql.Composable:
    """The SQL text expression for one column's displayed value ('' for empty)."""
    declared = COLUMNS[column]
    ctx.joins.update(declared.joins)
    return declared.display(ctx)


def typed_value(column: str, ctx: _Context) -> sql.Composable:
    """The SQL of one column's typed value (columns.Column.value), its display where it has
    none."""
    declared = COLUMNS[column]
    if declared.value is None:
        return display(column, ctx)
    ctx.joins.update(declared.joins)
    return declared.value(ctx)


# Conditions -----------------------------------------------------------------------------

# Details of a ticket's contact that no column shows; every other text field is a column's
# displayed value (contact_name is the Contact column's).
_CONTACT_DETAILS = {"contact_email": "email", "contact_organization": "organization"}


def _text_field(field: str, ctx: _Context) -> sql.Composable:
    if field in _CONTACT_DETAILS:
        ctx.joins.add("ct")
        return sql.SQL("coalesce(ct.{}, '')").format(sql.Identifier(_CONTACT_DETAILS[field]))
    return display("contact" if field == "contact_name" else field, ctx)


_ID_FIELDS = {
    "id": sql.SQL("t.id"),
    "contact_id": sql.SQL("t.contact_id"),
    "assignee": sql.SQL("t.assignee_id"),
    "created_by": sql.SQL("t.created_by_id"),
    "team": sql.SQL("t.team_id"),
}

_NEGATED_TEXT = {
    "not_equals": "equals",
    "not_contains": "contains",
    "not_starts_with": "starts_with",
    "not_ends_with": "ends_with",
}


def _text_match(op: str, value: sql.Composable, pattern: sql.Composable) -> sql.Composable:
    lv, lp = lowered(value), lowered(pattern)
    if op == "equals":
        return sql.SQL("({} = {})").format(lv, lp)
    if op == "contains":
        return sql.SQL("(strpos({}, {}) > 0)").format(lv, lp)
    if op == "starts_with":
        return sql.SQL("(left({0}, length({1})) = {1})").format(lv, lp)
    if op == "ends_with":
        return sql.SQL("(right({0}, length({1})) = {1})").format(lv, lp)
    raise AssertionError(op)


def _text_condition(c: Condition, ctx: _Context) -> sql.Composable:
    positive = _NEGATED_TEXT.get(c.operator, c.operator)
    negate = positive != c.operator
    if c.field == "tags":
        if c.operator in ("is_empty", "is_not_empty"):
            return sql.SQL("(cardinality(t.tags) {} 0)").format(
                sql.SQL("=" if c.operator == "is_empty" else ">")
            )
        match = _text_match(positive, sql.SQL("tag"), ctx.bind(c.value, "text"))
        exists = sql.SQL("EXISTS (SELECT 1 FROM unnest(t.tags) AS u(tag) WHERE {})").format(match)
        return sql.SQL("(NOT {})").format(exists) if negate else exists
    expr = _text_field(c.field, ctx)
    if c.operator == "is_empty":
        return sql.SQL("({} = '')").format(expr)
    if c.operator == "is_not_empty":
        return sql.SQL("({} <> '')").format(expr)
    match = _text_match(positive, expr, ctx.bind(c.value, "text"))
    return sql.SQL("(NOT {})").format(match) if negate else match


_NUMBER_OPS: dict[str, sql.SQL] = {
    "eq": sql.SQL("="),
    "lt": sql.SQL("<"),
    "le": sql.SQL("<="),
    "gt": sql.SQL(">"),
    "ge": sql.SQL(">="),
}


def _number_condition(c: Condition, ctx: _Context) -> sql.Composable:
    x = _ID_FIELDS[c.field]
    if c.operator == "is_empty":
        return sql.SQL("({} IS NULL)").format(x)
    if c.operator == "is_not_empty":
        return sql.SQL("({} IS NOT NULL)").format(x)
    value = ctx.bind(c.value, "bigint")
    if c.operator == "ne":
        return sql.SQL("({} IS DISTINCT FROM {})").format(x, value)
    return sql.SQL("({} {} {})").format(x, _NUMBER_OPS[c.operator], value)


def _date_field(field: str) -> sql.Composable:
    column = {"snoozed_until": "snoozed_until"}.get(field, field)
    return sql.SQL("t.{}").format(sql.Identifier(column))


def _day_start(day: datetime.date, ctx: _Context) -> sql.Composable:
    return ctx.at_zone(sql.SQL("{}::timestamp").format(ctx.bind(day.isoformat(), "date")))


def _between(x: sql.Composable, low: sql.Composable, high: sql.Composable) -> sql.Composable:
    """Half-open [low, high)."""
    return sql.SQL("({x} >= {low} AND {x} < {high})").format(x=x, low=low, high=high)


_PRESET_RANGES: dict[str, tuple[str, str, str]] = {
    # preset: (truncate to, start offset, end offset) in local wall-clock time
    "today": ("day", "0 days", "1 day"),
    "yesterday": ("day", "-1 day", "0 days"),
    "this_week": ("week", "0 days", "7 days"),
    "last_week": ("week", "-7 days", "0 days"),
    "next_week": ("week", "7 days", "14 days"),
    "this_month": ("month", "0 months", "1 month"),
    "last_month": ("month", "-1 month", "0 months"),
    "next_month": ("month", "1 month", "2 months"),
}


def _date_condition(c: Condition, ctx: _Context) -> sql.Composable:
    x = _date_field(c.field)
    op = c.operator
    if op == "is_empty":
        return sql.SQL("({} IS NULL)").format(x)
    if op == "is_not_empty":
        return sql.SQL("({} IS NOT NULL)").format(x)
    if op in ("on", "before", "after", "on_or_before", "on_or_after"):
        day = datetime.date.fromisoformat(c.value)
        next_day = day + datetime.timedelta(days=1)
        if op == "on":
            return _between(x, _day_start(day, ctx), _day_start(next_day, ctx))
        if op == "before":
            return sql.SQL("({} < {})").format(x, _day_start(day, ctx))
        if op == "after":
            return sql.SQL("({} >= {})").format(x, _day_start(next_day, ctx))
        if op == "on_or_before":
            return sql.SQL("({} < {})").format(x, _day_start(next_day, ctx))
        return sql.SQL("({} >= {})").format(x, _day_start(day, ctx))
    if op in ("within_past", "within_next"):
        amount, unit = c.value["amount"], c.value["unit"]
        sign = -1 if op == "within_past" else 1
        if unit == "hours":
            other: sql.Composable = sql.SQL("({} + make_interval(hours => {}))").format(
                ctx.now_(), ctx.bind(sign * amount, "integer")
            )
        else:
            # Calendar days and months step in the organisation's zone, not the session's.
            interval = sql.SQL(
                "make_interval(days => {})" if unit == "days" else "make_interval(months => {})"
            )
            other = ctx.at_zone(
                sql.SQL("{} + {}").format(
                    ctx.local_now(), interval.format(ctx.bind(sign * amount, "integer"))
                )
            )
        low, high = (other, ctx.now_()) if sign < 0 else (ctx.now_(), other)
        return sql.SQL("({x} >= {low} AND {x} <= {high})").format(x=x, low=low, high=high)
    if op == "preset":
        unit, start, end = _PRESET_RANGES[c.value]
        base = sql.SQL("date_trunc({}, {})").format(sql.Literal(unit), ctx.local_now())
        return _between(
            x,
            ctx.at_zone(sql.SQL("{} + {}::interval").format(base, sql.Literal(start))),
            ctx.at_zone(sql.SQL("{} + {}::interval").format(base, sql.Literal(end))),
        )
    raise AssertionError(op)


def _membership(
    x: sql.Composable, op: str, value: list[Any], cast: Cast, *, nullable: bool, ctx: _Context
) -> sql.Composable:
    array = ctx.bind(list(value), cast)
    positive = sql.SQL("({} = ANY({}))").format(x, array)
    if op in ("is", "any_of"):
        return positive
    if nullable:
        return sql.SQL("({} IS NULL OR NOT {})").format(x, positive)
    return sql.SQL("(NOT {})").format(positive)


def _has_tasks(ctx: _Context, which: str = "") -> sql.Composable:
    return sql.SQL("EXISTS (SELECT 1 FROM {} x WHERE x.ticket_id = t.id{})").format(
        ctx.table("ticket_tasks"), sql.SQL(which)
    )


_BOOLEANS: dict[str, Callable[[_Context], sql.Composable]] = {
    "sla_breached": lambda ctx: sql.SQL("t.sla_breached"),
    "snoozed": lambda ctx: ctx.snoozed(),
    "has_contact": lambda ctx: sql.SQL("(t.contact_id IS NOT NULL)"),
    "has_tasks": _has_tasks,
    "has_open_tasks": lambda ctx: _has_tasks(ctx, " AND NOT x.is_closed"),
}


def condition_sql(c: Condition, ctx: _Context) -> sql.Composable:
    """One saved-view condition as a boolean SQL expression that is never NULL."""
    field = registry.FIELDS[c.field]
    kind = field.type
    if kind is registry.FieldType.TEXT:
        return _text_condition(c, ctx)
    if kind is registry.FieldType.NUMBER:
        return _number_condition(c, ctx)
    if kind is registry.FieldType.DATE:
        return _date_condition(c, ctx)
    if kind is registry.FieldType.STATUS:
        ctx.joins.add("st")
        if c.operator == "type_is":
            return sql.SQL("(st.status_type = {})").format(ctx.bind(c.value, "text"))
        return _membership(
            sql.SQL("st.developer_name"), c.operator, c.value, "text[]", nullable=False, ctx=ctx
        )
    if kind is registry.FieldType.PRIORITY:
        ctx.joins.add("pr")
        if c.operator in ("more_important_than", "less_important_than"):
            # An unknown reference priority makes the subquery NULL; coalesce keeps it false.
            return sql.SQL(
                "coalesce(pr.sort_order {} (SELECT p.sort_order FROM {} p "
                "WHERE p.developer_name = {}), false)"
            ).format(
                sql.SQL("<" if c.operator == "more_important_than" else ">"),
                ctx.table("ticket_priorities"),
                ctx.bind(c.value, "text"),
            )
        return _membership(
            sql.SQL("pr.developer_name"), c.operator, c.value, "text[]", nullable=False, ctx=ctx
        )
    if kind in (registry.FieldType.PERSON, registry.FieldType.TEAM):
        x = _ID_FIELDS[c.field]
        if c.operator == "is_empty":
            return sql.SQL("({} IS NULL)").format(x)
        if c.operator == "is_not_empty":
            return sql.SQL("({} IS NOT NULL)").format(x)
        return _membership(x, c.operator, c.value, "bigint[]", nullable=True, ctx=ctx)
    if kind is registry.FieldType.BOOLEAN:
        expr = _BOOLEANS[c.field](ctx)
        return expr if c.operator == "is_true" else sql.SQL("(NOT {})").format(expr)
    raise AssertionError(kind)


# Built-in views and top-bar filters -------------------------------------------------------


# Lookups become arrays of ids evaluated once (an InitPlan), so the ticket indexes that
# lead with status_id, team_id or id can use them as index conditions whatever the
# planner's row estimates for the tiny lookup tables.
def _lookup_where(
    ctx: _Context, key: str, table: str, column: str, value: sql.Composable
) -> sql.Composable:
    """Tickets whose `key` is the id of a `table` row with `column` = `value`."""
    return sql.SQL("(t.{} = ANY (ARRAY(SELECT s.id FROM {} s WHERE s.{} = {})))").format(
        sql.Identifier(key), ctx.table(table), sql.Identifier(column), value
    )


def _status_where(ctx: _Context, column: str, value: sql.Composable) -> sql.Composable:
    return _lookup_where(ctx, "status_id", "ticket_statuses", column, value)


def _open(ctx: _Context) -> sql.Composable:
    return _status_where(ctx, "status_type", sql.Literal("open"))


def _closed(ctx: _Context) -> sql.Composable:
    return _status_where(ctx, "status_type", sql.Literal("closed"))


def _builtin_rule(key: str, ctx: _Context) -> list[sql.Composable]:
    me = ctx.bind(ctx.actor.id, "bigint")
    # Every view's rule is built, in declaration order, so the placeholders they bind keep
    # their numbers whichever view is compiled.
    rules = {k: builtin.rule(ctx, me) for k, builtin in registry.BUILTINS.items()}
    return rules[key]


def _not_snoozed_view(view: ResolvedView) -> bool:
    return view.builtin is not None and registry.BUILTINS[view.builtin].not_snoozed


def _filters(view: ResolvedView, filters: Mapping[str, str], ctx: _Context) -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    snoozed = filters.get("snoozed")
    if _not_snoozed_view(view) and snoozed is None:
        parts.append(ctx.not_snoozed())
    if snoozed == "exclude":
        parts.append(ctx.not_snoozed())
    elif snoozed == "only":
        parts.append(ctx.snoozed())
    if "status" in filters:
        parts.append(_status_where(ctx, "developer_name", ctx.bind(filters["status"], "text")))
    if "type" in filters:
        parts.append(_status_where(ctx, "status_type", ctx.bind(filters["type"], "text")))
    if "priority" in filters:
        value = ctx.bind(filters["priority"], "text")
        parts.append(
            _lookup_where(ctx, "priority_id", "ticket_priorities", "developer_name", value)
        )
    for key, column in (
        ("assignee", "assignee_id"),
        ("team", "team_id"),
        ("contact", "contact_id"),
        ("created_by", "created_by_id"),
    ):
        if key in filters:
            x = sql.SQL("t.{}").format(sql.Identifier(column))
            if filters[key] == "none":
                parts.append(sql.SQL("({} IS NULL)").format(x))
            else:
                parts.append(sql.SQL("({} = {})").format(x, ctx.bind(int(filters[key]), "bigint")))
    return parts


# Search ---------------------------------------------------------------------------------

# A term this long holds a trigram, so pg_trgm's indexes (sql/migrations/0013_search_trigrams.sql)
# find it; a shorter one is looked for row by row.
TRIGRAM_TERM = 3

# The folded text the trigram index of a ticket's own column holds, where it is not the
# column's display: array_to_string is only stable, and an index needs an immutable
# function giving the same text.
_INDEXED_TEXT: dict[str, sql.Composable] = {"tags": sql.SQL("ticketexport_tags_text(t.tags)")}


def _search_pattern(q: str, ctx: _Context) -> sql.Composable:
    """The folded LIKE pattern `%q%`. LIKE's wildcards and escape character stand for
    themselves in the query; folding leaves them (and the added ones) as they are, so the
    pattern is folded whole."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return lowered(ctx.bind(f"%{escaped}%", "text"))


def search_predicate(q: str, columns: tuple[str, ...], ctx: _Context) -> sql.Composable:
    """The search box's condition: the folded query inside the folded displayed text of
    one of the view's visible searchable columns (nothing matches without one).

    A query of TRIGRAM_TERM characters or more is written so the trigram indexes answer
    it, with the same meaning: `folded text LIKE '%query%'` (the query's LIKE wildcards
    escaped) on a ticket's own columns, and for a column shown from a lookup (status,
    priority, people, team) the ticket's reference among the lookup rows whose displayed
    text holds it: a ticket without one shows '', which holds no query. Shorter queries
    hold no trigram to look up and are searched row by row.
    """
    searchable = [c for c in columns if COLUMNS[c].searchable]
    if not searchable:
        return sql.SQL("false")
    if len(q) < TRIGRAM_TERM:
        needle = lowered(ctx.bind(q, "text"))
        return sql.SQL("({})").format(
            sql.SQL(" OR ").join(
                sql.SQL("strpos({}, {}) > 0").format(lowered(display(c, ctx)), needle)
                for c in searchable
            )
        )
    pattern = _search_pattern(q, ctx)
    parts: list[sql.Composable] = []
    for key in searchable:
        column = COLUMNS[key]
        if not column.joins:
            text = _INDEXED_TEXT.get(key) or column.display(ctx)
            parts.append(sql.SQL("{} LIKE {}").format(lowered(text), pattern))
            continue
        (alias,) = column.joins
        lookup = LOOKUPS[alias]
        assert lookup.key, "a searchable column reads a plain lookup"
        if ctx.search_matches is not None and key in ctx.search_matches:
            # Known ids: the planner estimates the tickets they hold from its statistics.
            parts.append(
                sql.SQL("t.{} = ANY ({})").format(
                    sql.Identifier(lookup.key),
                    ctx.bind(ctx.search_matches[key], "bigint[]"),
                )
            )
            continue
        # The lookup's rows under the alias the display reads; not joined to the tickets.
        parts.append(
            sql.SQL(
                "t.{key} = ANY (ARRAY(SELECT {a}.id FROM {table} {a} WHERE {text} LIKE {pattern}))"
            ).format(
                key=sql.Identifier(lookup.key),
                a=sql.SQL(alias),
                table=ctx.table(lookup.table),
                text=lowered(column.display(ctx)),
                pattern=pattern,
            )
        )
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))


def search_lookups(
    view: ResolvedView, request: ListRequest, actor: Actor, *, now: datetime.datetime, tz: str
) -> tuple[sql.Composed, dict[str, Any], tuple[str, ...]] | None:
    """One statement finding, for each visible lookup column (status, priority, people,
    team), the ids of the lookup rows whose displayed text holds a trigram-long search
    term: one row, an id array per column. None when the search has no such column.

    A list page runs it first and hands the ids to compile_list and compile_count
    (`search_matches`): given a subquery's ids instead, the planner guesses the share of
    tickets they hold (most of them, for a status or priority), and would read every
    ticket rather than the trigram indexes for a term that matches few.
    """
    if len(request.q) < TRIGRAM_TERM:
        return None
    keys = tuple(c for c in view.definition.columns if COLUMNS[c].searchable and COLUMNS[c].joins)
    if not keys:
        return None
    ctx = _Context(Binder(), now, tz, actor)
    pattern = _search_pattern(request.q, ctx)
    arrays = []
    for key in keys:
        column = COLUMNS[key]
        (alias,) = column.joins
        lookup = LOOKUPS[alias]
        arrays.append(
            sql.SQL("ARRAY(SELECT {a}.id FROM {table} {a} WHERE {text} LIKE {pattern})").format(
                a=sql.SQL(alias),
                table=ctx.table(lookup.table),
                text=lowered(column.display(ctx)),
                pattern=pattern,
            )
        )
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(arrays)), ctx.bind.params, keys


def _followed_open(ctx: _Context) -> sql.Composable:
    """The ids of the open tickets the acting user follows: the "following" view's rule,
    read from the followers index and then the ticket id index alone.

    The followed ids are an array evaluated once, so they are an index condition on the
    ticket id. Only used where nothing else can drive the scan: as a filter over many rows
    the array would be searched element by element for each row.
    """
    return sql.SQL(
        "SELECT t.id FROM {} t WHERE t.id = ANY (ARRAY(SELECT f.ticket_id "
        "FROM {} f WHERE f.user_id = {})) AND {}"
    ).format(
        ctx.table("tickets"),
        ctx.table("ticket_followers"),
        ctx.bind(ctx.actor.id, "bigint"),
        _open(ctx),
    )


def where_clause(
    view: ResolvedView, request: ListRequest, ctx: _Context, *, rule: bool = True
) -> sql.Composable:
    """The view's conditions; `rule=False` leaves out the built-in view's own rule (for a
    caller that reads only the tickets the rule selects)."""
    d = view.definition
    parts: list[sql.Composable] = []
    if view.builtin is not None and rule:
        parts.extend(_builtin_rule(view.builtin, ctx))
    parts.extend(condition_sql(c, ctx) for c in d.conditions_and)
    if d.conditions_or:
        parts.append(
            sql.SQL("({})").format(
                sql.SQL(" OR ").join(condition_sql(c, ctx) for c in d.conditions_or)
            )
        )
    parts.extend(_filters(view, request.filters, ctx))
    if request.q:
        parts.append(search_predicate(request.q, d.columns, ctx))
    if not parts:
        return sql.SQL("true")
    return sql.SQL(" AND ").join(parts)


# Sorting --------------------------------------------------------------------------------

_NAMED_SORTS: dict[str, tuple[SortLevel, ...]] = {
    "newest": (SortLevel("created_at", True),),
    "oldest": (SortLevel("created_at", False),),
    "priority": (SortLevel("priority", False), SortLevel("created_at", True)),
    "status": (SortLevel("status", False), SortLevel("created_at", True)),
    "assignee": (SortLevel("assignee", False), SortLevel("created_at", True)),
    "sla": (SortLevel("sla_due_at", False),),
}


def sort_levels(view: ResolvedView, sort: str | None) -> tuple[SortLevel, ...]:
    """The levels of the chosen sort, ending with the ticket id (same direction as the last)."""
    levels = view.definition.sort if sort in (None, "view") else _NAMED_SORTS[sort]
    if levels[-1].column != "id" and all(level.column != "id" for level in levels):
        levels = (*levels, SortLevel("id", levels[-1].descending))
    return levels


def _keys_for(level: SortLevel, ctx: _Context) -> list[SortKey]:
    column = COLUMNS[level.column]
    assert column.sort is not None  # a view's sort levels are sortable columns (model.py)
    ctx.joins.update(column.joins)
    return column.sort(ctx, column.display, level.descending)


def sort_keys(levels: tuple[SortLevel, ...], ctx: _Context) -> list[SortKey]:
    keys: list[SortKey] = []
    for level in levels:
        keys.extend(_keys_for(level, ctx))
    return keys


_KEY_CASTS: dict[KeyKind, Cast] = {
    "ts": "timestamptz",
    "int": "bigint",
    "text": "text",
    "bool": "text",
}


def _bind_key(key: SortKey, value: Any, ctx: _Context) -> sql.Composable:
    if key.kind == "bool":
        return sql.SQL("{}::boolean").format(sql.Literal(bool(value)))
    bound = ctx.bind(value, _KEY_CASTS[key.kind])
    if key.kind == "text":
        return sql.SQL('({} COLLATE "C")').format(bound)
    return bound


def keyset_after(keys: list[SortKey], values: tuple[Any, ...], ctx: _Context) -> sql.Composable:
    """Rows strictly after the row whose sort key values are `values`, in the keys' order."""
    bound = [_bind_key(k, v, ctx) for k, v in zip(keys, values, strict=True)]
    if len({k.descending for k in keys}) == 1:
        # One direction: a row comparison, which a matching btree index answers as a range.
        return sql.SQL("(({}) {} ({}))").format(
            sql.SQL(", ").join(k.expr for k in keys),
            sql.SQL("<" if keys[0].descending else ">"),
            sql.SQL(", ").join(bound),
        )
    clause: sql.Composable | None = None
    for key, value in reversed(list(zip(keys, bound, strict=True))):
        beyond = sql.SQL("({} {} {})").format(
            key.expr, sql.SQL("<" if key.descending else ">"), value
        )
        if clause is None:
            clause = beyond
        else:
            clause = sql.SQL("({} OR ({} = {} AND {}))").format(beyond, key.expr, value, clause)
    assert clause is not None  # there is always at least the id key
    first, first_value = keys[0], bound[0]
    # The redundant leading bound lets the planner use an index range on the first key.
    return sql.SQL("({} {} {} AND {})").format(
        first.expr, sql.SQL("<=" if first.descending else ">="), first_value, clause
    )


def _signature(view: ResolvedView, levels: tuple[SortLevel, ...]) -> str:
    raw = json.dumps([view.key, [(s.column, s.descending) for s in levels]])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _tickets(ctx: _Context) -> sql.Composable:
    return sql.SQL("{} t").format(ctx.table("tickets"))


def _from(joins: set[str], ctx: _Context, tickets: sql.Composable | None = None) -> sql.Composable:
    """The tickets (all of them, or `tickets` as `t`) with the lookups `joins` names."""
    return sql.Composed(
        [
            _tickets(ctx) if tickets is None else tickets,
            *(lookup.join(ctx) for alias, lookup in LOOKUPS.items() if alias in joins),
        ]
    )


def _by_id(ids: sql.Composable, ctx: _Context, alias: str = "picked") -> sql.Composable:
    """Tickets (as `t`) by the ids a subquery selects, each fetched on its own.

    OFFSET 0 keeps the lateral lookup a per-id index probe whatever the row estimates.
    """
    return sql.SQL(
        "({ids}) AS {a} CROSS JOIN LATERAL (SELECT * FROM {tickets} x WHERE x.id = {a}.id "
        "OFFSET 0) t"
    ).format(ids=ids, a=sql.Identifier(alias), tickets=ctx.table("tickets"))


# Sorts led by a lookup (priority, status, assignee) with few distinct values: one page is
# the first rows of each group, each read in (group, created_at DESC, id DESC) index order,
# merged. Sorting the whole view by a joined column would read every row of it instead.
# By sort: the lookup table of the groups and the ticket column that refers to it.
_GROUPED_SORTS: dict[str, tuple[str, str]] = {
    "priority": ("ticket_priorities", "priority_id"),
    "status": ("ticket_statuses", "status_id"),
    "assignee": ("users", "assignee_id"),
}


def _group_keys(sort: str) -> list[SortKey]:
    if sort == "assignee":
        return text_keys(person("g"), False)
    return [SortKey(sql.SQL("g.sort_order"), False, "int")]


def _status_groups(
    view: ResolvedView, filters: Mapping[str, str], ctx: _Context
) -> list[sql.Composable]:
    """Conditions on the status alone, so statuses the view excludes are never read."""
    parts: list[sql.Composable] = []
    statuses = None if view.builtin is None else registry.BUILTINS[view.builtin].statuses
    if statuses is not None:
        parts.append(sql.SQL("g.status_type = {}").format(sql.Literal(statuses)))
    if "type" in filters:
        parts.append(sql.SQL("g.status_type = {}").format(ctx.bind(filters["type"], "text")))
    if "status" in filters:
        parts.append(sql.SQL("g.developer_name = {}").format(ctx.bind(filters["status"], "text")))
    return parts


def _grouped_page(
    view: ResolvedView,
    request: ListRequest,
    where: sql.Composable,
    joins: set[str],
    after: tuple[Any, ...] | None,
    limit: int,
    ctx: _Context,
) -> sql.Composable:
    """The ids that can be on the page (rows of `where`, which reads `joins`), found group
    by group."""
    sort = request.sort
    assert sort is not None  # only called for the grouped named sorts
    table, column = _GROUPED_SORTS[sort]
    group_keys = _group_keys(sort)
    prune: sql.Composable = sql.SQL("true")
    if sort == "status":
        prune = sql.SQL(" AND ").join([prune, *_status_groups(view, request.filters, ctx)])
    if after is not None:
        # Groups wholly before the cursor hold nothing for this page; skip them unread.
        lead = after[: len(group_keys)]
        prune = sql.SQL("{} AND ({}) >= ({})").format(
            prune,
            sql.SQL(", ").join(k.expr for k in group_keys),
            sql.SQL(", ").join(_bind_key(k, v, ctx) for k, v in zip(group_keys, lead, strict=True)),
        )
    newest = sql.SQL("ORDER BY t.created_at DESC, t.id DESC LIMIT {}").format(sql.Literal(limit))
    src = _from(joins, ctx)
    teams: sql.Composable | None = None
    if view.builtin == "team-tickets":
        # Team by team as well: each (team, group) pair is one range of the
        # (team_id, group, created_at, id) indexes, so groups with no ticket in the user's
        # teams cost one index probe instead of a walk through all their tickets.
        teams = sql.SQL("(SELECT m.team_id FROM {} m WHERE m.user_id = {}) mt").format(
            ctx.table("team_memberships"), ctx.bind(ctx.actor.id, "bigint")
        )
        where = sql.SQL("t.team_id = mt.team_id AND {}").format(where)
    groups = sql.SQL("{} g").format(ctx.table(table))
    if teams is not None:
        groups = sql.SQL("{} CROSS JOIN {}").format(groups, teams)
    per_group = sql.SQL(
        "SELECT x.id FROM {groups} CROSS JOIN LATERAL (SELECT t.id FROM {src} "
        "WHERE t.{column} = g.id AND {where} {newest}) x WHERE {prune}"
    ).format(
        groups=groups,
        src=src,
        column=sql.Identifier(column),
        where=where,
        newest=newest,
        prune=prune,
    )
    if sort == "assignee":
        unassigned = sql.SQL("SELECT t.id FROM {} WHERE t.assignee_id IS NULL AND {} {}").format(
            src, where, newest
        )
        if teams is not None:
            unassigned = sql.SQL("SELECT x.id FROM {} CROSS JOIN LATERAL ({}) x").format(
                teams, unassigned
            )
        per_group = sql.SQL("{} UNION ALL ({})").format(per_group, unassigned)
    return per_group


def compile_list(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    after: tuple[Any, ...] | None = None,
    limit: int | None = None,
    inline: bool = False,
    grouped: bool = False,
    followed_first: bool = False,
    snapshot: str | None = None,
    typed: bool = False,
    search_matches: Mapping[str, list[int]] | None = None,
) -> Compiled:
    """The list SELECT: display columns, ticket id, sort keys; keyset `after`, `limit` rows.

    `typed` selects each column's typed value instead of its display (for a typed export
    format); the rows and their order are the same.

    `grouped` reads a page of a priority/status/assignee sort group by group (see
    _grouped_page); the rows are the same either way, only the plan differs. It pays off
    for large views and costs more for small selective ones, so the caller decides.

    `search_matches` holds the search's lookup matches found beforehand (search_lookups).

    `followed_first` reads a page of the "following" view from the followed open tickets
    (_followed_open), sorts them and fetches only the page's rows: the plan for a user who
    follows a few thousand open tickets at most. With many more, walking the list's order
    finds the page's rows sooner, and the planner does that without it.
    """
    ctx = _Context(Binder(inline=inline), now, tz, actor, snapshot=snapshot)
    ctx.search_matches = search_matches
    columns = view.definition.columns
    levels = sort_levels(view, request.sort)
    keys = sort_keys(levels, ctx)
    key_joins = ctx.take_joins()
    use_groups = grouped and limit is not None and request.sort in _GROUPED_SORTS
    followed = (
        followed_first and view.builtin == "following" and limit is not None and not use_groups
    )
    where = where_clause(view, request, ctx, rule=not followed)
    where_joins = ctx.take_joins()
    if after is not None:
        where = sql.SQL("{} AND {}").format(where, keyset_after(keys, after, ctx))
        where_joins |= key_joins
    shown_cols = [(typed_value if typed else display)(c, ctx) for c in columns]
    joins = key_joins | where_joins | ctx.take_joins()
    order = sql.SQL(", ").join(
        sql.SQL("{} {}").format(k.expr, sql.SQL("DESC" if k.descending else "ASC")) for k in keys
    )
    src = _from(joins, ctx)
    if use_groups:
        assert limit is not None  # use_groups implies it
        src = _from(
            joins,
            ctx,
            _by_id(_grouped_page(view, request, where, where_joins, after, limit, ctx), ctx),
        )
        where = sql.SQL("true")
    elif followed:
        # Sort the followed open tickets (the rest of the conditions applied), then fetch
        # and format only the page's rows.
        picked = sql.SQL("SELECT t.id FROM {} WHERE {} ORDER BY {} LIMIT {}").format(
            _from(where_joins | key_joins, ctx, _by_id(_followed_open(ctx), ctx, "followed")),
            where,
            order,
            sql.Literal(limit),
        )
        src = _from(joins, ctx, _by_id(picked, ctx))
        where = sql.SQL("true")
    statement = sql.SQL(
        "SELECT {cols}, t.id, {keys} FROM {src} WHERE {where} ORDER BY {order}{limit}"
    ).format(
        cols=sql.SQL(", ").join(shown_cols),
        keys=sql.SQL(", ").join(k.expr for k in keys),
        src=src,
        where=where,
        order=order,
        limit=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""),
    )
    return Compiled(
        statement=statement,
        params=ctx.bind.params,
        columns=tuple(COLUMNS[c] for c in columns),
        key_kinds=tuple(k.kind for k in keys),
        key_desc=tuple(k.descending for k in keys),
        signature=_signature(view, levels),
    )


def compile_count(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    cap: int = registry.COUNT_CAP,
    search_matches: Mapping[str, list[int]] | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """Counts the view's rows, stopping at cap + 1 so a huge view stays cheap."""
    ctx = _Context(Binder(), now, tz, actor)
    ctx.search_matches = search_matches
    where = where_clause(view, request, ctx)
    src = _from(ctx.joins, ctx)
    statement = sql.SQL(
        "SELECT count(*) FROM (SELECT 1 FROM {src} WHERE {where} LIMIT {cap}) AS limited"
    ).format(src=src, where=where, cap=sql.Literal(cap + 1))
    return statement, ctx.bind.params


@dataclasses.dataclass(frozen=True)
class CompiledExport:
    """A whole view as self-contained statements (values inlined as quoted literals, so
    COPY can run them): its rows in list order, and their exact, uncapped count."""

    rows: Compiled
    count: sql.Composed


def compile_export(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    as_of: datetime.datetime,
    tz: str,
    *,
    snapshot: str | None,
    typed: bool = False,
) -> CompiledExport:
    """The export's rows (an export format wraps them, see exports.formats) and its count,
    which formats no column. `typed` gives the rows typed values (compile_list).

    Both read every table as of `snapshot` (the click's recorded pg_snapshot), with relative
    dates evaluated at `as_of` in `tz`: the same statements give the same rows on any server
    that has the click's transactions, however long after the click they run. Without a
    snapshot (an export recorded before versions were kept) they read the tables as they are.
    """
    rows = compile_list(
        view, request, actor, now=as_of, tz=tz, inline=True, snapshot=snapshot, typed=typed
    )
    ctx = _Context(Binder(inline=True), as_of, tz, actor, snapshot=snapshot)
    where = where_clause(view, request, ctx)
    count = sql.SQL("SELECT count(*) FROM {src} WHERE {where}").format(
        src=_from(ctx.joins, ctx), where=where
    )
    return CompiledExport(rows=rows, count=count)


def order_by_keys(compiled: Compiled, alias: str) -> sql.Composed:
    """ORDER BY items for the sort keys of `compiled` wrapped by `aliased` as `alias`."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{} {}").format(
            sql.Identifier(alias), sql.Identifier(f"k{i}"), sql.SQL("DESC" if desc else "ASC")
        )
        for i, desc in enumerate(compiled.key_desc)
    )


def aliased(compiled: Compiled) -> sql.Composed:
    """The compiled SELECT wrapped so its display columns are reachable as c0, c1, …"""
    names = sql.SQL(", ").join(
        [sql.Identifier(f"c{i}") for i in range(len(compiled.columns))]
        + [sql.Identifier("ticket_id")]
        + [sql.Identifier(f"k{i}") for i in range(len(compiled.key_kinds))]
    )
    return sql.SQL("SELECT * FROM ({}) AS s ({})").format(compiled.statement, names)
