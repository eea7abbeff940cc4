"""The one compiler from a view to SQL: the list page and the CSV export both run its SELECT.

It assembles the statements from its rooms: scope.py (the binder and the compilation's
context), select_list.py (the columns' values), conditions.py (conditions, built-in views'
rules, top-bar filters, search) and ordering.py (sort levels, keys and the keyset).

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
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from ticketexport.domain.actor import Actor
from ticketexport.views import registry
from ticketexport.views.columns import (
    CHANGE,
    COLUMNS,
    LOOKUPS,
    KeyKind,
    SortKey,
    person,
    text_keys,
)
from ticketexport.views.conditions import (
    OWNER_PROBED_COLUMNS,
    OWNERS_BY_COLUMN,
    SCOPED_SEARCH_COLUMN,
    TRIGRAM_TERM,
    followed_open,
    id_bands,
    searched_columns,
    where_clause,
)
from ticketexport.views.model import ListRequest, ResolvedView, SortLevel
from ticketexport.views.ordering import bind_key, keyset_after, sort_keys, sort_levels
from ticketexport.views.scope import Binder, Context, RuleIds
from ticketexport.views.select_list import display, typed_value


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


def _signature(view: ResolvedView, levels: tuple[SortLevel, ...]) -> str:
    raw = json.dumps([view.key, [(s.column, s.descending) for s in levels]])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _tickets(ctx: Context) -> sql.Composable:
    return sql.SQL("{} t").format(ctx.table("tickets"))


def _from(joins: set[str], ctx: Context, tickets: sql.Composable | None = None) -> sql.Composable:
    """The tickets (all of them, or `tickets` as `t`) with the lookups `joins` names."""
    return sql.Composed(
        [
            _tickets(ctx) if tickets is None else tickets,
            *(lookup.join(ctx) for alias, lookup in LOOKUPS.items() if alias in joins),
        ]
    )


def _by_id(ids: sql.Composable, ctx: Context, alias: str = "picked") -> sql.Composable:
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
    view: ResolvedView, filters: Mapping[str, str], ctx: Context
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
    ctx: Context,
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
            sql.SQL(", ").join(bind_key(k, v, ctx) for k, v in zip(group_keys, lead, strict=True)),
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
    ordered: bool = True,
) -> Compiled:
    """The list SELECT: display columns, ticket id, sort keys; keyset `after`, `limit` rows.

    `typed` selects each column's typed value instead of its display (for a typed export
    format); the rows and their order are the same.

    `grouped` reads a page of a priority/status/assignee sort group by group (see
    _grouped_page); the rows are the same either way, only the plan differs. It pays off
    for large views and costs more for small selective ones, so the caller decides.

    `search_matches` holds the search's lookup matches found beforehand (search_lookups).

    `ordered` False leaves out the ORDER BY, for a caller that joins the rows by ticket id
    and orders what it keeps itself (compile_changes): the sort keys are still selected.

    `followed_first` reads a page of the "following" view from the followed open tickets
    (conditions.followed_open: the open followers' own index), sorts them and fetches only
    the page's rows, instead of walking the list's order through everyone's tickets.
    """
    ctx = Context(Binder(inline=inline), now, tz, actor, snapshot=snapshot)
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
        picked = sql.SQL("SELECT t.id FROM {} WHERE {} AND {} ORDER BY {} LIMIT {}").format(
            _from(where_joins | key_joins, ctx),
            followed_open(ctx),
            where,
            order,
            sql.Literal(limit),
        )
        src = _from(joins, ctx, _by_id(picked, ctx))
        where = sql.SQL("true")
    statement = sql.SQL(
        "SELECT {cols}, t.id, {keys} FROM {src} WHERE {where}{order}{limit}"
    ).format(
        cols=sql.SQL(", ").join(shown_cols),
        keys=sql.SQL(", ").join(k.expr for k in keys),
        src=src,
        where=where,
        order=sql.SQL(" ORDER BY {}").format(order) if ordered else sql.SQL(""),
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
    rule_ids: RuleIds | None = None,
    top_band: int | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """Counts the view's rows, stopping at cap + 1 so a huge view stays cheap.

    With `top_band` (the id band of the newest ticket) the rows are counted band by band,
    newest first (conditions.id_bands): the trigram indexes answer a search one band at a
    time, and the count stops within the band where it reaches the cap instead of
    gathering every ticket that holds a common term first. The bands split the ids
    without overlap, so the count is the same either way; whether they pay off is the
    caller's choice (views/service.py).

    `rule_ids` gives the built-in views' rules their lookups as values (scope.RuleIds)
    instead of reading them in the statement; the count is the same either way.
    """
    rows, params, _ = _counted_rows(
        view, request, actor, now, tz, search_matches, rule_ids, top_band, cap
    )
    statement = sql.SQL("SELECT count(*) FROM ({rows} LIMIT {cap}) AS limited").format(
        rows=rows, cap=sql.Literal(cap + 1)
    )
    return statement, params


def compile_count_estimate(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    search_matches: Mapping[str, list[int]] | None = None,
    rule_ids: RuleIds | None = None,
) -> tuple[sql.Composed, dict[str, Any], bool]:
    """EXPLAIN (FORMAT JSON) of the view's rows, uncapped and unbanded: the planner's
    estimate of how many there are (its top node's "Plan Rows"), without reading them.
    The flag says the count given the same values reads the rows one searched column at
    a time (a team's view given the rules' lookups, see _counted_rows)."""
    rows, params, by_column = _counted_rows(
        view, request, actor, now, tz, search_matches, rule_ids, None, None
    )
    return sql.SQL("EXPLAIN (FORMAT JSON) {}").format(rows), params, by_column


def _counted_rows(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    now: datetime.datetime,
    tz: str,
    search_matches: Mapping[str, list[int]] | None,
    rule_ids: RuleIds | None,
    top_band: int | None,
    cap: int | None,
) -> tuple[sql.Composable, dict[str, Any], bool]:
    """The rows a count counts (all of them or, with `cap`, enough to tell whether there
    are more than `cap`), their values, and whether they are read one searched column at
    a time (see below)."""
    binder = Binder()

    def context(*, scope_keys: bool = True) -> Context:
        ctx = Context(binder, now, tz, actor)
        ctx.search_matches = search_matches
        ctx.rule_ids = rule_ids
        ctx.scope_keys = scope_keys
        return ctx

    ctx = context()
    # A searched count of the followed open tickets reads them by their ids, as the page
    # does (conditions.followed_open): a term that names a status or a priority matches
    # hundreds of thousands of tickets, and the planner, guessing few of them, read those
    # and checked each one against the followed ones ("pending" at 10M: 190,069 read,
    # 550 ms, against the user's 10,515 followed tickets).
    followed = view.builtin == "following" and len(request.q) >= TRIGRAM_TERM
    where = where_clause(view, request, ctx, rule=not followed)
    if followed:
        where = sql.SQL("{} AND {}").format(followed_open(ctx), where)
    src = _from(ctx.joins, ctx)
    if top_band is not None:
        banded = sql.SQL(" UNION ALL ").join(
            sql.SQL("(SELECT 1 FROM {src} WHERE {band} AND {where})").format(
                src=src, band=band, where=where
            )
            for band in id_bands(top_band)
        )
        return banded, binder.params, False
    columns = searched_columns(view.definition.columns)
    if ctx.owned not in OWNERS_BY_COLUMN or len(request.q) < TRIGRAM_TERM or not columns:
        rows = sql.SQL("SELECT 1 FROM {src} WHERE {where}").format(src=src, where=where)
        return rows, binder.params, False
    # A team's view (its rule written as scope keys) is read one searched column at a
    # time, and the tickets found are counted once each. Each part is planned on its own,
    # so each reads an index that holds its column with the team (OWNERS_BY_COLUMN): the
    # title's part with the scope keys, the others with the team's condition (the team's
    # open tickets of 2,033 contacts in 80 ms at 10M). ORed in one statement, the planner
    # can read the team's open tickets whole by their scope keys and check each one for
    # every column (team-tickets "ren": 113,000 tickets read, 3.6 s). A smaller owner's
    # open tickets are read whole faster than column by column (unassigned "Müller": 37
    # against 103 ms), so its count stays one statement.
    #
    # Given a cap, each part stops after cap + 1 tickets: a part that reaches it puts the
    # count past the cap whatever the others hold, and parts that do not are whole, so the
    # capped count is exact and no part reads more than cap + 1 of its tickets (a term
    # naming the status "Open" is 84,942 of the team's open tickets at 10M).
    limit = sql.SQL("") if cap is None else sql.SQL(" LIMIT {}").format(sql.Literal(cap + 1))
    parts = []
    for column in columns:
        part = context(scope_keys=column == SCOPED_SEARCH_COLUMN)
        by_id = (ctx.owned, column) in OWNER_PROBED_COLUMNS
        if by_id and search_matches is not None and column in search_matches:
            found = _probed_part(view, request, part, column, search_matches[column])
        else:
            found = sql.SQL("SELECT t.id FROM {src} WHERE {where}").format(
                src=_from(part.joins, part),
                where=where_clause(view, request, part, search_column=column),
            )
        parts.append(sql.SQL("({}{})").format(found, limit))
    rows = sql.SQL("SELECT 1 FROM ({}) AS found").format(sql.SQL(" UNION ").join(parts))
    return rows, binder.params, True


def _probed_part(
    view: ResolvedView, request: ListRequest, ctx: Context, column: str, ids: list[int]
) -> sql.Composable:
    """The view's tickets whose `column` refers to one of `ids`, read id by id: one short
    range each of the index that holds the column after the owner and the status
    (OWNER_PROBED_COLUMNS). OFFSET 0 keeps each id's probe its own; as one scan of all the
    ids, the planner could read the owner's tickets and the ids' tickets apart and keep
    those in both (team-tickets "Müller" at 10M: 191,435 and 572,863 read for 11,052 kept,
    about 270 ms, against 35 ms id by id)."""
    (alias,) = COLUMNS[column].joins
    key = LOOKUPS[alias].key
    assert key is not None  # a searchable lookup column reads a plain lookup
    rest = where_clause(view, dataclasses.replace(request, q=""), ctx)
    return sql.SQL(
        "SELECT o.id FROM unnest({ids}) AS m(id) CROSS JOIN LATERAL "
        "(SELECT t.id FROM {src} WHERE t.{key} = m.id AND {rest} OFFSET 0) AS o"
    ).format(
        ids=ctx.bind(ids, "bigint[]"),
        src=_from(ctx.joins, ctx),
        key=sql.Identifier(key),
        rest=rest,
    )


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
    search_matches: Mapping[str, list[int]] | None = None,
) -> CompiledExport:
    """The export's rows (an export format wraps them, see exports.formats) and its count,
    which formats no column. `typed` gives the rows typed values (compile_list).

    Both read every table as of `snapshot` (the click's recorded pg_snapshot), with relative
    dates evaluated at `as_of` in `tz`: the same statements give the same rows on any server
    that has the click's transactions, however long after the click they run. Without a
    snapshot (an export recorded before versions were kept) they read the tables as they are.
    `search_matches` are the search's lookup matches as of the same snapshot
    (conditions.search_lookups), so a searched view is read through the trigram indexes.
    """
    rows = compile_list(
        view,
        request,
        actor,
        now=as_of,
        tz=tz,
        inline=True,
        snapshot=snapshot,
        typed=typed,
        search_matches=search_matches,
    )
    ctx = Context(Binder(inline=True), as_of, tz, actor, snapshot=snapshot)
    ctx.search_matches = search_matches
    where = where_clause(view, request, ctx)
    count = sql.SQL("SELECT count(*) FROM {src} WHERE {where}").format(
        src=_from(ctx.joins, ctx), where=where
    )
    return CompiledExport(rows=rows, count=count)


def changes_columns(keys: Sequence[str]) -> tuple[registry.Column, ...]:
    """A file of changes' columns, in order: Change, then Ticket ID when the view's columns
    lack it, then the view's columns."""
    ticket_id = () if "id" in keys else (COLUMNS["id"],)
    return (CHANGE, *ticket_id, *(COLUMNS[key] for key in keys))


def compile_changes(
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    as_of: datetime.datetime,
    tz: str,
    *,
    snapshot: str,
    since_as_of: datetime.datetime,
    since_snapshot: str,
    typed: bool = False,
) -> CompiledExport:
    """The changes between two clicks of one request, as self-contained statements.

    F1 is what compile_export gives as of the earlier click (`since_as_of`, its relative
    dates and `since_snapshot`), F2 what it gives as of this one. Both are read whole and
    joined on the ticket id in the database; a row is kept when its ticket is in one of
    them only, or when any of its values differs (IS DISTINCT FROM, NULLs equal). The rows:
    `Change` ('delete' or 'upsert'), `Ticket ID` when the view's columns lack it, then the
    view's columns, F2's values (a delete's are NULL, except its Ticket ID). Deletes come
    first by ticket id, then upserts in the view's order: the sort keys lead with whether
    the row is an upsert, then a delete's ticket id, then F2's own keys.
    """

    def frame(now: datetime.datetime, at: str) -> Compiled:
        """The request's rows, unordered, as of one click's time and snapshot."""
        return compile_list(
            view,
            request,
            actor,
            now=now,
            tz=tz,
            inline=True,
            snapshot=at,
            typed=typed,
            ordered=False,
        )

    before = frame(since_as_of, since_snapshot)
    after = frame(as_of, snapshot)

    def old(name: str) -> sql.Composable:
        return sql.SQL("o.{}").format(sql.Identifier(name))

    def new(name: str) -> sql.Composable:
        return sql.SQL("n.{}").format(sql.Identifier(name))

    ticket_id = sql.SQL("COALESCE(n.ticket_id, o.ticket_id)")
    shown: list[sql.Composable] = [
        sql.SQL("(CASE WHEN n.ticket_id IS NULL THEN 'delete' ELSE 'upsert' END)")
    ]
    columns = list(changes_columns(view.definition.columns))
    if "id" not in view.definition.columns:
        shown.append(ticket_id if typed else sql.SQL("{}::text").format(ticket_id))
    for i, key in enumerate(view.definition.columns):
        cell = f"c{i}"
        # A delete row's only other cell is its ticket id, wherever the view shows it.
        shown.append(
            sql.SQL("COALESCE({}, {})").format(new(cell), old(cell)) if key == "id" else new(cell)
        )
    cells = [f"c{i}" for i in range(len(after.columns))]
    joined = sql.SQL(
        "({before}) AS o FULL JOIN ({after}) AS n ON n.ticket_id = o.ticket_id "
        "WHERE o.ticket_id IS NULL OR n.ticket_id IS NULL "
        "OR ROW({old}) IS DISTINCT FROM ROW({new})"
    ).format(
        before=aliased(before),
        after=aliased(after),
        old=sql.SQL(", ").join(old(c) for c in cells),
        new=sql.SQL(", ").join(new(c) for c in cells),
    )
    keys = [
        sql.SQL("(n.ticket_id IS NOT NULL)"),
        sql.SQL("(CASE WHEN n.ticket_id IS NULL THEN o.ticket_id END)"),
        *(new(f"k{i}") for i in range(len(after.key_kinds))),
    ]
    statement = sql.SQL("SELECT {shown}, {ticket_id}, {keys} FROM {joined}").format(
        shown=sql.SQL(", ").join(shown),
        ticket_id=ticket_id,
        keys=sql.SQL(", ").join(keys),
        joined=joined,
    )
    rows = Compiled(
        statement=statement,
        params={},
        columns=tuple(columns),
        key_kinds=("bool", "int", *after.key_kinds),
        key_desc=(False, False, *after.key_desc),
        signature=after.signature,
    )
    count = sql.SQL("SELECT count(*) FROM {}").format(joined)
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
