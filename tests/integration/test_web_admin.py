"""The administration pages: who may open each one, the account rules behind the forms,
the audit log's filters, pages and CSV, and the queue's figures."""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from typing import Any

import psycopg
import pytest

from tests.support.web import Web, insert_tickets, make_user, running
from ticketexport import accounts
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission

ROOT = "root@example.com"  # administrator holding every permission
USERS_ADMIN = "people@example.com"  # administrator with `users` only
AUDITOR = "auditor@example.com"  # administrator with `audit_logs` only
OPERATOR = "ops@example.com"  # administrator with `system_settings` only
STAFF_ALL = "staff@example.com"  # every permission, but not an administrator
PLAIN = "plain@example.com"  # nothing at all

PEOPLE = {
    ROOT: (True, int(ALL_PERMISSIONS)),
    USERS_ADMIN: (True, int(Permission.USERS)),
    AUDITOR: (True, int(Permission.AUDIT_LOGS)),
    OPERATOR: (True, int(Permission.SYSTEM_SETTINGS)),
    STAFF_ALL: (False, int(ALL_PERMISSIONS)),
    PLAIN: (False, 0),
}
# Who may open each section (besides ROOT, who holds everything).
SECTION_USERS = {
    "/admin/users": {ROOT, USERS_ADMIN},
    "/admin/roles": {ROOT},
    "/admin/audit": {ROOT, AUDITOR},
    "/admin/queue": {ROOT, OPERATOR},
}


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    ids = {}
    for email, (admin, bits) in PEOPLE.items():
        ids[email] = make_user(conn, email, permissions=bits, admin=admin, name="Some One")
    return ids


def counts(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM roles),"
        " (SELECT count(*) FROM user_roles), (SELECT count(*) FROM audit_log"
        "   WHERE action LIKE 'user.%%' OR action LIKE 'role.%%'),"
        " (SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u),"
        " (SELECT md5(string_agg(r::text, ',' ORDER BY id)) FROM roles r)"
    ).fetchone()
    assert row is not None
    return tuple(row)


async def post(web: Web, path: str, fields: list[tuple[str, str]], token: str) -> Any:
    return await web.client.post(path, data=[("csrf_token", token), *fields], allow_redirects=False)


def form_error(text: str) -> str:
    match = re.search(r'id="form-error">([^<]*)<', text)
    assert match, "the page shows no form error"
    return match.group(1)


async def test_access_matrix(
    web: Web, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    target = people[PLAIN]
    gets = [
        ("/admin/users", "/admin/users"),
        (f"/admin/users/{target}", "/admin/users"),
        ("/admin/roles", "/admin/roles"),
        ("/admin/roles/r_staff_example_com", "/admin/roles"),
        ("/admin/audit", "/admin/audit"),
        ("/admin/audit.csv", "/admin/audit"),
        ("/admin/queue", "/admin/queue"),
    ]
    posts = [
        (
            "/admin/users",
            "/admin/users",
            [("name", "New Person"), ("email", "new@example.com"), ("password", "pw")],
        ),
        (
            f"/admin/users/{target}",
            "/admin/users",
            [("name", "Renamed"), ("email", PLAIN), ("active", "1")],
        ),
        ("/admin/roles", "/admin/roles", [("dev_name", "newrole"), ("label", "New")]),
        (
            "/admin/roles/r_staff_example_com",
            "/admin/roles",
            [("label", "Changed"), ("permissions", "templates")],
        ),
    ]
    for email in PEOPLE:
        assert (await web.login(email)).status == 303
        token = await web.csrf()
        for path, section in gets:
            response = await web.client.get(path, allow_redirects=False)
            expected = 200 if email in SECTION_USERS[section] else 404
            assert response.status == expected, (email, path, response.status)
        nav = await (await web.client.get("/staff/tickets")).text()
        assert ('id="nav-admin"' in nav) == any(email in who for who in SECTION_USERS.values())
        for path, section, fields in posts:
            if email in SECTION_USERS[section]:
                continue
            before = counts(conn)
            response = await post(web, path, fields, token)
            assert response.status == 404, (email, path, response.status)
            assert counts(conn) == before, (email, path)
    # Not signed in: pages send to the login, a POST is refused.
    web.client.session.cookie_jar.clear()
    for path, _ in gets:
        response = await web.client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/login?next=")
    for path, _, fields in posts:
        before = counts(conn)
        response = await web.client.post(path, data=fields, allow_redirects=False)
        assert response.status in (401, 403)
        assert counts(conn) == before


async def test_add_edit_and_deactivate_a_user(
    web: Web, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    accounts.add_role(conn, "exporter", label="Exporter", permissions=Permission(512))
    assert (await web.login(ROOT)).status == 303
    token = await web.csrf()
    added = await post(
        web,
        "/admin/users",
        [
            ("name", "Nia Newcomer"),
            ("email", "Nia@Example.com"),
            ("password", "first password"),
            ("roles", "exporter"),
        ],
        token,
    )
    assert added.status == 303
    new_id = int(added.headers["Location"].rsplit("/", 1)[1])
    page = await (await web.client.get(added.headers["Location"])).text()
    assert "nia@example.com" in page
    assert 'value="exporter" checked' in page
    # Their own session, in a second client.
    async with running(web.services.database_url) as other:
        assert (await other.login("nia@example.com", "first password")).status == 303
        assert (await other.client.get("/staff/tickets")).status == 200
        # Renamed, a new password, no roles, deactivated: every session of theirs ends.
        changed = await post(
            web,
            f"/admin/users/{new_id}",
            [("name", "Nia Renamed"), ("email", "nia@example.com"), ("password", "second")],
            token,
        )
        assert changed.status == 303
        assert changed.headers["Location"] == f"/admin/users/{new_id}?saved=1"
        after = await other.client.get("/staff/tickets", allow_redirects=False)
        assert after.status == 303
        assert after.headers["Location"].startswith("/login")
        assert (await other.login("nia@example.com", "second")).status != 303
    row = conn.execute(
        "SELECT first_name, last_name, is_active, is_admin FROM users WHERE id = %s", (new_id,)
    ).fetchone()
    assert row == ("Nia", "Renamed", False, False)
    assert conn.execute(
        "SELECT count(*) FROM user_roles WHERE user_id = %s", (new_id,)
    ).fetchone() == (0,)
    audit = conn.execute(
        "SELECT action, actor_email, details FROM audit_log WHERE action LIKE 'user.%%' ORDER BY id"
    ).fetchall()
    assert [a for a, _, _ in audit] == ["user.created", "user.updated"]
    assert {e for _, e, _ in audit} == {ROOT}
    created, updated = audit[0][2], audit[1][2]
    assert created["target"] == "nia@example.com"
    assert created["before"] is None
    assert created["after"]["roles"] == ["exporter"]
    assert updated["before"] == {
        "email": "nia@example.com",
        "name": "Nia Newcomer",
        "admin": False,
        "active": True,
        "roles": ["exporter"],
    }
    assert updated["after"] == {
        "email": "nia@example.com",
        "name": "Nia Renamed",
        "admin": False,
        "active": False,
        "roles": [],
    }
    assert updated["password_changed"] is True
    assert "second" not in str(updated)
    assert "argon2" not in str(updated)


async def test_bad_forms_say_what_is_wrong(
    web: Web, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    assert (await web.login(ROOT)).status == 303
    token = await web.csrf()
    before = counts(conn)
    cases = [
        ([("name", "X"), ("email", "not-an-address"), ("password", "p")], "not a valid email"),
        ([("name", "X"), ("email", ROOT), ("password", "p")], "already exists"),
        (
            [("name", "X"), ("email", "x@example.com"), ("password", "p"), ("roles", "nope")],
            "unknown role",
        ),
        (
            [("name", "X"), ("email", "x@example.com"), ("password", "p"), ("admin", "yes")],
            "checkbox",
        ),
        ([("name", " "), ("email", "x@example.com"), ("password", "p")], "required"),
        ([("name", "X"), ("email", "x@example.com")], "required"),
    ]
    for fields, message in cases:
        response = await post(web, "/admin/users", fields, token)
        assert response.status == 400, fields
        assert message in form_error(await response.text()), fields
    for fields, message in [
        ([("dev_name", "Bad Name"), ("label", "x")], "lower-case"),
        ([("dev_name", "fine"), ("label", "x"), ("permissions", "root")], "unknown permission"),
        ([("dev_name", "r_root_example_com"), ("label", "x")], "already exists"),
    ]:
        response = await post(web, "/admin/roles", fields, token)
        assert response.status == 400, fields
        assert message in form_error(await response.text()), fields
    assert counts(conn) == before
    assert (await web.client.get("/admin/users/999999")).status == 404
    assert (await web.client.get("/admin/roles/nosuchrole")).status == 404
    missing = await post(web, "/admin/roles/nosuchrole", [("label", "x")], token)
    assert missing.status == 404


async def test_no_escalation(
    web: Web, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    accounts.add_role(conn, "exporter", label="Exporter", permissions=Permission(512))
    accounts.add_role(conn, "people", label="People", permissions=Permission.USERS)
    assert (await web.login(USERS_ADMIN)).status == 303
    token = await web.csrf("/admin/users")
    before = counts(conn)
    # A role holding a permission the granter lacks.
    refused = await post(
        web,
        "/admin/users",
        [
            ("name", "Esc Alate"),
            ("email", "esc@example.com"),
            ("password", "p"),
            ("roles", "exporter"),
        ],
        token,
    )
    assert refused.status == 403
    assert "import_export_tickets" in form_error(await refused.text())
    # The administrator flag needs `administrators`.
    flagged = await post(
        web,
        "/admin/users",
        [("name", "Esc Alate"), ("email", "esc@example.com"), ("password", "p"), ("admin", "1")],
        token,
    )
    assert flagged.status == 403
    assert "Administrators permission" in form_error(await flagged.text())
    plain = people[PLAIN]
    for fields in (
        [
            ("name", "Some One"),
            ("email", PLAIN),
            ("active", "1"),
            ("roles", "exporter"),
        ],
        [
            ("name", "Some One"),
            ("email", PLAIN),
            ("active", "1"),
            ("admin", "1"),
        ],
    ):
        response = await post(web, f"/admin/users/{plain}", fields, token)
        assert response.status == 403, fields
    assert counts(conn) == before
    # Roles the granter holds every permission of are fine; an absent admin box keeps the flag.
    allowed = await post(
        web,
        "/admin/users",
        [
            ("name", "Fine One"),
            ("email", "fine@example.com"),
            ("password", "p"),
            ("roles", "people"),
        ],
        token,
    )
    assert allowed.status == 303
    kept = await post(
        web,
        f"/admin/users/{people[AUDITOR]}",
        [
            ("name", "Some One"),
            ("email", AUDITOR),
            ("active", "1"),
            ("roles", "r_auditor_example_com"),
        ],
        token,
    )
    assert kept.status == 303
    assert conn.execute("SELECT is_admin FROM users WHERE email = %s", (AUDITOR,)).fetchone() == (
        True,
    )
    # A role administrator cannot give a role a permission they do not hold.
    accounts.add_role(conn, "roles_only", label="Roles", permissions=Permission.ADMINISTRATORS)
    make_user(conn, "roles@example.com", admin=True)
    accounts.set_user(conn, "roles@example.com", add_roles=["roles_only"])
    assert (await web.login("roles@example.com")).status == 303
    token = await web.csrf("/admin/roles")
    before = counts(conn)
    for path, fields in (
        (
            "/admin/roles",
            [("dev_name", "sneaky"), ("label", "S"), ("permissions", "import_export_tickets")],
        ),
        (
            "/admin/roles/people",
            [
                ("label", "People"),
                ("permissions", "users"),
                ("permissions", "import_export_tickets"),
            ],
        ),
    ):
        response = await post(web, path, fields, token)
        assert response.status == 403, path
        assert "permissions you do not have" in form_error(await response.text())
    assert counts(conn) == before


async def test_guard_rails(web: Web, people: dict[str, int], conn: psycopg.Connection[Any]) -> None:
    root = people[ROOT]
    assert (await web.login(ROOT)).status == 303
    token = await web.csrf("/admin/users")
    mine = [("name", "Some One"), ("email", ROOT), ("roles", "r_root_example_com")]
    before = counts(conn)
    demote = await post(web, f"/admin/users/{root}", [*mine, ("active", "1")], token)
    assert demote.status == 403
    assert form_error(await demote.text()) == "you cannot remove your own administrator flag"
    leave = await post(web, f"/admin/users/{root}", [*mine, ("admin", "1")], token)
    assert leave.status == 403
    assert form_error(await leave.text()) == "you cannot deactivate yourself"
    # Root is the only active administrator holding `administrators`: its role keeps it.
    strip = await post(
        web, "/admin/roles/r_root_example_com", [("label", "root"), ("permissions", "users")], token
    )
    assert strip.status == 403
    assert "no active administrator" in form_error(await strip.text())
    # Taking the role away from root's own account is the same.
    unrole = await post(
        web,
        f"/admin/users/{root}",
        [("name", "Some One"), ("email", ROOT), ("active", "1"), ("admin", "1")],
        token,
    )
    assert unrole.status == 403
    assert "no active administrator" in form_error(await unrole.text())
    assert counts(conn) == before
    # With a second administrator holding `administrators`, the first may be demoted by them.
    second = make_user(conn, "second@example.com", permissions=int(ALL_PERMISSIONS), admin=True)
    assert (await web.login("second@example.com")).status == 303
    token = await web.csrf("/admin/users")
    done = await post(web, f"/admin/users/{root}", [*mine], token)
    assert done.status == 303
    assert conn.execute(
        "SELECT is_admin, is_active FROM users WHERE id = %s", (root,)
    ).fetchone() == (False, False)
    # ...and now the second is the last one.
    last = await post(
        web,
        "/admin/roles/r_second_example_com",
        [("label", "x"), ("permissions", "users")],
        token,
    )
    assert last.status == 403
    assert second > 0


async def test_audit_filters_pages_and_csv(
    web: Web, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    export_id = "6f1c1d7e-3b1a-4c55-9a57-0d3e7c1b2a90"
    conn.execute(
        "INSERT INTO audit_log (occurred_at, actor_email, action, client_ip, export_id, details)"
        " SELECT timestamptz '2026-11-01 12:00+00' + make_interval(mins => g),"
        "   CASE WHEN g %% 3 = 0 THEN 'a@example.com' ELSE 'b@example.com' END,"
        "   CASE WHEN g %% 2 = 0 THEN 'export.requested' ELSE 'export.downloaded' END,"
        "   '10.0.0.1', CASE WHEN g = 7 THEN %s::uuid END, jsonb_build_object('n', g)"
        " FROM generate_series(1, 130) AS g",
        (export_id,),
    )
    conn.execute(
        "INSERT INTO audit_log (occurred_at, actor_email, action, details)"
        " VALUES ('2026-11-03 09:00+00', 'c@example.com', 'login.failed', '{\"email\": \"=cmd\"}')"
    )
    assert (await web.login(AUDITOR)).status == 303

    async def ids(query: dict[str, str]) -> list[int]:
        found: list[int] = []
        url = "/admin/audit?" + urllib.parse.urlencode(query)
        while url:
            response = await web.client.get(url)
            assert response.status == 200, url
            text = await response.text()
            page = [int(x) for x in re.findall(r'data-id="(\d+)"', text)]
            assert len(page) <= 50
            found += page
            match = re.search(r'href="([^"]+)" id="next-page"', text)
            url = match.group(1).replace("&amp;", "&") if match else ""
        return found

    def expected(where: str, params: tuple[Any, ...] = ()) -> list[int]:
        rows = conn.execute(
            f"SELECT id FROM audit_log WHERE {where} ORDER BY occurred_at DESC, id DESC", params
        ).fetchall()
        return [r[0] for r in rows]

    everything = await ids({})
    assert everything == expected("true")
    assert len(everything) == len(set(everything)) > 100
    assert await ids({"action": "export.requested"}) == expected("action = 'export.requested'")
    assert await ids({"actor": "A@example.com"}) == expected("actor_email = 'a@example.com'")
    assert await ids({"export": export_id.upper()}) == expected("export_id = %s", (export_id,))
    assert await ids({"from": "2026-11-02", "to": "2026-11-03"}) == expected(
        "occurred_at >= '2026-11-02' AND occurred_at < '2026-11-04'"
    )
    assert await ids(
        {"from": "2026-11-01T13:00", "to": "2026-11-01T13:30", "action": "export.downloaded"}
    ) == expected(
        "occurred_at >= '2026-11-01 13:00+00' AND occurred_at < '2026-11-01 13:31+00'"
        " AND action = 'export.downloaded'"
    )
    for bad in (
        {"action": "DROP TABLE"},
        {"export": "not-a-uuid"},
        {"from": "2026-13-45"},
        {"from": "2026-11-03", "to": "2026-11-01"},
        {"page": "!!!"},
        {"page": "bm90IGEgY3Vyc29y"},
        {"sort": "id"},
    ):
        response = await web.client.get("/admin/audit?" + urllib.parse.urlencode(bad))
        assert response.status == 400, bad
    # A page shows readable times in <time datetime>.
    page = await (await web.client.get("/admin/audit?actor=c@example.com")).text()
    assert '<time datetime="2026-11-03T09:00:00+00:00">3 Nov 2026, 09:00 UTC</time>' in page
    # The CSV holds exactly the filtered rows, newest first, guarded, and is itself audited.
    response = await web.client.get("/admin/audit.csv?action=login.failed")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    body = (await response.read()).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == [
        "id",
        "occurred_at",
        "actor_id",
        "actor_email",
        "action",
        "client_ip",
        "export_id",
        "details",
    ]
    assert [r[4] for r in rows[1:]] == ["login.failed"]
    assert rows[1][1] == "2026-11-03T09:00:00+00:00"
    assert rows[1][7] == '{"email": "=cmd"}'
    whole = list(
        csv.reader(
            io.StringIO(
                (await (await web.client.get("/admin/audit.csv")).read()).decode("utf-8-sig")
            )
        )
    )
    # Every row, its own audit.exported row included (written before the first byte).
    assert [int(r[0]) for r in whole[1:]] == expected("true")
    logged = conn.execute(
        "SELECT actor_email, details FROM audit_log WHERE action = 'audit.exported' ORDER BY id"
    ).fetchall()
    assert logged[0] == (AUDITOR, {"filters": {"action": "login.failed"}})
    assert len(logged) == 2


async def test_queue_page(
    db_url: str, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    insert_tickets(conn, 5)
    async with running(db_url, stall_seconds=0.5) as web:
        assert (await web.login(STAFF_ALL)).status == 303
        token = await web.csrf()
        first = await web.client.post(
            "/staff/tickets/export",
            data={"view": "all", "csrf_token": token},
            allow_redirects=False,
        )
        assert first.status == 303
        export_id = first.headers["Location"].rsplit("/", 1)[1]
        conn.execute(
            "UPDATE export_jobs SET requested_at = now() - interval '1 minute' WHERE id = %s",
            (export_id,),
        )
        assert (await web.login(ROOT)).status == 303
        text = await (await web.client.get("/admin/queue")).text()
        assert (
            f'data-export="{export_id}"' in text.split('id="queue-stalled"')[1].split("</table>")[0]
        )
        assert re.search(r"<td>[a-z_]+</td><td>todo</td><td>1</td>", text)
        assert "Oldest waiting job:" in text
        assert "due since <time datetime=" in text
        assert f'action="/staff/exports/{export_id}/cancel"' in text
        # Cancel from the queue page follows the export rules: root is an admin with 512.
        token = await web.csrf("/admin/queue")
        cancelled = await web.client.post(
            f"/staff/exports/{export_id}/cancel", data={"csrf_token": token}, allow_redirects=False
        )
        assert cancelled.status == 303
        second = await web.client.post(
            "/staff/tickets/export",
            data={"view": "open", "csrf_token": token},
            allow_redirects=False,
        )
        failed_id = second.headers["Location"].rsplit("/", 1)[1]
        conn.execute(
            "UPDATE export_jobs SET status = 'failed', error_code = 'storage_unavailable',"
            " error_message = 'Storage is unavailable.', finished_at = now() WHERE id = %s",
            (failed_id,),
        )
        text = await (await web.client.get("/admin/queue")).text()
        assert export_id not in text.split('id="queue-stalled"')[1]
        failing = text.split('id="queue-failing"')[1].split("</table>")[0]
        assert f'data-export="{failed_id}"' in failing
        assert "storage_unavailable" in failing
        assert f'action="/staff/exports/{failed_id}/retry"' in failing
        assert "<code>storage_unavailable</code>: 1" in text
        # An operator without 512 sees the figures but no buttons.
        assert (await web.login(OPERATOR)).status == 303
        text = await (await web.client.get("/admin/queue")).text()
        assert "/cancel" not in text
        assert "/retry" not in text
