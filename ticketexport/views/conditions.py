"""A view's conditions as SQL: saved-view conditions, built-in views' rules, the top-bar
filters and the search box (the semantics are compiler.py's)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from psycopg import sql

from ticketexport.domain.actor import Actor
from ticketexport.views import registry
from ticketexport.views.columns import COLUMNS, LOOKUPS, lowered
from ticketexport.views.model import Condition, ListRequest, ResolvedView
from ticketexport.views.scope import Binder, Cast, Context, is_open, lookup_where, status_where
from ticketexport.views.select_list import display

# Conditions -----------------------------------------------------------------------------

# Details of a ticket's contact that no column shows; every other text field is a column's
# displayed value (contact_name is the Contact column's).
_CONTACT_DETAILS = {"contact_email": "email", "contact_organization": "organization"}


def _text_field(field: str, ctx: Context) -> sql.Composable:
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


def _text_condition(c: Condition, ctx: Context) -> sql.Composable:
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


def _number_condition(c: Condition, ctx: Context) -> sql.Composable:
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


def _day_start(day: datetime.date, ctx: Context) -> sql.Composable:
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


def _date_condition(c: Condition, ctx: Context) -> sql.Composable:
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
    x: sql.Composable, op: str, value: list[Any], cast: Cast, *, nullable: bool, ctx: Context
) -> sql.Composable:
    array = ctx.bind(list(value), cast)
    positive = sql.SQL("({} = ANY({}))").format(x, array)
    if op in ("is", "any_of"):
        return positive
    if nullable:
        return sql.SQL("({} IS NULL OR NOT {})").format(x, positive)
    return sql.SQL("(NOT {})").format(positive)


def _has_tasks(ctx: Context, which: str = "") -> sql.Composable:
    return sql.SQL("EXISTS (SELECT 1 FROM {} x WHERE x.ticket_id = t.id{})").format(
        ctx.table("ticket_tasks"), sql.SQL(which)
    )


_BOOLEANS: dict[str, Callable[[Context], sql.Composable]] = {
    "sla_breached": lambda ctx: sql.SQL("t.sla_breached"),
    "snoozed": lambda ctx: ctx.snoozed(),
    "has_contact": lambda ctx: sql.SQL("(t.contact_id IS NOT NULL)"),
    "has_tasks": _has_tasks,
    "has_open_tasks": lambda ctx: _has_tasks(ctx, " AND NOT x.is_closed"),
}


def condition_sql(c: Condition, ctx: Context) -> sql.Composable:
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


def _builtin_rule(key: str, ctx: Context) -> list[sql.Composable]:
    me = ctx.bind(ctx.actor.id, "bigint")
    # Every view's rule is built, in declaration order, so the placeholders they bind keep
    # their numbers whichever view is compiled.
    # Each rule that is an owner's scope keys records its owner (Context.owned); only the
    # compiled view's own record may stay, or another view's owner would shape its search.
    rules: dict[str, list[sql.Composable]] = {}
    owned = None
    for k, builtin in registry.BUILTINS.items():
        ctx.owned = None
        rules[k] = builtin.rule(ctx, me)
        if k == key:
            owned = ctx.owned
    ctx.owned = owned
    return rules[key]


def _not_snoozed_view(view: ResolvedView) -> bool:
    return view.builtin is not None and registry.BUILTINS[view.builtin].not_snoozed


def _filters(view: ResolvedView, filters: Mapping[str, str], ctx: Context) -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    snoozed = filters.get("snoozed")
    if _not_snoozed_view(view) and snoozed is None:
        parts.append(ctx.not_snoozed())
    if snoozed == "exclude":
        parts.append(ctx.not_snoozed())
    elif snoozed == "only":
        parts.append(ctx.snoozed())
    if "status" in filters:
        parts.append(status_where(ctx, "developer_name", ctx.bind(filters["status"], "text")))
    if "type" in filters:
        parts.append(status_where(ctx, "status_type", ctx.bind(filters["type"], "text")))
    if "priority" in filters:
        value = ctx.bind(filters["priority"], "text")
        parts.append(lookup_where(ctx, "priority_id", "ticket_priorities", "developer_name", value))
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


def _search_pattern(q: str, ctx: Context) -> sql.Composable:
    """The folded LIKE pattern `%q%`. LIKE's wildcards and escape character stand for
    themselves in the query; folding leaves them (and the added ones) as they are, so the
    pattern is folded whole."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return lowered(ctx.bind(f"%{escaped}%", "text"))


# The column whose trigram index holds the owners' scope keys (0026_search_scope.sql).
SCOPED_SEARCH_COLUMN = "title"

# Owners whose open tickets are too many to read whole for a search, and whose tickets an
# index holds with each searched column of the default columns: a team's, by the title's
# trigram index (the scope keys), tickets_team_status_contact_idx (0027_team_contact.sql)
# for the contact and the status, and the team's assignee and priority indexes. A count
# of such an owner's view is read one searched column at a time (compiler._counted_rows).
OWNERS_BY_COLUMN: frozenset[registry.Owner] = frozenset({"team"})

# Of those columns, the ones whose part is read one matched id at a time, as (owner,
# column): many matched ids, each with few of the owner's tickets, in an index that holds
# the column after the owner and the status (a team's contacts:
# tickets_team_status_contact_idx, 0027_team_contact.sql).
OWNER_PROBED_COLUMNS: frozenset[tuple[registry.Owner, str]] = frozenset({("team", "contact")})


def searched_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns a search looks in: the visible searchable ones."""
    return tuple(c for c in columns if COLUMNS[c].searchable)


# The ticket's smallint references. Their search matches are bound as smallint[]: the
# trigram indexes hold status_id, and the lookups' index (0028_search_lookups.sql) the
# priority, through btree_gin, whose operators on PostgreSQL 15 compare a smallint with a
# smallint only (a bigint[] left the status's part reading every band of the status's
# tickets: "pending" in `all` at 10M, 525 ms against 49).
_SMALLINT_KEYS = frozenset({"status_id", "priority_id"})


def search_predicate(q: str, columns: tuple[str, ...], ctx: Context) -> sql.Composable:
    """The search box's condition: the folded query inside the folded displayed text of
    one of the view's visible searchable columns (nothing matches without one).

    A query of TRIGRAM_TERM characters or more is written so the trigram indexes answer
    it, with the same meaning: `folded text LIKE '%query%'` (the query's LIKE wildcards
    escaped) on a ticket's own columns, and for a column shown from a lookup (status,
    priority, people, team) the ticket's reference among the lookup rows whose displayed
    text holds it: a ticket without one shows '', which holds no query. Shorter queries
    hold no trigram to look up and are searched row by row.
    """
    searchable = searched_columns(columns)
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
                    ctx.bind(
                        ctx.search_matches[key],
                        "smallint[]" if lookup.key in _SMALLINT_KEYS else "bigint[]",
                    ),
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
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    snapshot: str | None = None,
) -> tuple[sql.Composed, dict[str, Any], tuple[str, ...]] | None:
    """One statement finding, for each visible lookup column (status, priority, people,
    team), the ids of the lookup rows whose displayed text holds a trigram-long search
    term: one row, an id array per column. None when the search has no such column.

    A list page runs it first and hands the ids to compile_list and compile_count
    (`search_matches`): given a subquery's ids instead, the planner guesses the share of
    tickets they hold (most of them, for a status or priority), and would read every
    ticket rather than the trigram indexes for a term that matches few. An export finds
    them the same way, as of its `snapshot`.
    """
    if len(request.q) < TRIGRAM_TERM:
        return None
    keys = tuple(c for c in view.definition.columns if COLUMNS[c].searchable and COLUMNS[c].joins)
    if not keys:
        return None
    ctx = Context(Binder(), now, tz, actor, snapshot=snapshot)
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


# Ticket ids in bands of 2**ID_BAND_BITS; the trigram indexes hold each ticket's band
# before its text (sql/migrations/0024_search_bands.sql, ticketexport_id_band), so a scan
# can be confined to one band. A capped count reads the newest BANDS_COUNTED bands one by
# one, then the older tickets as a whole.
ID_BAND_BITS = 20
BANDS_COUNTED = 16


def id_bands(top_band: int) -> list[sql.Composable]:
    """Conditions on the tickets `t` that split every ticket id into disjoint parts, newest
    first: ids above `top_band` (tickets added since it was read), then each band from
    `top_band` down, at most BANDS_COUNTED of them, then every older id. The band's call
    is written as the indexes' expression, so the planner matches it."""
    newest = range(top_band, max(top_band - BANDS_COUNTED, -1), -1)

    def ids(condition: str, bound: int) -> sql.Composable:
        return sql.SQL(condition).format(sql.Literal(bound))

    return [
        ids("t.id >= {}::bigint", (top_band + 1) << ID_BAND_BITS),
        # bigint on both sides: btree_gin's operators for the band are bigint = bigint.
        *(ids("ticketexport_id_band(t.id) = {}::bigint", band) for band in newest),
        ids("t.id < {}::bigint", newest[-1] << ID_BAND_BITS),
    ]


def followed_open(ctx: Context) -> sql.Composable:
    """The "following" view's rule as a condition on the tickets `t`: the ticket's id is
    among those the acting user follows with the ticket open, read from the index of open
    followers (0018_followers_open.sql; as of a snapshot, of all followers), and its
    status is open.

    The followed ids are an array evaluated once, so they are an index condition on the
    ticket id. Only used where nothing else can drive the scan: as a filter over many rows
    the array would be searched element by element for each row.
    """
    return sql.SQL(
        "t.id = ANY (ARRAY(SELECT f.ticket_id FROM {} f WHERE f.user_id = {} AND {})) AND {}"
    ).format(
        ctx.table("ticket_followers"),
        ctx.bind(ctx.actor.id, "bigint"),
        ctx.followed_open("f"),
        is_open(ctx),
    )


def where_clause(
    view: ResolvedView,
    request: ListRequest,
    ctx: Context,
    *,
    rule: bool = True,
    search_column: str | None = None,
) -> sql.Composable:
    """The view's conditions; `rule=False` leaves out the built-in view's own rule (for a
    caller that reads only the tickets the rule selects); `search_column` searches that
    one of the view's searched columns alone (for a caller that reads each apart)."""
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
        searched = d.columns if search_column is None else (search_column,)
        parts.append(search_predicate(request.q, searched, ctx))
    if not parts:
        return sql.SQL("true")
    return sql.SQL(" AND ").join(parts)
