"""Saved views pages: the editor form, create, edit, delete, permissions and validation."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.support.web import Web, insert_tickets, make_user
from ticketexport.domain.permissions import Permission
from ticketexport.views import registry

_HEAD = re.compile(r'<th scope="col" data-column="([a-z_]+)">')
_ROW = re.compile(r'<tr data-ticket="(\d+)">')


def base_form(token: str, **extra: Any) -> list[tuple[str, str]]:
    form = [
        ("csrf_token", token),
        ("name", "Urgent printers"),
        ("and-0-field", "title"),
        ("and-0-op", "contains"),
        ("and-0-text", "printer"),
        ("and-1-field", "priority"),
        ("and-1-op", "any_of"),
        ("and-1-ids-priority", "urgent"),
        ("and-1-ids-priority", "high"),
        ("col", "title"),
        ("col", "id"),
        ("col", "priority"),
        ("order-title", "1"),
        ("order-id", "2"),
        ("order-priority", "3"),
        ("sort-0-column", "id"),
        ("sort-0-dir", "desc"),
    ]
    replaced = set(extra)
    return [(k, v) for k, v in form if k not in replaced] + [
        (k, v)
        for k, values in extra.items()
        for v in (values if isinstance(values, list) else [values])
    ]


def stored(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT name, owner_id, conditions_and, conditions_or, columns, sort "
        "FROM saved_views ORDER BY id"
    ).fetchall()


async def test_editor_offers_the_registry(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    response = await web.client.get("/staff/views/new")
    assert response.status == 200
    text = await response.text()
    for key, field in registry.FIELDS.items():
        assert f'<option value="{key}" data-type="{field.type.value}"' in text
    for field_type, operators in registry.OPERATORS.items():
        group = re.search(
            rf'<optgroup label="[^"]*" data-type="{field_type.value}">(.*?)</optgroup>', text, re.S
        )
        assert group is not None
        keys = re.findall(r'<option value="([a-z_]+)" data-kind="([a-z_]+)"', group[1])
        assert keys == [(op.key, op.value_kind) for op in operators]
    for kind in ("text", "number", "date"):
        assert f'type="{kind}" name="and-0-{kind}"' in text
    assert 'name="and-0-amount"' in text
    assert 'name="and-0-ids-person" multiple' in text
    assert 'name="and-0-ids-team" multiple' in text
    assert 'name="and-0-ids-status" multiple' in text
    assert 'name="or-7-field"' in text
    assert 'name="sort-5-column"' in text
    for key in registry.COLUMNS:
        assert f'name="col" value="{key}"' in text
    assert 'name="system_wide"' not in text
    assert "/static/editor.js" in text


async def test_create_view_and_see_its_columns_and_rows(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    user_id = make_user(conn, "agent@example.com")
    insert_tickets(conn, 12)
    conn.execute("UPDATE tickets SET title = 'Printer jam ' || id WHERE id IN (1, 2, 3, 4)")
    conn.execute("UPDATE tickets SET priority_id = 1 WHERE id IN (1, 2)")
    conn.execute("UPDATE tickets SET priority_id = 3 WHERE id IN (3, 4)")
    await web.login("agent@example.com")
    token = await web.csrf()
    response = await web.client.post(
        "/staff/views/new", data=base_form(token), allow_redirects=False
    )
    assert response.status == 303, await response.text()
    [(name, owner, cond_and, cond_or, columns, sort)] = stored(conn)
    assert (name, owner, cond_or, columns) == (
        "Urgent printers",
        user_id,
        [],
        ["title", "id", "priority"],
    )
    assert cond_and == [
        {"field": "title", "operator": "contains", "value": "printer"},
        {"field": "priority", "operator": "any_of", "value": ["urgent", "high"]},
    ]
    assert sort == [{"column": "id", "direction": "desc"}]
    location = response.headers["Location"]
    list_page = await web.client.get(location)
    text = await list_page.text()
    assert _HEAD.findall(text) == ["title", "id", "priority"]
    assert [int(x) for x in _ROW.findall(text)] == [2, 1]
    assert ">Urgent printers</a>" in text


async def test_typed_values_round_trip_through_the_editor(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    other = make_user(conn, "other@example.com", name="Olga Other")
    await web.login("agent@example.com")
    token = await web.csrf()
    form = base_form(
        token,
        **{
            "and-0-field": "created_at",
            "and-0-op": "within_past",
            "and-0-amount": "3",
            "and-0-unit": "days",
            "and-1-field": "assignee",
            "and-1-op": "none_of",
            "and-1-ids-person": [str(other)],
            "or-0-field": "closed_at",
            "or-0-op": "on_or_after",
            "or-0-date": "2024-03-01",
            "or-1-field": "status",
            "or-1-op": "type_is",
            "or-1-status_type": "closed",
            "or-2-field": "has_tasks",
            "or-2-op": "is_true",
            "or-3-field": "id",
            "or-3-op": "ge",
            "or-3-number": "40",
            "or-4-field": "sla_due_at",
            "or-4-op": "preset",
            "or-4-preset": "next_week",
            "or-5-field": "priority",
            "or-5-op": "more_important_than",
            "or-5-priority_ref": "normal",
        },
    )
    response = await web.client.post("/staff/views/new", data=form, allow_redirects=False)
    assert response.status == 303, await response.text()
    [(_, _, cond_and, cond_or, _, _)] = stored(conn)
    assert cond_and == [
        {"field": "created_at", "operator": "within_past", "value": {"amount": 3, "unit": "days"}},
        {"field": "assignee", "operator": "none_of", "value": [other]},
    ]
    assert [c["value"] for c in cond_or] == [
        "2024-03-01",
        "closed",
        None,
        40,
        "next_week",
        "normal",
    ]
    view_id = conn.execute("SELECT id FROM saved_views").fetchone()[0]
    edit = await web.client.get(f"/staff/views/{view_id}/edit")
    text = await edit.text()
    assert edit.status == 200
    assert 'name="and-0-amount" value="3"' in text
    assert f'<option value="{other}" selected>Olga Other</option>' in text
    assert 'name="or-0-date" value="2024-03-01"' in text
    assert 'name="or-3-number" value="40"' in text
    assert '<option value="next_week" selected>' in text
    # Re-saving the unchanged form keeps the definition exactly.
    before = stored(conn)
    form_again = await web.client.post(
        f"/staff/views/{view_id}/edit", data=form, allow_redirects=False
    )
    assert form_again.status == 303
    assert stored(conn) == before


async def test_invalid_submission_shows_the_form_again_with_the_message(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    token = await web.csrf()
    cases = [
        (
            {"and-0-field": "created_at", "and-0-op": "on", "and-0-date": "2024-02-30"},
            "not a real date",
        ),
        ({"and-0-field": "shoe_size"}, "unknown field &#39;shoe_size&#39;"),
        ({"and-0-op": "before"}, "has no operator &#39;before&#39;"),
        ({"and-1-ids-priority": []}, "needs at least one value"),
        ({"name": "   "}, "the view name must not be empty"),
        ({"col": []}, "choose at least one column"),
        ({"col": ["id", "bogus"]}, "unknown column &#39;bogus&#39;"),
        ({"order-title": "first"}, "position of column &#39;Title&#39;"),
        ({"sort-0-column": "tasks"}, "cannot be sorted on"),
        ({"sort-0-column": ""}, "choose at least one sort level"),
        ({"sort-0-dir": "up"}, "direction must be ascending or descending"),
        ({"and-0-field": "id", "and-0-op": "lt", "and-0-number": "ten"}, "whole number"),
        (
            {"and-0-field": "assignee", "and-0-op": "is", "and-0-ids-person": "999999"},
            "unknown user",
        ),
    ]
    for extra, message in cases:
        form = base_form(token, **extra)
        response = await web.client.post("/staff/views/new", data=form)
        text = await response.text()
        assert response.status == 400, (extra, text[-400:])
        assert message in text, (extra, re.findall(r'id="form-error">([^<]*)', text))
        assert 'class="form-error"' in text
        if "name" not in extra:
            assert 'name="name" value="Urgent printers"' in text  # input kept
    assert stored(conn) == []


async def test_edit_and_delete_own_view(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    token = await web.csrf()
    await web.client.post("/staff/views/new", data=base_form(token), allow_redirects=False)
    view_id = conn.execute("SELECT id FROM saved_views").fetchone()[0]
    listing = await (await web.client.get("/staff/views")).text()
    assert f'href="/staff/views/{view_id}/edit"' in listing
    response = await web.client.post(
        f"/staff/views/{view_id}/edit",
        data=base_form(token, name="Renamed", col=["status"]),
        allow_redirects=False,
    )
    assert response.status == 303
    assert [(r[0], r[4]) for r in stored(conn)] == [("Renamed", ["status"])]
    deleted = await web.client.post(
        f"/staff/views/{view_id}/delete", data={"csrf_token": token}, allow_redirects=False
    )
    assert deleted.status == 303
    assert deleted.headers["Location"] == "/staff/views"
    assert stored(conn) == []
    gone = await web.client.get(f"/staff/views/{view_id}/edit")
    assert gone.status == 404


async def test_system_wide_views_need_permission_256(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    make_user(conn, "boss@example.com", permissions=int(Permission.MANAGE_SYSTEM_VIEWS))
    await web.login("agent@example.com")
    token = await web.csrf()
    refused = await web.client.post(
        "/staff/views/new", data=base_form(token, system_wide="1"), allow_redirects=False
    )
    assert refused.status == 403
    assert stored(conn) == []

    await web.login("boss@example.com")
    token = await web.csrf()
    page = await (await web.client.get("/staff/views/new")).text()
    assert 'name="system_wide" value="1"' in page
    created = await web.client.post(
        "/staff/views/new",
        data=base_form(token, system_wide="1", name="Team board"),
        allow_redirects=False,
    )
    assert created.status == 303
    [(name, owner, *_)] = stored(conn)
    assert (name, owner) == ("Team board", None)
    view_id = conn.execute("SELECT id FROM saved_views").fetchone()[0]
    edit = await (await web.client.get(f"/staff/views/{view_id}/edit")).text()
    assert 'name="system_wide" value="1" checked' in edit

    # Everyone sees it; only holders of 256 may change or delete it.
    await web.login("agent@example.com")
    token = await web.csrf()
    listing = await (await web.client.get("/staff/tickets")).text()
    assert ">Team board</a>" in listing
    assert (await web.client.get(f"/staff/tickets?view={view_id}")).status == 200
    assert (await web.client.get(f"/staff/views/{view_id}/edit")).status == 403
    for path, data in (
        (f"/staff/views/{view_id}/edit", base_form(token, name="Hijacked")),
        (f"/staff/views/{view_id}/delete", [("csrf_token", token)]),
    ):
        response = await web.client.post(path, data=data, allow_redirects=False)
        assert response.status == 403, path
    assert [r[0] for r in stored(conn)] == ["Team board"]


async def test_other_users_private_views_are_404(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    make_user(conn, "other@example.com", permissions=int(Permission.MANAGE_SYSTEM_VIEWS))
    await web.login("other@example.com")
    token = await web.csrf()
    await web.client.post("/staff/views/new", data=base_form(token), allow_redirects=False)
    view_id = conn.execute("SELECT id FROM saved_views").fetchone()[0]

    await web.login("agent@example.com")
    token = await web.csrf()
    assert (await web.client.get(f"/staff/views/{view_id}/edit")).status == 404
    assert (await web.client.get(f"/staff/tickets?view={view_id}")).status == 404
    listing = await (await web.client.get("/staff/views")).text()
    assert "Urgent printers" not in listing
    for path, data in (
        (f"/staff/views/{view_id}/edit", base_form(token, name="Mine now")),
        (f"/staff/views/{view_id}/delete", [("csrf_token", token)]),
    ):
        response = await web.client.post(path, data=data, allow_redirects=False)
        assert response.status == 404, path
    assert [r[0] for r in stored(conn)] == ["Urgent printers"]
