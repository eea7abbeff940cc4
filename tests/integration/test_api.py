"""API tokens and the JSON API over HTTP: a token's life, scopes, the rate limit, audit,
cookies never counting, and a script that uses nothing but a token."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
import pytest_asyncio
from psycopg.rows import dict_row

from tests.support.api import (
    ALL_SCOPES,
    api,
    bearer,
    error_of,
    make_schedule,
    make_token,
    run_schedules,
    run_worker,
)
from tests.support.web import Web, csrf_in, insert_tickets, make_user, running
from ticketexport import tokens
from ticketexport.exports.worker import ExportRun

EXPORT = 512
ADMIN = "api.admin@example.com"
STAFF = "api.staff@example.com"
OTHER = "api.other@example.com"
NOBODY = "api.nobody@example.com"
SECRET = re.compile(r"^tex_[A-Za-z0-9_-]{43}$")

Conn = psycopg.Connection[Any]


@pytest.fixture
def people(conn: Conn) -> dict[str, int]:
    insert_tickets(conn, 30, title="Api")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=EXPORT, admin=True),
        STAFF: make_user(conn, STAFF, permissions=EXPORT),
        OTHER: make_user(conn, OTHER, permissions=EXPORT),
        NOBODY: make_user(conn, NOBODY),
    }


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int]) -> AsyncIterator[Web]:
    async with running(db_url, heartbeat_seconds=0.2, keepalive_seconds=0.3) as client:
        yield client


def audit_rows(db_url: str, action: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT actor_email, export_id::text, details FROM audit_log WHERE action = %s "
            "ORDER BY id",
            (action,),
        ).fetchall()


# --- the tokens page -----------------------------------------------------------------------


async def test_tokens_page_creates_shows_once_lists_and_revokes(web: Web, db_url: str) -> None:
    assert (await web.login(STAFF)).status == 303
    page = await web.client.get("/staff/tokens")
    assert page.status == 200
    csrf = csrf_in(await page.text())
    created = await web.client.post(
        "/staff/tokens",
        data=[
            ("csrf_token", csrf),
            ("name", "Power BI"),
            ("scopes", "exports:read"),
            ("scopes", "views:read"),
            ("expires_days", ""),
        ],
    )
    text = await created.text()
    assert created.status == 200, text
    secret = re.search(r'id="token-secret" value="([^"]+)"', text)
    assert secret is not None
    assert SECRET.fullmatch(secret.group(1))
    # Shown once: the list shows the token but never its secret again.
    again = await (await web.client.get("/staff/tokens")).text()
    assert "Power BI" in again
    assert secret.group(1) not in again
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM api_tokens").fetchone()
    assert row is not None
    assert bytes(row["secret_sha256"]) == hashlib.sha256(secret.group(1).encode()).digest()
    assert row["scopes"] == ["exports:read", "views:read"]
    assert (row["expires_at"] - row["created_at"]) == dt.timedelta(days=90)
    assert row["last_used_at"] is None

    used = await api(web, "GET", "/views", secret.group(1))
    assert used.status == 200
    await web.client.get("/staff/tokens")  # a page, then the revoke form
    revoke = await web.client.post(
        f"/staff/tokens/{row['id']}/revoke", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert revoke.status == 303
    assert await error_of(await api(web, "GET", "/views", secret.group(1)), 401) == "unauthorized"
    revoked_twice = await web.client.post(
        f"/staff/tokens/{row['id']}/revoke", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert revoked_twice.status == 409
    created_rows = audit_rows(db_url, "token.created")
    revoked_rows = audit_rows(db_url, "token.revoked")
    assert [r["actor_email"] for r in created_rows] == [STAFF]
    assert created_rows[0]["details"]["token_id"] == row["id"]
    assert created_rows[0]["details"]["scopes"] == ["exports:read", "views:read"]
    assert [r["details"]["token_id"] for r in revoked_rows] == [row["id"]]
    with psycopg.connect(db_url) as conn:
        last_used = conn.execute("SELECT last_used_at FROM api_tokens").fetchone()
    assert last_used is not None
    assert last_used[0] is not None


async def test_tokens_page_rules(web: Web, db_url: str) -> None:
    # Without the export permission: the page says so, and creating is 403.
    await web.login(NOBODY)
    page = await web.client.get("/staff/tokens")
    text = await page.text()
    assert page.status == 200
    assert "requires the Import / Export Tickets permission" in text
    denied = await web.client.post(
        "/staff/tokens",
        data={"csrf_token": csrf_in(text), "name": "x", "scopes": "views:read"},
    )
    assert denied.status == 403
    # Without the CSRF token: 403 whoever asks.
    await web.logout_cookies()
    await web.login(STAFF)
    no_csrf = await web.client.post("/staff/tokens", data={"name": "x", "scopes": "views:read"})
    assert no_csrf.status == 403
    csrf = await web.csrf("/staff/tokens")
    for fields, message in (
        ({"name": "", "scopes": "views:read"}, "Give the token a name"),
        ({"name": "x" * 101, "scopes": "views:read"}, "at most 100"),
        ({"name": "a\x07b", "scopes": "views:read"}, "control characters"),
        ({"name": "x"}, "at least one scope"),
        ({"name": "x", "scopes": "admin:all"}, "Unknown scope"),
        ({"name": "x", "scopes": "views:read", "expires_days": "0"}, "from 1 to 365"),
        ({"name": "x", "scopes": "views:read", "expires_days": "366"}, "from 1 to 365"),
        ({"name": "x", "scopes": "views:read", "expires_days": "1e3"}, "from 1 to 365"),
        ({"name": "x", "scopes": "views:read", "expires_days": "-5"}, "from 1 to 365"),
        ({"name": "x", "scopes": "views:read", "expires_days": "٣"}, "from 1 to 365"),
    ):
        response = await web.client.post("/staff/tokens", data={"csrf_token": csrf, **fields})
        assert response.status == 400, fields
        assert message in await response.text(), fields
    for data in (
        [("csrf_token", csrf), ("name", "x"), ("name", "y"), ("scopes", "views:read")],
        [("csrf_token", csrf), ("name", "x"), ("scopes", "views:read"), ("owner", "1")],
    ):
        assert (await web.client.post("/staff/tokens", data=data)).status == 400
    with psycopg.connect(db_url) as conn:
        count = conn.execute("SELECT count(*) FROM api_tokens").fetchone()
    assert count == (0,)
    # Someone else's token, or one that does not exist: 404 (forged ids too).
    other_id, _ = await make_token(web, OTHER)
    for path in (f"/staff/tokens/{other_id}/revoke", "/staff/tokens/999999999999/revoke"):
        response = await web.client.post(path, data={"csrf_token": csrf})
        assert response.status == 404
    for path in ("/staff/tokens/abc/revoke", "/staff/tokens/0/revoke", "/staff/tokens/1e3/revoke"):
        assert (await web.client.post(path, data={"csrf_token": csrf})).status in (404, 405)
    assert (await web.client.get("/staff/tokens?all=1")).status == 400


async def test_admins_with_the_permission_see_and_revoke_everyones(web: Web) -> None:
    staff_id, staff_secret = await make_token(web, STAFF)
    await web.login(ADMIN)
    page = await (await web.client.get("/staff/tokens")).text()
    assert "Everyone's tokens" in page
    assert STAFF in page
    revoke = await web.client.post(
        f"/staff/tokens/{staff_id}/revoke",
        data={"csrf_token": csrf_in(page)},
        allow_redirects=False,
    )
    assert revoke.status == 303
    assert (await api(web, "GET", "/views", staff_secret)).status == 401
    # A staff member sees only their own.
    await make_token(web, OTHER)
    await web.logout_cookies()
    await web.login(STAFF)
    mine = await (await web.client.get("/staff/tokens")).text()
    assert "My tokens" in mine
    assert f"{OTHER} token" not in mine
    assert f"{STAFF} token" in mine


# --- authentication ------------------------------------------------------------------------


async def test_a_tokens_life_expired_revoked_owner_deactivated(web: Web, db_url: str) -> None:
    token_id, secret = await make_token(web, STAFF)
    assert (await api(web, "GET", "/views", secret)).status == 200
    # Expired: the next request is 401.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE api_tokens SET created_at = now() - interval '2 days', "
            "expires_at = now() - interval '1 second' WHERE id = %s",
            (token_id,),
        )
    assert await error_of(await api(web, "GET", "/views", secret), 401) == "unauthorized"
    # A fresh token, then its owner deactivated: 401, and again once reactivated it works.
    _, fresh = await make_token(web, STAFF)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE users SET is_active = false WHERE email = %s", (STAFF,))
    response = await api(web, "GET", "/views", fresh)
    assert await error_of(response, 401) == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE users SET is_active = true WHERE email = %s", (STAFF,))
    assert (await api(web, "GET", "/views", fresh)).status == 200
    # Missing, malformed, unknown: 401.
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer tex_short"},
        {"Authorization": "Bearer " + "tex_" + "A" * 43},
        {"Authorization": "Bearer " + fresh + "x"},
        {"Authorization": "Bearer " + fresh.upper()},
    ):
        got = await web.client.get("/api/v1/views", headers=headers)
        assert await error_of(got, 401) == "unauthorized", headers


async def test_a_session_cookie_never_counts_in_the_api(web: Web) -> None:
    assert (await web.login(ADMIN)).status == 303
    assert (await web.client.get("/staff/tickets")).status == 200
    csrf = await web.csrf("/staff/tickets")
    for method, path, extra in (
        ("GET", "/views", {}),
        ("GET", "/exports", {}),
        ("POST", "/exports", {"json": {"view": "all"}}),
        ("POST", "/exports", {"data": {"view": "all", "csrf_token": csrf}}),
    ):
        response = await api(web, method, path, None, **extra)
        assert await error_of(response, 401) == "unauthorized"


async def test_scopes_are_enforced_on_every_route(web: Web, db_url: str) -> None:
    _, full = await make_token(web, ADMIN)
    done = await api(web, "POST", "/exports", full, json={"view": "all"})
    assert done.status == 202
    export_id = (await done.json())["id"]
    await run_worker(db_url, export_id)
    routes = (
        ("GET", "/views", "views:read"),
        ("POST", "/exports", "exports:write"),
        ("GET", "/exports", "exports:read"),
        ("GET", f"/exports/{export_id}", "exports:read"),
        ("GET", f"/exports/{export_id}/file", "exports:read"),
        ("GET", f"/exports/{export_id}/events", "exports:read"),
        ("GET", f"/exports/{export_id}/manifest", "exports:read"),
        ("POST", f"/exports/{export_id}/cancel", "exports:write"),
        ("POST", f"/exports/{export_id}/retry", "exports:write"),
        ("POST", f"/exports/{export_id}/changes", "exports:write"),
    )
    scoped = {scope: (await make_token(web, ADMIN, (scope,)))[1] for scope in ALL_SCOPES}
    for method, path, needed in routes:
        for scope, secret in scoped.items():
            kwargs: dict[str, Any] = {"json": {"view": "open"}} if path == "/exports" else {}
            response = await api(web, method, path, secret, **kwargs)
            if scope == needed:
                # The scope lets it through: what follows is the route's own answer.
                assert response.status in (200, 202, 409), (method, path, response.status)
            else:
                assert await error_of(response, 403) == "insufficient_scope", (path, scope)
    # The description needs no token at all.
    described = await web.client.get("/api/v1/openapi.json")
    assert described.status == 200
    assert (await described.json())["openapi"].startswith("3.1")


# --- the rate limit ------------------------------------------------------------------------


async def test_the_window_counts_per_token_on_a_clock(web: Web) -> None:
    _, secret = await make_token(web, STAFF)
    _, other = await make_token(web, OTHER)
    start = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)

    async def use(token: str, seconds: float) -> tokens.Caller | None:
        async with web.pool.connection() as conn:
            return await tokens.authenticate(
                conn, token, per_minute=3, at=start + dt.timedelta(seconds=seconds)
            )

    for at in (0, 10, 20):
        caller = await use(secret, at)
        assert caller is not None
        assert caller.retry_after is None
    over = await use(secret, 30)
    assert over is not None
    assert over.retry_after == 30
    # Another token has its own window.
    mine = await use(other, 30)
    assert mine is not None
    assert mine.retry_after is None
    late = await use(secret, 59.5)
    assert late is not None
    assert late.retry_after == 1
    # The window that began at 0 is over at 60: a new one starts with this request.
    fresh = await use(secret, 60)
    assert fresh is not None
    assert fresh.retry_after is None
    for at in (61, 62):
        again = await use(secret, at)
        assert again is not None
        assert again.retry_after is None
    limited = await use(secret, 63)
    assert limited is not None
    assert limited.retry_after == 57


async def test_past_the_limit_answers_429_with_retry_after(db_url: str, people: Any) -> None:
    async with running(db_url, api_requests_per_minute=2) as web:
        _, secret = await make_token(web, STAFF)
        _, other = await make_token(web, OTHER)
        assert (await api(web, "GET", "/views", secret)).status == 200
        assert (await api(web, "GET", "/exports", secret)).status == 200
        response = await api(web, "GET", "/views", secret)
        assert await error_of(response, 429) == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert (await api(web, "GET", "/views", other)).status == 200


# --- exports through the API, audited with the token -----------------------------------


async def test_a_script_with_only_a_token_exports_follows_downloads_and_checks(
    web: Web, db_url: str
) -> None:
    token_id, secret = await make_token(web, ADMIN)
    base = str(web.client.make_url("/api/v1"))
    # A client of its own, with no cookie jar: it has signed in nowhere.
    async with aiohttp.ClientSession(
        headers=bearer(secret), cookie_jar=aiohttp.DummyCookieJar()
    ) as script:
        views = await (await script.get(f"{base}/views")).json()
        assert {"key": "all", "label": "All tickets"} in views
        requested = await script.post(
            f"{base}/exports",
            json={"view": "all", "sort": "oldest", "filters": {"type": "open"}, "format": "csv"},
        )
        assert requested.status == 202
        export = await requested.json()
        assert requested.headers["Location"] == f"/api/v1/exports/{export['id']}"
        assert export["status"] == "queued"
        assert export["download_url"] is None
        assert export["view"] == "all"
        assert export["format"] == "csv"
        assert export["since"] is None
        assert export["schedule_id"] is None
        # Follow the events while a worker runs the export.
        async with script.get(f"{base}/exports/{export['id']}/events") as events:
            assert events.headers["Content-Type"].startswith("text/event-stream")
            worker = asyncio.create_task(run_worker(db_url, export["id"]))
            states = []
            async for line in events.content:
                text = line.decode().strip()
                if text.startswith("data: "):
                    states.append(json.loads(text[len("data: ") :]))
            await worker
        assert states[0]["status"] in ("queued", "running", "completed")
        final = states[-1]
        assert final["status"] == "completed"
        assert final["download_url"] == f"/api/v1/exports/{export['id']}/file"
        current = await (await script.get(f"{base}/exports/{export['id']}")).json()
        assert current["status"] == "completed"
        assert current["completed_at"] is not None
        file = await script.get(str(web.client.make_url(final["download_url"])))
        assert file.status == 200
        data = await file.read()
        assert file.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert file.headers["Content-Disposition"].startswith("attachment;")
        assert file.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        ranged = await script.get(
            str(web.client.make_url(final["download_url"])), headers={"Range": "bytes=3-12"}
        )
        assert ranged.status == 206
        assert await ranged.read() == data[3:13]
        manifest = await (await script.get(f"{base}/exports/{export['id']}/manifest")).json()
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["bytes"] == len(data)
        assert manifest["rows"] == data.count(b"\n") - 1
        assert manifest["request"]["filters"] == {"type": "open"}
    for action in ("export.requested", "export.downloaded"):
        found = [r for r in audit_rows(db_url, action) if r["export_id"] == export["id"]]
        assert found, action
        assert all(r["details"]["token_id"] == token_id for r in found), action
        assert all(r["actor_email"] == ADMIN for r in found)


async def test_rights_are_the_owners_at_each_request(web: Web, db_url: str) -> None:
    _, secret = await make_token(web, ADMIN)
    _, staff = await make_token(web, STAFF)
    made = await api(web, "POST", "/exports", secret, json={})
    export_id = (await made.json())["id"]
    await run_worker(db_url, export_id)
    assert (await api(web, "GET", f"/exports/{export_id}/file", secret)).status == 200
    # Another user's token never sees it (staff without admin: not theirs to see).
    for path in ("", "/file", "/manifest", "/events"):
        got = await api(web, "GET", f"/exports/{export_id}{path}", staff)
        assert await error_of(got, 404) == "not_found"
    # The owner loses admin: the next download and manifest are 404, the export still theirs.
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE users SET is_admin = false WHERE email = %s", (ADMIN,))
    for path in ("/file", "/manifest"):
        got = await api(web, "GET", f"/exports/{export_id}{path}", secret)
        assert await error_of(got, 404) == "not_found"
    seen = await api(web, "GET", f"/exports/{export_id}", secret)
    assert (await seen.json())["download_url"] is None
    denied = [
        r for r in audit_rows(db_url, "export.download_denied") if r["export_id"] == export_id
    ]
    assert len(denied) >= 2
    assert all("token_id" in r["details"] for r in denied)
    # Losing the export permission: a request is 403, as on the pages.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "DELETE FROM user_roles WHERE user_id = (SELECT id FROM users WHERE email = %s)",
            (ADMIN,),
        )
    refused = await api(web, "POST", "/exports", secret, json={"view": "open"})
    assert await error_of(refused, 403) == "forbidden"


async def test_cancel_retry_and_the_list_with_cursors(web: Web, db_url: str) -> None:
    token_id, secret = await make_token(web, STAFF)
    ids = []
    for view in ("all", "open", "closed"):
        response = await api(web, "POST", "/exports", secret, json={"view": view})
        assert response.status == 202
        ids.append((await response.json())["id"])
    # Double submit: the same request again is sent to the first.
    again = await api(web, "POST", "/exports", secret, json={"view": "all"})
    assert again.status == 202
    assert (await again.json())["id"] == ids[0]
    # The active-export limit (3): one more is 429, creating nothing.
    over = await api(web, "POST", "/exports", secret, json={"view": "unassigned"})
    assert await error_of(over, 429) == "too_many"
    cancelled = await api(web, "POST", f"/exports/{ids[0]}/cancel", secret)
    assert cancelled.status == 200
    assert (await cancelled.json())["status"] == "cancelled"
    assert await error_of(await api(web, "POST", f"/exports/{ids[0]}/cancel", secret), 409)
    retried = await api(web, "POST", f"/exports/{ids[0]}/retry", secret, json={})
    assert retried.status == 202
    new_id = (await retried.json())["id"]
    assert retried.headers["Location"] == f"/api/v1/exports/{new_id}"
    assert await error_of(await api(web, "POST", f"/exports/{ids[1]}/retry", secret), 409)
    # Pages of one, newest first, to the end.
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = await api(web, "GET", "/exports", secret, params=query)
        assert page.status == 200
        body = await page.json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == [new_id, ids[2], ids[1], ids[0]]
    for action in ("export.cancelled", "export.retried"):
        rows = [r for r in audit_rows(db_url, action) if r["details"].get("token_id") == token_id]
        assert len(rows) == 1, action
    deduplicated = audit_rows(db_url, "export.deduplicated")
    assert [r["details"]["token_id"] for r in deduplicated] == [token_id]


async def test_streams_per_token_are_limited(db_url: str, people: Any) -> None:
    async with running(db_url, max_streams_per_session=1, keepalive_seconds=0.3) as web:
        _, secret = await make_token(web, STAFF)
        _, other = await make_token(web, STAFF)
        made = await api(web, "POST", "/exports", secret, json={})
        export_id = (await made.json())["id"]
        first = await api(web, "GET", f"/exports/{export_id}/events", secret)
        assert first.status == 200
        await first.content.readline()  # the first state is sent: the stream is open
        second = await api(web, "GET", f"/exports/{export_id}/events", secret)
        assert await error_of(second, 429) == "too_many"
        # Another token of the same owner has streams of its own.
        third = await api(web, "GET", f"/exports/{export_id}/events", other)
        assert third.status == 200
        third.close()
        first.close()


async def test_a_revoked_tokens_stream_ends(web: Web) -> None:
    token_id, secret = await make_token(web, STAFF)
    made = await api(web, "POST", "/exports", secret, json={})
    export_id = (await made.json())["id"]
    stream = await api(web, "GET", f"/exports/{export_id}/events", secret)
    assert stream.status == 200
    await web.login(STAFF)
    csrf = await web.csrf("/staff/tokens")
    revoked = await web.client.post(
        f"/staff/tokens/{token_id}/revoke", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert revoked.status == 303
    # The hub's recheck (every 0.3 s here) ends the stream; its body then ends.
    body = await asyncio.wait_for(stream.read(), timeout=10)
    assert b"event: export" in body


async def test_changes_since_an_earlier_export(web: Web, db_url: str) -> None:
    token_id, secret = await make_token(web, ADMIN)
    _, staff = await make_token(web, STAFF)
    made = await api(web, "POST", "/exports", secret, json={"view": "all", "sort": "oldest"})
    base = (await made.json())["id"]
    # Not completed yet: 409, as on the pages.
    early = await api(web, "POST", "/exports", secret, json={"since": base})
    assert await error_of(early, 409) == "conflict"
    await run_worker(db_url, base)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE tickets SET title = 'Changed' WHERE id = 4")
        conn.execute("DELETE FROM tickets WHERE id = 5")
    changed = await api(web, "POST", "/exports", secret, json={"since": base})
    assert changed.status == 202, await changed.text()
    delta = await changed.json()
    assert changed.headers["Location"] == f"/api/v1/exports/{delta['id']}"
    assert delta["since"] == base
    assert delta["view"] == "all"
    await run_worker(db_url, delta["id"])
    data = await (await api(web, "GET", f"/exports/{delta['id']}/file", secret)).read()
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("Change,Ticket ID,")
    assert [line.split(",")[:2] for line in lines[1:]] == [["delete", "5"], ["upsert", "4"]]
    manifest = await (await api(web, "GET", f"/exports/{delta['id']}/manifest", secret)).json()
    assert manifest["since"] == base
    assert manifest["request"]["since"] == base
    assert [c["label"] for c in manifest["columns"]] == lines[0].split(",")
    assert manifest["columns"][0] == {"name": "change", "label": "Change", "type": "string"}
    assert manifest["rows"] == 2
    assert manifest["csvw"]["tableSchema"]["columns"][0]["titles"] == "Change"
    # The route form, on a delta itself (a chain).
    again = await api(web, "POST", f"/exports/{delta['id']}/changes", secret)
    assert again.status == 202
    assert (await again.json())["since"] == delta["id"]
    # Only the requester may ask; anyone else is told it does not exist.
    for response in (
        await api(web, "POST", "/exports", staff, json={"since": base}),
        await api(web, "POST", f"/exports/{base}/changes", staff),
    ):
        assert await error_of(response, 404) == "not_found"
    listed = await (await api(web, "GET", "/exports", secret)).json()
    assert [item["since"] for item in listed["items"]] == [delta["id"], base, None]
    requested = [
        r for r in audit_rows(db_url, "export.requested") if r["details"].get("since") == base
    ]
    assert [r["details"]["token_id"] for r in requested] == [token_id]


# --- a schedule's latest file --------------------------------------------------------------


async def test_a_schedules_latest_file_follows_its_completed_runs(web: Web, db_url: str) -> None:
    token_id, secret = await make_token(web, ADMIN)
    schedule_id, tick = await make_schedule(web, ADMIN)
    latest = f"/schedules/{schedule_id}/latest"
    # No run yet: a clear 404.
    assert await error_of(await api(web, "GET", latest, secret), 404) == "no_completed_run"
    (first,) = (await run_schedules(web, tick)).values()
    got = await api(web, "GET", latest, secret)
    assert got.status == 200, await got.text()
    assert got.headers["Content-Location"] == f"/api/v1/exports/{first}"
    body = await got.read()
    # The same bytes and headers as the export's own file.
    direct = await api(web, "GET", f"/exports/{first}/file", secret)
    assert direct.status == 200
    assert await direct.read() == body
    for header in ("Content-Type", "Content-Disposition", "ETag", "Accept-Ranges"):
        assert got.headers[header] == direct.headers[header], header
    assert body.decode("utf-8-sig").count("\n") == 31  # the header and 30 tickets
    part = await api(web, "GET", latest, secret, headers={"Range": "bytes=0-9"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(body)}"
    assert part.headers["Content-Location"] == f"/api/v1/exports/{first}"
    assert await part.read() == body[:10]
    # The run's export object names its schedule; an export of a click names none.
    run = await (await api(web, "GET", f"/exports/{first}", secret)).json()
    assert run["schedule_id"] == schedule_id
    clicked = await api(web, "POST", "/exports", secret, json={"view": "all"})
    assert (await clicked.json())["schedule_id"] is None
    listed = await (await api(web, "GET", "/exports", secret)).json()
    by_id = {item["id"]: item["schedule_id"] for item in listed["items"]}
    assert by_id[first] == schedule_id
    # A newer run, still queued, changes nothing; once completed, latest follows it.
    runs = await run_schedules(web, tick + dt.timedelta(minutes=5), finish=False)
    later = runs[schedule_id]
    again = await api(web, "GET", latest, secret)
    assert again.headers["Content-Location"] == f"/api/v1/exports/{first}"
    await again.read()
    await ExportRun(web.services, later, None).run()
    newer = await api(web, "GET", latest, secret)
    assert newer.status == 200
    assert newer.headers["Content-Location"] == f"/api/v1/exports/{later}"
    assert len(await newer.read()) > 0
    # The newest run's file expires: latest is the newest completed run still there.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE export_jobs SET expires_at = requested_at + interval '1 millisecond' "
            "WHERE id = %s",
            (later,),
        )
    fallback = await api(web, "GET", latest, secret)
    assert fallback.headers["Content-Location"] == f"/api/v1/exports/{first}"
    await fallback.read()
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE export_jobs SET expires_at = requested_at + interval '1 millisecond' "
            "WHERE schedule_id = %s",
            (schedule_id,),
        )
    assert await error_of(await api(web, "GET", latest, secret), 404) == "no_completed_run"
    # Every download through latest is audited as a download, with the token.
    downloads = [r for r in audit_rows(db_url, "export.downloaded") if r["export_id"] == later]
    assert len(downloads) == 1
    assert downloads[0]["details"]["token_id"] == token_id


async def test_a_schedules_latest_file_needs_the_owners_rights_now(web: Web, db_url: str) -> None:
    token_id, admin = await make_token(web, ADMIN)
    _, staff = await make_token(web, STAFF)
    _, other = await make_token(web, OTHER)
    staff_schedule, tick = await make_schedule(web, STAFF)
    admin_schedule, _ = await make_schedule(web, ADMIN)
    assert set(await run_schedules(web, tick)) == {staff_schedule, admin_schedule}
    # Someone else's schedule is not there for a user who is not an admin with 512.
    refused = await api(web, "GET", f"/schedules/{admin_schedule}/latest", other)
    assert await error_of(refused, 404) == "not_found"
    denied = audit_rows(db_url, "schedule.denied")
    assert [(r["actor_email"], r["details"]["schedule_id"]) for r in denied] == [
        (OTHER, admin_schedule)
    ]
    assert "token_id" in denied[0]["details"]
    # Its owner sees the schedule but may not download (not an admin): 404, as for the file.
    own = await api(web, "GET", f"/schedules/{staff_schedule}/latest", staff)
    assert await error_of(own, 404) == "not_found"
    # An admin with 512 sees and downloads everyone's.
    seen = await api(web, "GET", f"/schedules/{staff_schedule}/latest", admin)
    assert seen.status == 200
    await seen.read()
    # A token without exports:read: 403 before anything is looked up.
    for scope in ("views:read", "exports:write"):
        _, scoped = await make_token(web, ADMIN, (scope,))
        response = await api(web, "GET", f"/schedules/{admin_schedule}/latest", scoped)
        assert await error_of(response, 403) == "insufficient_scope"
    # The admin loses admin: their own schedule's latest is 404 now, and the refusal audited.
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE users SET is_admin = false WHERE email = %s", (ADMIN,))
    lost = await api(web, "GET", f"/schedules/{admin_schedule}/latest", admin)
    assert await error_of(lost, 404) == "not_found"
    gone = await api(web, "GET", f"/schedules/{staff_schedule}/latest", admin)
    assert await error_of(gone, 404) == "not_found"
    download_denied = [
        r for r in audit_rows(db_url, "export.download_denied") if r["actor_email"] == ADMIN
    ]
    assert download_denied
    assert all(r["details"]["token_id"] == token_id for r in download_denied)
