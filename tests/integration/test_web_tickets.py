"""The staff ticket list page: views, search, sort, filters, paging, counts, Export button."""

from __future__ import annotations

import html
import re
from typing import Any

import psycopg

from tests.support.web import Web, insert_tickets, make_user
from ticketexport.domain.permissions import Permission

_ROW = re.compile(r'<tr data-ticket="(\d+)">')
_HEAD = re.compile(r'<th scope="col" data-column="([a-z_]+)">([^<]*)</th>')
_NEXT = re.compile(r'<a href="([^"]+)" id="next-page"')


def ticket_ids(page: str) -> list[int]:
    return [int(x) for x in _ROW.findall(page)]


def next_link(page: str) -> str | None:
    match = _NEXT.search(page)
    return html.unescape(match.group(1)) if match else None


async def get_ok(web: Web, path: str) -> str:
    response = await web.client.get(path)
    text = await response.text()
    assert response.status == 200, (path, response.status, text[-500:])
    return text


async def test_default_list_columns_count_and_paging(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    insert_tickets(conn, 120)
    await web.login("agent@example.com")
    first = await get_ok(web, "/staff/tickets")
    assert [label for _, label in _HEAD.findall(first)] == [
        "Ticket ID",
        "Title",
        "Status",
        "Priority",
        "Assignee",
        "Team",
        "Contact",
        "Created",
    ]
    assert "120 tickets" in first
    assert 'id="first-page"' not in first
    seen = ticket_ids(first)
    assert len(seen) == 50
    pages = 1
    link = next_link(first)
    while link:
        assert "page=" in link
        text = await get_ok(web, link)
        assert 'id="first-page"' in text
        seen += ticket_ids(text)
        link = next_link(text)
        pages += 1
    assert pages == 3
    all_ids = [
        r[0] for r in conn.execute("SELECT id FROM tickets ORDER BY created_at DESC, id DESC")
    ]
    assert seen == all_ids


async def test_count_is_capped(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    insert_tickets(conn, 10_001)
    await web.login("agent@example.com")
    assert "10,000+ tickets" in await get_ok(web, "/staff/tickets")
    assert "1 ticket<" in await get_ok(web, "/staff/tickets?q=Ticket%2010001")


async def test_views_sidebar_switching_and_visibility(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    me = make_user(conn, "agent@example.com")
    other = make_user(conn, "other@example.com")
    insert_tickets(conn, 5)
    conn.execute("UPDATE tickets SET assignee_id = %s WHERE id <= 2", (me,))
    conn.execute("UPDATE tickets SET status_id = 6, closed_at = created_at WHERE id = 5")
    views = {}
    for name, owner in (("Mine", me), ("Theirs", other), ("Everyone's", None)):
        views[name] = conn.execute(
            "INSERT INTO saved_views (name, owner_id, columns, sort) "
            'VALUES (%s, %s, \'{id,title}\', \'[{"column": "id", "direction": "asc"}]\') '
            "RETURNING id",
            (name, owner),
        ).fetchone()[0]
    await web.login("agent@example.com")
    text = await get_ok(web, "/staff/tickets")
    for label in ("All tickets", "Open", "Unassigned", "My tickets", "Recently closed"):
        assert f">{label}</a>" in text
    assert ">Mine</a>" in text
    assert ">Everyone&#39;s</a>" in text
    assert "Theirs" not in text
    mine = await get_ok(web, "/staff/tickets?view=my-tickets")
    assert sorted(ticket_ids(mine)) == [1, 2]
    assert 'data-view="my-tickets" aria-current="page"' in mine
    closed = await get_ok(web, "/staff/tickets?view=closed")
    assert ticket_ids(closed) == [5]
    saved = await get_ok(web, f"/staff/tickets?view={views['Mine']}")
    assert ticket_ids(saved) == [1, 2, 3, 4, 5]
    assert [k for k, _ in _HEAD.findall(saved)] == ["id", "title"]
    shared_id = views["Everyone's"]
    shared = await web.client.get(f"/staff/tickets?view={shared_id}")
    assert shared.status == 200
    hidden = await web.client.get(f"/staff/tickets?view={views['Theirs']}")
    assert hidden.status == 404
    assert "does not exist or you cannot see it" in await hidden.text()
    missing = await web.client.get("/staff/tickets?view=987654")
    assert missing.status == 404


async def test_search_sort_and_filters(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    insert_tickets(conn, 30)
    conn.execute("UPDATE tickets SET title = 'Printer on fire' WHERE id = 7")
    await web.login("agent@example.com")
    found = await get_ok(web, "/staff/tickets?q=PRINTER")
    assert ticket_ids(found) == [7]
    assert "1 ticket<" in found
    assert 'value="PRINTER"' in found
    oldest = await get_ok(web, "/staff/tickets?sort=oldest")
    assert ticket_ids(oldest)[0] == 30  # created g minutes ago: id 30 is the oldest
    assert 'data-sort="oldest" aria-current="true"' in oldest
    newest = await get_ok(web, "/staff/tickets?sort=newest")
    assert ticket_ids(newest)[0] == 1
    by_status = await get_ok(web, "/staff/tickets?status=new")
    expected = [r[0] for r in conn.execute("SELECT id FROM tickets WHERE status_id = 1")]
    assert sorted(ticket_ids(by_status)) == sorted(expected)
    assert '<option value="new" selected>' in by_status
    combined = await get_ok(web, "/staff/tickets?status=new&priority=urgent&sort=oldest&q=ticket")
    expected = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM tickets WHERE status_id = 1 AND priority_id = 1 ORDER BY created_at, id"
        )
    ]
    assert ticket_ids(combined) == expected
    # Paging keeps the search, sort and filters.
    insert_tickets(conn, 60, title="Bulk")
    page = await get_ok(web, "/staff/tickets?q=bulk&sort=oldest")
    link = next_link(page)
    assert link is not None
    assert "q=bulk" in link
    assert "sort=oldest" in link


async def test_long_values_are_cut_visually_with_the_full_text_in_title(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    insert_tickets(conn, 1)
    long_title = "<b>x</b> " + "y" * 300
    conn.execute("UPDATE tickets SET title = %s", (long_title,))
    await web.login("agent@example.com")
    text = await get_ok(web, "/staff/tickets")
    escaped = html.escape(long_title, quote=True).replace("&#x27;", "&#39;")
    assert f'title="{escaped}"><span class="cell">{escaped}</span>' in text
    assert "<b>x</b>" not in text


async def test_export_button_only_with_the_export_permission(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    user_id = make_user(conn, "agent@example.com")
    make_user(conn, "exporter@example.com", permissions=int(Permission.IMPORT_EXPORT_TICKETS))
    insert_tickets(conn, 3)
    await web.login("agent@example.com")
    text = await get_ok(web, "/staff/tickets?view=open&q=ticket&sort=oldest&status=new")
    assert "/staff/tickets/export" not in text
    assert 'id="export-button"' not in text
    # Granting the permission applies on the very next request, without a new login.
    conn.execute(
        "INSERT INTO user_roles (user_id, role_id) SELECT %s, id FROM roles "
        "WHERE permissions & 512 <> 0",
        (user_id,),
    )
    text = await get_ok(web, "/staff/tickets?view=open&q=ticket&sort=oldest&status=new")
    form = re.search(
        r'<form method="post" action="/staff/tickets/export"[^>]*>(.*?)</form>', text, re.S
    )
    assert form is not None
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', form[1]))
    assert fields.pop("csrf_token")
    assert fields == {"view": "open", "q": "ticket", "sort": "oldest", "status": "new"}
    conn.execute("DELETE FROM user_roles WHERE user_id = %s", (user_id,))
    text = await get_ok(web, "/staff/tickets")
    assert 'id="export-button"' not in text


async def test_admin_flag_and_roles_are_read_fresh(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    text = await get_ok(web, "/staff/views/new")
    assert 'name="system_wide"' not in text
    make_user(conn, "boss@example.com", permissions=int(Permission.MANAGE_SYSTEM_VIEWS))
    conn.execute(
        "INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM users u, roles r "
        "WHERE u.email = 'agent@example.com'"
    )
    text = await get_ok(web, "/staff/views/new")
    assert 'name="system_wide"' in text


async def test_bad_parameters_give_a_400_page_naming_the_problem(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    for query, message in (
        ("sort=sideways", "unknown sort &#39;sideways&#39;"),
        ("colour=blue", "unknown parameter &#39;colour&#39;"),
        ("view=everything", "unknown view &#39;everything&#39;"),
        ("snoozed=maybe", "snoozed= must be exclude, only or any"),
        ("status=nonexistent", "nonexistent"),
        ("assignee=abc", "assignee= must be an id"),
        ("page=not-a-cursor", "page"),
        ("q=" + "x" * 201, "too long"),
        ("q=a&q=b", "given more than once"),
    ):
        response = await web.client.get(f"/staff/tickets?{query}")
        assert response.status == 400, query
        text = await response.text()
        assert message in text, (query, text[-600:])
        assert 'action="/logout"' in text
