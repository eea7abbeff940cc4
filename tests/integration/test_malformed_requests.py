"""Malformed requests, sent as raw bytes where a client library would refuse them: each is
a 4xx with the layout's error page, never a 500; what the app keeps per error is bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import psycopg
import pytest
from aiohttp import web as aioweb

from tests.support.web import PASSWORD, Web, csrf_in, insert_tickets, make_user, running
from ticketexport.web.keys import SERVER_ERRORS, ServerErrors

AGENT = "agent@example.com"
FORM = "application/x-www-form-urlencoded"


async def raw(web: Web, head: str, body: bytes = b"", *, headers: bytes = b"") -> Any:
    """One request written byte for byte; returns (status, headers text, body)."""
    server = web.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        request = (
            head.encode("latin-1")
            + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + headers
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    return int(status_line.split(" ")[1]), head_bytes.decode("latin-1"), payload


def cookie_header(web: Web) -> bytes:
    cookies = "; ".join(f"{c.key}={c.value}" for c in web.client.session.cookie_jar)
    return f"Cookie: {cookies}\r\n".encode()


async def login_form_cookie(web: Web) -> tuple[bytes, str]:
    """The anonymous login form's cookie and CSRF token."""
    page = await web.client.get("/login")
    return cookie_header(web), csrf_in(await page.text())


def assert_error_page(status: int, payload: bytes, expected: int) -> None:
    assert status == expected, payload[:400]
    text = payload.decode("utf-8", "replace")
    assert 'class="error-page"' in text or 'class="form-error"' in text, text[:400]
    assert "Traceback" not in text


@pytest.fixture
def agent(conn: psycopg.Connection[Any]) -> None:
    make_user(conn, AGENT, permissions=512, admin=True)
    insert_tickets(conn, 60)


async def test_malformed_login_posts_are_400(web: Web, agent: None) -> None:
    cookies, token = await login_form_cookie(web)
    field = f"csrf_token={token}&email=a%40b.c&password=x".encode()
    cases = [
        # The body is not UTF-8, as the form says it is.
        (f"Content-Type: {FORM}; charset=utf-8\r\n", b"email=\xff\xfe&" + field),
        # A charset Python does not know.
        (f"Content-Type: {FORM}; charset=x-no-such-charset\r\n", field),
        # Percent-encoded bytes that do not decode.
        (f"Content-Type: {FORM}\r\n", field + b"&next=%FF%FE%80"),
        # Multipart without a boundary, with a broken one, and with a part that is not UTF-8.
        ("Content-Type: multipart/form-data\r\n", b"--x\r\n\r\n"),
        ("Content-Type: multipart/form-data; boundary=zz\r\n", b"no boundary here"),
        (
            "Content-Type: multipart/form-data; boundary=b\r\n",
            b'--b\r\nContent-Disposition: form-data; name="email"\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\r\n--b--\r\n",
        ),
    ]
    for content_type, body in cases:
        status, _, payload = await raw(
            web, "POST /login HTTP/1.1", body, headers=cookies + content_type.encode()
        )
        assert_error_page(status, payload, 400)


def part(name: str, value: bytes, *headers: bytes) -> bytes:
    """One multipart/form-data part with the boundary `b`."""
    head = f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + value + b"\r\n"


MULTIPART = b"Content-Type: multipart/form-data; boundary=b\r\n"


@pytest.mark.parametrize(
    "broken",
    ["transfer-encoding", "charset", "part-headers"],
)
async def test_multipart_parser_errors_are_400(web: Web, agent: None, broken: str) -> None:
    """The form parser's own errors, whatever it raises them as: a part whose transfer
    encoding it does not know, a `_charset_` part longer than any charset's name, a part
    with more header lines than it takes."""
    cookies, token = await login_form_cookie(web)
    fields = part("csrf_token", token.encode()) + part("email", AGENT.encode())
    password = PASSWORD.encode()
    body = {
        "transfer-encoding": fields
        + part("password", password, b"Content-Transfer-Encoding: x-unknown"),
        "charset": part("_charset_", b"u" * 40) + fields + part("password", password),
        "part-headers": fields + part("password", password, *[b"X-Filler: 1"] * 200),
    }[broken]
    status, _, payload = await raw(
        web, "POST /login HTTP/1.1", body + b"--b--\r\n", headers=cookies + MULTIPART
    )
    assert_error_page(status, payload, 400)
    # The same form, well made, signs in: multipart itself is welcome.
    body = fields + part("password", password) + b"--b--\r\n"
    status, _, _ = await raw(web, "POST /login HTTP/1.1", body, headers=cookies + MULTIPART)
    assert status == 303


async def test_bad_header_bytes_are_refused_not_500(web: Web, agent: None) -> None:
    cookies, _ = await login_form_cookie(web)
    body = b"email=a%40b.c&password=x"
    # A CSRF token holding a raw 0xFF byte (aiohttp's client refuses to send one).
    status, _, payload = await raw(
        web,
        "POST /login HTTP/1.1",
        body,
        headers=cookies + f"Content-Type: {FORM}\r\n".encode() + b"X-CSRF-Token: \xff\xfe\r\n",
    )
    assert status == 403
    assert 'class="form-error"' in payload.decode("utf-8", "replace")
    # The same for a signed-in user, and other headers the app reads.
    assert (await web.login(AGENT)).status == 303
    signed_in = cookie_header(web)
    status, _, payload = await raw(
        web,
        "POST /logout HTTP/1.1",
        b"",
        headers=signed_in + f"Content-Type: {FORM}\r\n".encode() + b"X-CSRF-Token: \xff\r\n",
    )
    assert_error_page(status, payload, 403)
    for header in (
        b"X-Request-ID: \xff\xfe\r\n",
        b"X-Forwarded-For: \xff, 10.0.0.\xff\r\n",
        b"User-Agent: \xff\xfe\x80\r\n",
        b"Range: bytes=\xff-\r\n",
        b"Last-Event-ID: \xff\r\n",
        b"Cookie: te_session=\xff\xfe\r\n",
    ):
        status, _, payload = await raw(
            web, "GET /staff/tickets HTTP/1.1", headers=signed_in + header
        )
        assert status in (200, 303, 400), (header, status)


async def test_forged_cursor_with_a_lone_surrogate_is_400(
    web: Web, agent: None, conn: psycopg.Connection[Any]
) -> None:
    # Assigned tickets, so the assignee sort's cursor carries a text key (the name).
    conn.execute("UPDATE tickets SET assignee_id = (SELECT min(id) FROM users)")
    assert (await web.login(AGENT)).status == 303
    first = await (await web.client.get("/staff/tickets?sort=assignee")).text()
    link = re.search(r'href="([^"]+)" id="next-page"', first)
    assert link is not None
    token = re.search(r"page=([A-Za-z0-9_-]+)", link.group(1))
    assert token is not None
    data = json.loads(base64.urlsafe_b64decode(token.group(1) + "==="[: -len(token.group(1)) % 4]))
    keys = ["\ud800" if isinstance(value, str) else value for value in data["k"]]
    assert "\ud800" in keys, data
    # Valid JSON (json.dumps escapes it as \\ud800), valid base64, the right signature: only
    # the text is not text PostgreSQL can hold.
    raw_json = json.dumps({**data, "k": keys})
    forged = base64.urlsafe_b64encode(raw_json.encode()).decode().rstrip("=")
    response = await web.client.get(
        "/staff/tickets", params={"sort": "assignee", "page": forged}, allow_redirects=False
    )
    assert response.status == 400
    assert "the page cursor is not valid" in await response.text()


async def test_a_body_over_the_limit_is_413_with_the_error_page(web: Web, agent: None) -> None:
    cookies, token = await login_form_cookie(web)
    body = f"csrf_token={token}&email=".encode() + b"a" * (300 * 1024)
    status, _, payload = await raw(
        web, "POST /login HTTP/1.1", body, headers=cookies + f"Content-Type: {FORM}\r\n".encode()
    )
    assert_error_page(status, payload, 413)


async def test_memory_kept_per_error_is_bounded(db_url: str, agent: None) -> None:
    async def broken(request: aioweb.Request) -> aioweb.Response:
        raise RuntimeError("a bug")

    def setup(app: aioweb.Application) -> None:
        app.router.add_get("/broken", broken)

    errors = ServerErrors.KEEP * 3
    async with running(db_url, setup=setup, expect_500s=True) as web:
        for index in range(errors):
            response = await web.client.get("/broken", headers={"X-Request-ID": f"e-{index}"})
            assert response.status == 500
        kept = web.app[SERVER_ERRORS]
        assert kept.count == errors
        assert list(kept.recent) == [f"e-{i}" for i in range(errors - ServerErrors.KEEP, errors)]
