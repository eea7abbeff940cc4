"""Sign-in, sessions, CSRF, cookies, logged-out behaviour, headers and error pages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import urllib.parse
import uuid
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web as aioweb

from tests.support.services import services_for
from tests.support.web import PASSWORD, Web, csrf_in, make_user, proxies, running
from ticketexport import logs
from ticketexport.domain.permissions import ALL_PERMISSIONS
from ticketexport.services import Services
from ticketexport.web.app import run_web
from ticketexport.web.keys import SERVER_ERRORS


def session_cookie(response: Any) -> str:
    for header in response.headers.getall("Set-Cookie", []):
        if header.startswith("te_session="):
            return header
    raise AssertionError("no session cookie was set")


def audit_rows(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor_id, actor_email, host(client_ip), details FROM audit_log "
        "WHERE action = %s ORDER BY id",
        (action,),
    ).fetchall()


async def test_login_success_creates_session_with_safe_cookie(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    user_id = make_user(conn, "agent@example.com")
    response = await web.login("Agent@Example.com")
    assert response.status == 303
    assert response.headers["Location"] == "/staff/tickets"
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    row = conn.execute(
        "SELECT user_id, length(csrf_token) FROM web_sessions WHERE id = %s",
        (hashlib.sha256(token.encode()).hexdigest(),),
    ).fetchone()
    assert row is not None
    assert row[0] == user_id
    assert row[1] >= 32
    assert audit_rows(conn, "login.succeeded") == [(user_id, "agent@example.com", "127.0.0.1", {})]
    page = await web.client.get("/staff/tickets")
    assert page.status == 200


async def test_login_failures_are_generic_and_audited(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    user_id = make_user(conn, "agent@example.com")
    wrong = await web.login("agent@example.com", "not the password")
    unknown = await web.login("nobody@example.com", PASSWORD)
    for response in (wrong, unknown):
        assert response.status == 400
        text = await response.text()
        assert "Email or password is incorrect." in text
        assert 'name="csrf_token"' in text
        assert not any(
            h.startswith("te_session=") for h in response.headers.getall("Set-Cookie", [])
        )
    rows = audit_rows(conn, "login.failed")
    assert rows == [
        (user_id, "agent@example.com", "127.0.0.1", {"reason": "bad_password"}),
        (None, "nobody@example.com", "127.0.0.1", {"reason": "unknown_email"}),
    ]
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)


async def test_inactive_user_cannot_log_in(web: Web, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "gone@example.com")
    conn.execute("UPDATE users SET is_active = false")
    response = await web.login("gone@example.com")
    assert response.status == 400
    assert audit_rows(conn, "login.failed")[0][3] == {"reason": "inactive"}


@pytest.mark.parametrize("token", [None, "", "0" * 64, "forged"])
async def test_login_needs_the_form_token(
    web: Web, conn: psycopg.Connection[Any], token: str | None
) -> None:
    make_user(conn, "agent@example.com")
    await web.client.get("/login")  # sets the login cookie the token is bound to
    data = {"email": "agent@example.com", "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = await web.client.post("/login", data=data, allow_redirects=False)
    assert response.status == 403
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)


async def test_login_token_is_bound_to_the_browser_cookie(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    page = await web.client.get("/login")
    token = csrf_in(await page.text())
    web.client.session.cookie_jar.clear()  # another browser: a token without its cookie
    response = await web.client.post(
        "/login",
        data={"email": "agent@example.com", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
    )
    assert response.status == 403


@pytest.mark.parametrize(
    ("next_", "expected"),
    [
        ("/staff/views", "/staff/views"),
        ("/staff/tickets?view=open&q=a%20b", "/staff/tickets?view=open&q=a%20b"),
        ("//evil.example.com/x", "/staff/tickets"),
        ("https://evil.example.com/", "/staff/tickets"),
        ("/\\evil.example.com", "/staff/tickets"),
        ("/%2F%2Fevil.example.com", "/staff/tickets"),
        ("/%5Cevil.example.com", "/staff/tickets"),
        ("javascript:alert(1)", "/staff/tickets"),
        ("/\tevil", "/staff/tickets"),
        ("", "/staff/tickets"),
    ],
)
async def test_next_is_followed_only_to_local_paths(
    web: Web, conn: psycopg.Connection[Any], next_: str, expected: str
) -> None:
    make_user(conn, "agent@example.com")
    response = await web.login("agent@example.com", next_=next_)
    assert response.status == 303
    assert response.headers["Location"] == expected


async def test_logged_out_requests(web: Web) -> None:
    page = await web.client.get("/staff/tickets?view=open&q=x", allow_redirects=False)
    assert page.status == 303
    location = urllib.parse.urlsplit(page.headers["Location"])
    assert location.path == "/login"
    assert urllib.parse.parse_qs(location.query) == {"next": ["/staff/tickets?view=open&q=x"]}
    for path in ("/staff/views", "/staff/views/new", "/staff/views/1/edit", "/staff/exports"):
        response = await web.client.get(path, allow_redirects=False)
        assert response.status == 303, path
        query = urllib.parse.urlsplit(response.headers["Location"]).query
        assert urllib.parse.parse_qs(query)["next"] == [path], path
    for path in (
        "/staff/exports/0b7a3c2e-0000-4000-8000-000000000000/download",
        "/staff/exports/0b7a3c2e-0000-4000-8000-000000000000/events",
    ):
        response = await web.client.get(path, allow_redirects=False)
        assert response.status == 401, path
    for path in (
        "/logout",
        "/staff/views/new",
        "/staff/views/1/edit",
        "/staff/views/1/delete",
        "/staff/tickets/export",
    ):
        response = await web.client.post(path, data={"csrf_token": "x"}, allow_redirects=False)
        assert response.status == 401, path
    login = await web.client.get(page.headers["Location"])
    assert login.status == 200
    assert 'name="next" value="/staff/tickets?view=open&amp;q=x"' in await login.text()


async def test_logout(web: Web, conn: psycopg.Connection[Any]) -> None:
    user_id = make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    token = await web.csrf()
    refused = await web.client.post("/logout", data={}, allow_redirects=False)
    assert refused.status == 403
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (1,)
    response = await web.client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login"
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)
    assert [r[0] for r in audit_rows(conn, "logout")] == [user_id]
    after = await web.client.get("/staff/tickets", allow_redirects=False)
    assert after.status == 303


async def test_every_post_needs_the_session_token(web: Web, conn: psycopg.Connection[Any]) -> None:
    user_id = make_user(conn, "agent@example.com", permissions=int(ALL_PERMISSIONS))
    view_id = conn.execute(
        "INSERT INTO saved_views (name, owner_id, columns, sort) "
        'VALUES (\'Mine\', %s, \'{id,title}\', \'[{"column": "id", "direction": "asc"}]\') '
        "RETURNING id",
        (user_id,),
    ).fetchone()[0]
    await web.login("agent@example.com")
    token = await web.csrf()
    paths = [
        "/logout",
        "/staff/views/new",
        f"/staff/views/{view_id}/edit",
        f"/staff/views/{view_id}/delete",
        "/staff/tickets/export",
        "/login",
    ]
    for path in paths:
        for sent in (None, "", "wrong", token[:-1] + ("a" if token[-1] != "a" else "b")):
            data = {"name": "x"} if sent is None else {"csrf_token": sent, "name": "x"}
            response = await web.client.post(path, data=data, allow_redirects=False)
            assert response.status == 403, (path, sent)
            # The 403 page is in the layout, with the logout form and the real token.
            assert csrf_in(await response.text()) == token
    assert conn.execute("SELECT count(*) FROM saved_views").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (1,)


async def test_inactive_user_is_signed_out_on_next_request(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    assert (await web.client.get("/staff/views")).status == 200
    # A direct update (not the CLI, which also deletes sessions): the web must notice.
    conn.execute("UPDATE users SET is_active = false")
    response = await web.client.get("/staff/views", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/login?next=")
    assert any(
        h.startswith("te_session=") and "Max-Age=0" in h
        for h in response.headers.getall("Set-Cookie", [])
    )
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE web_sessions SET last_seen_at = now() - interval '13 hours'",
        "UPDATE web_sessions SET expires_at = now() - interval '1 second'",
    ],
)
async def test_sessions_expire(web: Web, conn: psycopg.Connection[Any], change: str) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    conn.execute(change)
    response = await web.client.get("/staff/views", allow_redirects=False)
    assert response.status == 303
    assert conn.execute("SELECT count(*) FROM web_sessions").fetchone() == (0,)


async def test_tampered_session_cookie_is_ignored(web: Web) -> None:
    web.client.session.cookie_jar.update_cookies({"te_session": "x" * 43})
    response = await web.client.get("/staff/views", allow_redirects=False)
    assert response.status == 303
    web.client.session.cookie_jar.update_cookies({"te_session": "'; DROP TABLE users; --"})
    response = await web.client.get("/staff/views", allow_redirects=False)
    assert response.status == 303


async def test_a_new_login_replaces_the_old_session(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    first = conn.execute("SELECT id FROM web_sessions").fetchall()
    await web.login("agent@example.com")
    second = conn.execute("SELECT id FROM web_sessions").fetchall()
    assert len(first) == len(second) == 1
    assert first != second


async def login_sending_cookies(web: Web, headers: dict[str, str]) -> Any:
    """Log in over plain HTTP even when the cookies came back Secure (so the jar holds them)."""
    page = await web.client.get("/login", headers=headers)
    token = csrf_in(await page.text())
    login_cookie = next(
        h.split(";")[0] for h in page.headers.getall("Set-Cookie") if h.startswith("te_login=")
    )
    return await web.client.post(
        "/login",
        data={"email": "agent@example.com", "password": PASSWORD, "csrf_token": token},
        headers={**headers, "Cookie": login_cookie},
        allow_redirects=False,
    )


async def test_cookie_secure_setting(db_url: str, conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    async with running(db_url, cookie_secure=True) as web:
        response = await login_sending_cookies(web, {})
        assert response.status == 303
        assert "Secure" in session_cookie(response)


async def test_forwarded_headers_count_only_from_the_trusted_proxy(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    async with running(db_url) as web:
        response = await login_sending_cookies(web, headers)
        assert "Secure" not in session_cookie(response)
    async with running(db_url, trusted_proxies=proxies("127.0.0.1")) as web:
        response = await login_sending_cookies(web, headers)
        assert "Secure" in session_cookie(response)
    ips = [row[2] for row in audit_rows(conn, "login.succeeded")]
    assert ips == ["127.0.0.1", "198.51.100.7"]


async def test_security_headers_and_request_id(web: Web) -> None:
    response = await web.client.get("/login")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    uuid.UUID(response.headers["X-Request-ID"])
    echoed = await web.client.get("/login", headers={"X-Request-ID": "abc-123.x"})
    assert echoed.headers["X-Request-ID"] == "abc-123.x"
    bad = await web.client.get("/login", headers={"X-Request-ID": "no spaces <allowed>"})
    uuid.UUID(bad.headers["X-Request-ID"])
    missing = await web.client.get("/staff/nothing-here", allow_redirects=False)
    assert missing.headers["X-Frame-Options"] == "DENY"
    static = await web.client.get("/static/app.css")
    assert static.status == 200
    assert static.headers["X-Content-Type-Options"] == "nosniff"


async def test_error_pages_carry_the_layout_and_logout_form(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "agent@example.com")
    await web.login("agent@example.com")
    token = await web.csrf()
    for path, status in (
        ("/staff/nothing-here", 404),
        ("/staff/views/999999/edit", 404),
        ("/staff/tickets?view=999999", 404),
        ("/staff/tickets?sort=sideways", 400),
    ):
        response = await web.client.get(path)
        assert response.status == status, path
        text = await response.text()
        assert '<form method="post" action="/logout"' in text
        assert csrf_in(text) == token
    method = await web.client.put("/login", data={"csrf_token": token})
    assert method.status == 405
    assert "Allow" in method.headers


async def test_unexpected_errors_stay_500_and_are_logged(
    db_url: str, conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: aioweb.Request) -> aioweb.Response:
        raise ValueError("a bug, not bad input")

    def setup(app: aioweb.Application) -> None:
        app.router.add_get("/staff/broken", broken)

    make_user(conn, "agent@example.com")
    async with running(db_url, setup=setup, expect_500s=True) as web:
        await web.login("agent@example.com")
        with caplog.at_level(logging.ERROR, logger="ticketexport.web"):
            response = await web.client.get("/staff/broken", headers={"X-Request-ID": "r-1"})
        assert response.status == 500
        text = await response.text()
        assert "a bug, not bad input" not in text
        assert "r-1" in text
        assert (web.app[SERVER_ERRORS].count, list(web.app[SERVER_ERRORS].recent)) == (1, ["r-1"])
        assert csrf_in(text)
    records = [r for r in caplog.records if r.name == "ticketexport.web"]
    assert records
    assert records[0].exc_info is not None


def test_json_log_lines_carry_bound_ids() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("ticketexport.web.access", logging.INFO, "x", 1, "request", (), None)
    record.status = 200
    with logs.bound(request_id="abc", export_id="e-1"):
        line = json.loads(formatter.format(record))
    assert line["request_id"] == "abc"
    assert line["export_id"] == "e-1"
    assert line["status"] == 200
    assert line["message"] == "request"
    assert re.match(r"^\d{4}-\d\d-\d\dT", line["time"])
    outside = json.loads(formatter.format(record))
    assert "request_id" not in outside


async def test_access_log_lines_have_the_request_id(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ticketexport.web.access"):
        await web.client.get("/login", headers={"X-Request-ID": "trace-42"})
    access = [r for r in caplog.records if r.name == "ticketexport.web.access"]
    assert access
    line = json.loads(logs.JsonFormatter().format(access[-1]))
    assert line["status"] == 200
    assert line["path"] == "/login"
    assert line["method"] == "GET"
    assert line["request_id"] == "trace-42"


async def test_run_web_serves_until_stopped(db_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = asyncio.Event()
    env = {"TICKETEXPORT_HOST": "127.0.0.1", "TICKETEXPORT_PORT": str(port)}
    async with services_for(db_url, env=env, web=True) as services:
        await _serve_until_stopped(services, port, stop)


async def _serve_until_stopped(services: Services, port: int, stop: asyncio.Event) -> None:
    server = asyncio.create_task(run_web(services, stop=stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/login") as response:
                        assert response.status == 200
                        assert 'name="csrf_token"' in await response.text()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("run_web never started listening")
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=30)
