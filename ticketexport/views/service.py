"""The list page's use case: validate the query, resolve the view, run one page and a count."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from ticketexport.db import q
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import TooSlow
from ticketexport.views import compiler, conditions, cursor, registry, saved
from ticketexport.views.model import (
    ListRequest,
    ResolvedView,
    SortLevel,
    ViewDefinition,
    ViewInputError,
    ViewNotFound,
    check_text,
    shown,
)
from ticketexport.views.scope import RuleIds

__all__ = [
    "FilterOptions",
    "ListPage",
    "ListRequest",
    "ResolvedView",
    "ViewNotFound",
    "ViewTooSlow",
    "builtin_view",
    "check_request",
    "count_text",
    "filter_options",
    "list_page",
    "parse_list_request",
    "resolve_view",
]

_ID = re.compile(r"^[1-9][0-9]{0,17}$")
_DEV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
MAX_PARAM = 100

_ALLOWED = frozenset({"view", "q", "sort", "page", *registry.FILTER_PARAMS})


def _filter_value(key: str, value: str) -> str:
    if key in ("status", "priority"):
        if not _DEV_NAME.fullmatch(value):
            raise ViewInputError(
                f"{key}= must be a developer name like 'in_progress', not {shown(value)}"
            )
    elif key == "type":
        if value not in ("open", "closed"):
            raise ViewInputError(f"type= must be open or closed, not {shown(value)}")
    elif key == "snoozed":
        if value not in ("exclude", "only", "any"):
            raise ViewInputError(f"snoozed= must be exclude, only or any, not {shown(value)}")
    elif value != "none" and not _ID.fullmatch(value):
        raise ViewInputError(f"{key}= must be an id or 'none', not {shown(value)}")
    return value


def parse_list_request(params: Mapping[str, str]) -> ListRequest:
    """Validate every query parameter of GET /staff/tickets; ViewInputError names the problem."""
    unknown = sorted(set(params) - _ALLOWED)
    if unknown:
        raise ViewInputError(f"unknown parameter {shown(unknown[0])}")
    values: dict[str, str] = {}
    for key, value in params.items():
        limit = (
            registry.MAX_SEARCH if key == "q" else cursor.MAX_CURSOR if key == "page" else MAX_PARAM
        )
        values[key] = check_text(value, f"parameter {key}=", max_length=limit, allow_empty=True)
    view = values.get("view", "").strip() or "all"
    if view not in registry.BUILTIN_VIEWS and not _ID.fullmatch(view):
        raise ViewInputError(f"unknown view {shown(view)}")
    sort = values.get("sort", "").strip() or None
    if sort is not None and sort not in registry.SORTS:
        raise ViewInputError(f"unknown sort {shown(sort)}; use one of {', '.join(registry.SORTS)}")
    filters: dict[str, str] = {}
    for key in registry.FILTER_PARAMS:
        value = values.get(key, "").strip()
        if value:
            filters[key] = _filter_value(key, value)
    page = values.get("page", "").strip() or None
    if page is not None:
        cursor.unpack(page)
    return ListRequest(
        view=view, q=values.get("q", "").strip(), sort=sort, filters=filters, page=page
    )


def builtin_view(key: str) -> ResolvedView:
    """A built-in view: default columns, its rule, its default sort (newest first, or by
    closing time for the closed views)."""
    builtin = registry.BUILTINS[key]
    label = builtin.label
    definition = ViewDefinition(
        name=label,
        conditions_and=(),
        conditions_or=(),
        columns=registry.DEFAULT_COLUMNS,
        sort=tuple(SortLevel(column, descending) for column, descending in builtin.sort),
    )
    return ResolvedView(key=key, name=label, definition=definition, saved_view_id=None, builtin=key)


async def resolve_view(conn: psycopg.AsyncConnection[Any], key: str, actor: Actor) -> ResolvedView:
    """A built-in view by key or a saved view by id (ViewNotFound when not visible)."""
    if key in registry.BUILTIN_VIEWS:
        return builtin_view(key)
    if not _ID.fullmatch(key):
        raise ViewInputError(f"unknown view {shown(key)}")
    view = await saved.get_saved_view(conn, int(key), actor)
    return ResolvedView(
        key=key, name=view.name, definition=view.definition, saved_view_id=view.id, builtin=None
    )


@dataclasses.dataclass(frozen=True)
class FilterOptions:
    statuses: list[tuple[str, str, str]]
    priorities: list[tuple[str, str]]
    users: list[tuple[int, str]]
    teams: list[tuple[int, str]]


async def filter_options(conn: psycopg.AsyncConnection[Any]) -> FilterOptions:
    """Choices for the top-bar selects and the editor's multi-selects."""
    statuses = await (await conn.execute(q("views_statuses"))).fetchall()
    priorities = await (await conn.execute(q("views_priorities"))).fetchall()
    users = await (await conn.execute(q("views_users"))).fetchall()
    teams = await (await conn.execute(q("views_teams"))).fetchall()
    return FilterOptions(
        statuses=[(r[0], r[1], r[2]) for r in statuses],
        priorities=[(r[0], r[1]) for r in priorities],
        users=[(r[0], r[1]) for r in users],
        teams=[(r[0], r[1]) for r in teams],
    )


@dataclasses.dataclass(frozen=True)
class ListPage:
    view: ResolvedView
    columns: list[registry.Column]
    rows: list[list[str]]
    ticket_ids: list[int]
    next_cursor: str | None
    count: int
    count_text: str
    request: ListRequest


async def _check_lookups(conn: psycopg.AsyncConnection[Any], filters: Mapping[str, str]) -> None:
    if "status" in filters:
        rows = await (await conn.execute(q("views_statuses"))).fetchall()
        if filters["status"] not in {r[0] for r in rows}:
            raise ViewInputError(f"unknown status {shown(filters['status'])}")
    if "priority" in filters:
        rows = await (await conn.execute(q("views_priorities"))).fetchall()
        if filters["priority"] not in {r[0] for r in rows}:
            raise ViewInputError(f"unknown priority {shown(filters['priority'])}")


async def check_request(
    conn: psycopg.AsyncConnection[Any], request: ListRequest, actor: Actor
) -> ResolvedView:
    """Resolve the view and check the filter values without listing (an export's request)."""
    view = await resolve_view(conn, request.view, actor)
    await _check_lookups(conn, request.filters)
    return view


# Above this many rows a priority/status/assignee page is read group by group; below it,
# sorting the few matching rows is cheaper than walking each group's index for them.
GROUPED_MIN_ROWS = registry.COUNT_CAP


def count_text(count: int) -> str:
    return f"{registry.COUNT_CAP:,}+" if count > registry.COUNT_CAP else f"{count:,}"


class ViewTooSlow(TooSlow):
    """The page or its count ran past the web statement timeout (HTTP 503)."""

    default_message = (
        "This view took too long to load. Narrow it down (a search, a filter or a smaller "
        "view) and try again."
    )


async def list_page(
    conn: psycopg.AsyncConnection[Any],
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    statement_timeout_ms: int | None = None,
) -> ListPage:
    """One page (50 rows) of the view after the request's cursor, plus the capped count.

    With `statement_timeout_ms`, each statement stops after that long (ViewTooSlow): a view
    too expensive for the database cannot hold a web connection for longer. The limit is
    the page's own (SET LOCAL in its transaction) and ends with it, like the page's
    other settings: no JIT, and for a search the memory its bitmap of candidates needs
    and (three characters or more) its trigram indexes rather than the table in order,
    and a page statement without parallel workers.
    """
    try:
        async with conn.transaction():
            await conn.execute(
                q("list_page_settings_local"),
                {
                    "ms": None if statement_timeout_ms is None else str(statement_timeout_ms),
                    "search": bool(request.q),
                    "trigram": len(request.q) >= conditions.TRIGRAM_TERM,
                },
            )
            return await _list_page(conn, request, actor, now=now, tz=tz)
    except psycopg.errors.QueryCanceled:
        raise ViewTooSlow() from None


async def search_matches(
    conn: psycopg.AsyncConnection[Any],
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    snapshot: str | None = None,
) -> dict[str, list[int]] | None:
    """The ids of the lookup rows (status, priority, people, team) the search term finds,
    by visible column (conditions.search_lookups), as of `snapshot` when one is given (an
    export's click); None when there is nothing to find."""
    found = conditions.search_lookups(view, request, actor, now=now, tz=tz, snapshot=snapshot)
    if found is None:
        return None
    statement, params, keys = found
    row = await (await conn.execute(statement, params, prepare=False)).fetchone()
    assert row is not None  # a SELECT of arrays has one row
    return {key: [int(i) for i in ids] for key, ids in zip(keys, row, strict=True)}


async def _rule_ids(conn: psycopg.AsyncConnection[Any], actor: Actor) -> RuleIds:
    """The lookups the built-in views' rules name, as they are now (scope.RuleIds)."""
    row = await (await conn.execute(q("views_rule_ids"), {"user_id": actor.id})).fetchone()
    assert row is not None  # a SELECT of arrays has one row
    open_ids, closed_ids, teams = row
    return RuleIds(
        open=tuple(int(i) for i in open_ids),
        closed=tuple(int(i) for i in closed_ids),
        teams=tuple(int(i) for i in teams),
    )


# A searched count is read band by band when the planner expects more rows than the cap
# (see _count).
BANDED_COUNT_MIN_ROWS = registry.COUNT_CAP + 1


async def _count(
    conn: psycopg.AsyncConnection[Any],
    view: ResolvedView,
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
    matches: dict[str, list[int]] | None,
    rule_ids: RuleIds | None,
    prepare: bool | None,
) -> int:
    """The view's capped count. For a trigram-long search: band by band when the planner
    expects more rows than the cap, else one statement given the rules' lookups as values.

    The estimate is planned with the rules' lookups as values (the statuses that are open,
    the user's teams): read in the statement, they are unknown to the planner, which then
    guesses a share of every ticket (215,064 rows for a team's open tickets that hold
    "printer" at 10M, against 6,931 given the teams, and 6,368 found).

    Past the cap, the newest bands hold it and the older ones are never read; the bands
    keep the lookups in the statement, because given them the planner reads each band's
    tickets of the view through the view's own index and checks each one for the term
    (406 ms for `overdue` "Müller" at 10M, against 64 ms through the search's indexes).
    Below it, the count must read every band anyway, and one statement reads the search's
    indexes once: given the lookups as values the planner can weigh the view's share of
    the tickets against the term's (205 ms for `unassigned` "printer", against 444 ms).

    `rule_ids` are those lookups, read beforehand (None for a view whose rule names none).
    """
    if len(request.q) < conditions.TRIGRAM_TERM:
        statement, params = compiler.compile_count(
            view, request, actor, now=now, tz=tz, search_matches=matches
        )
        return await _counted(conn, statement, params, prepare)
    estimate, params, by_column = compiler.compile_count_estimate(
        view, request, actor, now=now, tz=tz, search_matches=matches, rule_ids=rule_ids
    )
    # A count read one searched column at a time stops each column's part at the cap
    # (compiler._counted_rows), so it needs no bands: neither the newest band nor the
    # estimate is read for it.
    band_row = None if by_column else await (await conn.execute(q("views_top_id_band"))).fetchone()
    top = None if band_row is None else band_row[0]
    if top is not None and int(top) > 0:
        plan = await (await conn.execute(estimate, params, prepare=False)).fetchone()
        assert plan is not None  # EXPLAIN gives one row
        if float(plan[0][0]["Plan"]["Plan Rows"]) >= BANDED_COUNT_MIN_ROWS:
            statement, params = compiler.compile_count(
                view, request, actor, now=now, tz=tz, search_matches=matches, top_band=int(top)
            )
            return await _counted(conn, statement, params, prepare)
    statement, params = compiler.compile_count(
        view, request, actor, now=now, tz=tz, search_matches=matches, rule_ids=rule_ids
    )
    return await _counted(conn, statement, params, prepare)


async def _counted(
    conn: psycopg.AsyncConnection[Any],
    statement: sql.Composed,
    params: dict[str, Any],
    prepare: bool | None,
) -> int:
    row = await (await conn.execute(statement, params, prepare=prepare)).fetchone()
    return int(row[0]) if row else 0


async def _list_page(
    conn: psycopg.AsyncConnection[Any],
    request: ListRequest,
    actor: Actor,
    *,
    now: datetime.datetime,
    tz: str,
) -> ListPage:
    view = await resolve_view(conn, request.view, actor)
    await _check_lookups(conn, request.filters)
    after = None
    if request.page is not None:
        shape = compiler.compile_list(view, request, actor, now=now, tz=tz)
        after = cursor.decode(request.page, shape.signature, shape.key_kinds)
    matches = await search_matches(conn, view, request, actor, now=now, tz=tz)
    rule_ids = None
    builtin = registry.BUILTINS.get(view.builtin) if view.builtin is not None else None
    # Only a built-in view's rule with a status type names lookups (scope.RuleIds).
    if len(request.q) >= conditions.TRIGRAM_TERM and builtin and builtin.statuses:
        rule_ids = await _rule_ids(conn, actor)
        if matches and matches.get("status"):
            # A status of the other type holds no ticket of the view: left in, its part of
            # the search reads every ticket in it (closed tickets searched for "pending":
            # an open status, 500 ms at 10M for no row).
            kept = rule_ids.open if builtin.statuses == "open" else rule_ids.closed
            matches["status"] = [i for i in matches["status"] if i in kept]
    # A search's statements are planned for their own values every time: a plan kept for
    # another term would not know which indexes pay off.
    prepare = False if request.q else None
    count = await _count(
        conn,
        view,
        request,
        actor,
        now=now,
        tz=tz,
        matches=matches,
        rule_ids=rule_ids,
        prepare=prepare,
    )
    if len(request.q) >= conditions.TRIGRAM_TERM:
        await conn.execute(q("list_page_serial_local"))
    compiled = compiler.compile_list(
        view,
        request,
        actor,
        now=now,
        tz=tz,
        after=after,
        limit=registry.PAGE_SIZE + 1,
        grouped=count > GROUPED_MIN_ROWS and view.builtin != "following",
        # The followed open tickets come from their own index (conditions.followed_open),
        # the rows the count read: sorting them costs about what the count did, in any
        # order, where walking a ticket index finds them among everyone's tickets.
        followed_first=True,
        search_matches=matches,
    )
    # No row to show: the page statement would walk the view's order to its end looking
    # for one (closed tickets searched for "pending", a status no closed ticket has: every
    # closed ticket of 10M read, 20 s).
    rows = (
        []
        if count == 0
        else await (
            await conn.execute(compiled.statement, compiled.params, prepare=prepare)
        ).fetchall()
    )
    width = len(compiled.columns)
    next_cursor = None
    if len(rows) > registry.PAGE_SIZE:
        rows = rows[: registry.PAGE_SIZE]
        next_cursor = cursor.encode(compiled.signature, rows[-1][width + 1 :])
    return ListPage(
        view=view,
        columns=list(compiled.columns),
        rows=[list(row[:width]) for row in rows],
        ticket_ids=[int(row[width]) for row in rows],
        next_cursor=next_cursor,
        count=count,
        count_text=count_text(count),
        request=request,
    )
