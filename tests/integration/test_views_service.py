"""The list service and saved views against a real database: formats, counts, permissions."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats
from ticketexport.views import compiler, saved
from ticketexport.views.model import ViewInputError, ViewNotFound, parse_definition
from ticketexport.views.service import (
    builtin_view,
    filter_options,
    list_page,
    parse_list_request,
    resolve_view,
)

NOW = datetime.datetime(2026, 7, 1, 16, 0, tzinfo=datetime.UTC)
TZ = "America/New_York"
ME = Actor(1, is_admin=False, permissions=0)
OTHER = Actor(2, is_admin=False, permissions=0)
MANAGER = Actor(3, is_admin=True, permissions=int(Permission.MANAGE_SYSTEM_VIEWS))


@pytest.fixture
async def aconn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO users (id, email, first_name, last_name, password_hash) VALUES "
            "(1, 'me@example.test', 'Zoë', 'Ålund', 'x'), (2, 'o@example.test', 'Олег', '', 'x'), "
            "(3, 'm@example.test', 'Max', 'Manager', 'x')"
        )
        await conn.execute("INSERT INTO teams (id, name) VALUES (1, 'Support')")
        await conn.execute(
            "INSERT INTO contacts (id, first_name, last_name) VALUES (1, 'Ann', 'Client')"
        )
        yield conn


async def add_ticket(conn: psycopg.AsyncConnection[Any], **values: Any) -> int:
    row = {
        "title": "A ticket",
        "status_id": 1,
        "priority_id": 3,
        "created_at": NOW - datetime.timedelta(days=1),
        **values,
    }
    row.setdefault("updated_at", row["created_at"])
    statement = sql.SQL("INSERT INTO tickets ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    cur = await conn.execute(statement, list(row.values()))
    result = await cur.fetchone()
    assert result is not None
    return int(result[0])


def view_definition(columns: list[str], **extra: Any) -> Any:
    return parse_definition(
        {
            "name": extra.pop("name", "Mine"),
            "conditions_and": extra.pop("conditions_and", []),
            "conditions_or": extra.pop("conditions_or", []),
            "columns": columns,
            "sort": extra.pop("sort", [{"column": "id", "direction": "asc"}]),
        }
    )


async def page_of(
    conn: psycopg.AsyncConnection[Any], params: dict[str, str], actor: Actor = ME, tz: str = TZ
) -> Any:
    return await list_page(conn, parse_list_request(params), actor, now=NOW, tz=tz)


async def test_formatted_values(aconn: psycopg.AsyncConnection[Any]) -> None:
    summer = datetime.datetime(2026, 6, 30, 12, 0, 5, tzinfo=datetime.UTC)
    winter = datetime.datetime(2026, 1, 15, 4, 30, tzinfo=datetime.UTC)
    full = await add_ticket(
        aconn,
        title="=cmd",
        created_at=winter,
        updated_at=summer,
        assignee_id=1,
        created_by_id=2,
        team_id=1,
        contact_id=1,
        tags=["vip", "Счёт"],
        snoozed_until=NOW + datetime.timedelta(hours=1),
        sla_breached=True,
    )
    bare = await add_ticket(aconn, title="bare", created_at=summer)
    for done in (True, False, False):
        await aconn.execute(
            "INSERT INTO ticket_tasks (ticket_id, title, is_closed) VALUES (%s, 't', %s)",
            (full, done),
        )
    columns = [
        "id",
        "title",
        "assignee",
        "created_by",
        "team",
        "contact",
        "contact_id",
        "created_at",
        "updated_at",
        "closed_at",
        "tags",
        "snoozed",
        "tasks",
        "category",
    ]
    view_id = await saved.create_saved_view(aconn, ME, view_definition(columns), system_wide=False)
    # The session's own zone must not leak into the offsets.
    await aconn.execute("SET TimeZone = 'Asia/Kathmandu'")
    page = await page_of(aconn, {"view": str(view_id)})
    assert [c.label for c in page.columns][:3] == ["Ticket ID", "Title", "Assignee"]
    assert page.ticket_ids == [full, bare]
    assert page.rows[0] == [
        str(full),
        "=cmd",
        "Zoë Ålund",
        "Олег",
        "Support",
        "Ann Client",
        "1",
        "2026-01-14T23:30:00-05:00",
        "2026-06-30T08:00:05-04:00",
        "",
        "vip, Счёт",
        "Yes",
        "1 / 3",
        "",
    ]
    assert page.rows[1][2:7] == ["", "", "", "", ""]
    assert page.rows[1][11:] == ["No", "", ""]
    india = await page_of(aconn, {"view": str(view_id)}, tz="Asia/Kolkata")
    assert india.rows[0][7] == "2026-01-15T10:00:00+05:30"
    # The export shares the formatters and adds the CSV formula guard.
    view = await resolve_view(aconn, str(view_id), ME)
    export = formats.CSV.select(
        compiler.compile_export(view, parse_list_request({}), ME, NOW, TZ, snapshot=None).rows
    )
    rows = await (await aconn.execute(export)).fetchall()
    assert [v or "" for v in rows[0]] == ["'=cmd" if v == "=cmd" else v for v in page.rows[0]]


async def test_export_equals_all_pages(aconn: psycopg.AsyncConnection[Any]) -> None:
    for i in range(130):
        await add_ticket(
            aconn,
            title=f"T{i % 9}",
            priority_id=1 + i % 4,
            created_at=NOW - datetime.timedelta(minutes=i // 4),
            assignee_id=None if i % 3 else 1,
        )
    params = {"view": "open", "sort": "assignee", "q": "t"}
    rows: list[list[str]] = []
    page = await page_of(aconn, params)
    rows.extend(page.rows)
    while page.next_cursor:
        page = await page_of(aconn, {**params, "page": page.next_cursor})
        rows.extend(page.rows)
    assert len(rows) == 130
    export = formats.CSV.select(
        compiler.compile_export(
            builtin_view("open"), parse_list_request(params), ME, NOW, TZ, snapshot=None
        ).rows
    )
    cur = aconn.cursor()
    copied = bytearray()
    async with cur.copy(
        sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(export)
    ) as copy:
        async for chunk in copy:
            copied += chunk
    lines = copied.decode().splitlines()
    assert lines[0] == "Ticket ID,Title,Status,Priority,Assignee,Team,Contact,Created"
    assert lines[1:] == [",".join(row) for row in rows]


async def test_search_is_literal_and_case_insensitive(aconn: psycopg.AsyncConnection[Any]) -> None:
    a = await add_ticket(aconn, title="100% ДОСТУП_ok")
    b = await add_ticket(aconn, title="100 percent")
    assert (await page_of(aconn, {"q": "% доступ_"})).ticket_ids == [a]
    assert (await page_of(aconn, {"q": "100"})).ticket_ids == [b, a]
    assert (await page_of(aconn, {"q": str(b)})).ticket_ids == [b]
    assert (await page_of(aconn, {"q": "_%"})).ticket_ids == []


async def test_counts_cap_at_ten_thousand(aconn: psycopg.AsyncConnection[Any]) -> None:
    await aconn.execute(
        "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
        "SELECT 'bulk', 1, 3, %s, %s FROM generate_series(1, 10000)",
        (NOW, NOW),
    )
    page = await page_of(aconn, {})
    assert (page.count, page.count_text) == (10_000, "10,000")
    await add_ticket(aconn)
    page = await page_of(aconn, {})
    assert page.count_text == "10,000+"
    assert len(page.rows) == 50
    assert page.next_cursor


async def test_filter_values_are_checked(aconn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(ViewInputError, match="unknown status 'nope'"):
        await page_of(aconn, {"status": "nope"})
    with pytest.raises(ViewInputError, match="unknown priority 'nope'"):
        await page_of(aconn, {"priority": "nope"})
    mine = await add_ticket(aconn, assignee_id=1, status_id=2)
    await add_ticket(aconn, assignee_id=2)
    page = await page_of(aconn, {"assignee": "1", "status": "open", "type": "open"})
    assert page.ticket_ids == [mine]
    options = await filter_options(aconn)
    assert ("open", "Open", "open") in options.statuses
    assert options.priorities[0][0] == "urgent"
    assert (2, "Олег") in options.users
    assert options.teams == [(1, "Support")]


async def test_saved_view_visibility_and_permissions(aconn: psycopg.AsyncConnection[Any]) -> None:
    definition = view_definition(["id", "title"])
    private = await saved.create_saved_view(aconn, ME, definition, system_wide=False)
    with pytest.raises(PermissionError):
        await saved.create_saved_view(aconn, ME, definition, system_wide=True)
    shared = await saved.create_saved_view(aconn, MANAGER, definition, system_wide=True)

    mine = {row.id: row for row in await saved.list_saved_views(aconn, ME)}
    assert set(mine) == {private, shared}
    assert mine[private].editable
    assert not mine[shared].editable
    assert mine[shared].system_wide
    theirs = {row.id for row in await saved.list_saved_views(aconn, OTHER)}
    assert theirs == {shared}

    with pytest.raises(ViewNotFound):
        await saved.get_saved_view(aconn, private, OTHER)
    with pytest.raises(ViewNotFound):
        await resolve_view(aconn, str(private), OTHER)
    with pytest.raises(ViewNotFound):
        await page_of(aconn, {"view": str(private)}, actor=OTHER)
    with pytest.raises(ViewNotFound):
        await saved.delete_saved_view(aconn, OTHER, private)
    with pytest.raises(PermissionError):
        await saved.update_saved_view(aconn, ME, shared, definition, system_wide=True)
    with pytest.raises(PermissionError):
        await saved.delete_saved_view(aconn, ME, shared)
    with pytest.raises(PermissionError):
        await saved.update_saved_view(aconn, ME, private, definition, system_wide=True)

    renamed = view_definition(
        ["title", "tags"],
        name="Renamed",
        conditions_or=[{"field": "tags", "operator": "contains", "value": "vip"}],
    )
    await saved.update_saved_view(aconn, ME, private, renamed, system_wide=False)
    got = await saved.get_saved_view(aconn, private, ME)
    assert got.definition == renamed
    assert got.name == "Renamed"
    await saved.delete_saved_view(aconn, MANAGER, shared)
    await saved.delete_saved_view(aconn, ME, private)
    assert await saved.list_saved_views(aconn, ME) == []


async def test_saved_view_references_must_exist(aconn: psycopg.AsyncConnection[Any]) -> None:
    for condition, fragment in [
        ({"field": "status", "operator": "any_of", "value": ["open", "ghost"]}, "status 'ghost'"),
        ({"field": "priority", "operator": "less_important_than", "value": "ghost"}, "priority"),
        ({"field": "assignee", "operator": "is", "value": [99]}, "user 99"),
        ({"field": "team", "operator": "none_of", "value": [1, 42]}, "team 42"),
    ]:
        with pytest.raises(ViewInputError, match=fragment):
            await saved.create_saved_view(
                aconn, ME, view_definition(["id"], conditions_and=[condition]), system_wide=False
            )


async def test_built_in_views_for_the_actor(aconn: psycopg.AsyncConnection[Any]) -> None:
    await aconn.execute("INSERT INTO team_memberships (team_id, user_id) VALUES (1, 1)")
    assigned = await add_ticket(aconn, assignee_id=1, team_id=1)
    followed = await add_ticket(aconn, created_by_id=1)
    await aconn.execute("INSERT INTO ticket_followers VALUES (%s, 1)", (followed,))
    snoozed = await add_ticket(aconn, assignee_id=1, snoozed_until=NOW + datetime.timedelta(days=1))
    long_ago = NOW - datetime.timedelta(days=30)
    await add_ticket(
        aconn,
        assignee_id=2,
        status_id=5,
        created_at=long_ago,
        closed_at=NOW - datetime.timedelta(days=8),
    )
    recent = await add_ticket(
        aconn, status_id=6, created_at=long_ago, closed_at=NOW - datetime.timedelta(days=2)
    )
    expectations = {
        "my-tickets": [assigned],
        "team-tickets": [assigned],
        "created-by-me": [followed],
        "following": [followed],
        "snoozed": [snoozed],
        "recently-closed": [recent],
        "unassigned": [followed],
    }
    for view, ids in expectations.items():
        assert (await page_of(aconn, {"view": view})).ticket_ids == ids, view
    both = await page_of(aconn, {"view": "my-tickets", "snoozed": "any"})
    assert sorted(both.ticket_ids) == sorted([assigned, snoozed])
    assert (await page_of(aconn, {"view": "my-tickets", "snoozed": "only"})).ticket_ids == [snoozed]
    assert (await page_of(aconn, {"view": "my-tickets"}, actor=OTHER)).ticket_ids == []
