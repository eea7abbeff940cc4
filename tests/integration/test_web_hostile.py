"""Hostile input in every list parameter and view-form field: a clear 4xx, never a 500."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import aiohttp
import psycopg
import pytest
from yarl import URL

from tests.support.web import Web, insert_tickets, make_user
from ticketexport.views import registry

# Raw (already percent-encoded) query values, so NUL and invalid UTF-8 reach the server.
HOSTILE = [
    "'%20OR%201=1%20--",
    "1;%20DROP%20TABLE%20tickets",
    "%22quoted%22%20'single'",
    urllib.parse.quote("ünïcødé ✓ 日本語 🎫"),
    "a%00b",
    "%00",
    "%FF%FE",
    "x" * 10_240,
    "y" * 5_000,
    "-1",
    "99999999999999999999999",
    "%5B%5D",
    "%7B%7D",
    "%E2%80%AE",
    "%3Cscript%3Ealert(1)%3C/script%3E",
    "..%2F..%2Fetc%2Fpasswd",
]

PARAMS = ["view", "q", "sort", "page", *registry.FILTER_PARAMS]


def forged_cursor(payload: Any) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> None:
    make_user(conn, "agent@example.com")
    insert_tickets(conn, 60)


async def test_every_list_parameter(web: Web, seeded: None) -> None:
    await web.login("agent@example.com")
    statuses: dict[int, int] = {}
    for param in [*PARAMS, "unknown_key", "page[]", "%00"]:
        for value in HOSTILE:
            url = URL(f"/staff/tickets?{param}={value}", encoded=True)
            response = await web.client.get(url, allow_redirects=False)
            text = await response.text()
            assert response.status < 500, (param, value[:40])
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 400 and len(value) > 8000:
                # Over aiohttp's 8 KiB request-line limit: refused before any handler runs.
                assert "more than 8190 bytes" in text
            elif response.status == 400:
                assert 'class="error-message"' in text
                assert "syntax error" not in text.lower()
                assert "psycopg" not in text.lower()
            else:
                # Accepted input (a search for odd text, say) is an ordinary list page.
                assert response.status in (200, 404), (param, value[:40], response.status)
    assert statuses.get(400, 0) > len(PARAMS) * 5


async def test_bad_cursors(web: Web, seeded: None) -> None:
    await web.login("agent@example.com")
    first = await (await web.client.get("/staff/tickets?sort=oldest")).text()
    start = first.index('id="next-page"')
    href = first[
        first.rindex('href="', 0, start) + 6 : first.index(
            '"', first.rindex('href="', 0, start) + 6
        )
    ]
    cursor = urllib.parse.parse_qs(urllib.parse.urlsplit(href.replace("&amp;", "&")).query)["page"][
        0
    ]
    assert (await web.client.get(f"/staff/tickets?sort=oldest&page={cursor}")).status == 200
    bad = [
        cursor[:-2],
        cursor + "AA",
        cursor[::-1],
        forged_cursor({"s": "x", "k": [1]}),
        forged_cursor([1, 2, 3]),
        forged_cursor("'; DROP TABLE tickets; --"),
        base64.urlsafe_b64encode(b"\x00\xff" * 40).decode(),
        "=" * 10,
    ]
    for value in bad:
        response = await web.client.get(
            "/staff/tickets", params={"sort": "oldest", "page": value}, allow_redirects=False
        )
        assert response.status == 400, value
    # A cursor from one sort is not valid for another.
    other = await web.client.get(
        "/staff/tickets", params={"sort": "priority", "page": cursor}, allow_redirects=False
    )
    assert other.status == 400


FORM_FIELDS = [
    "name",
    "system_wide",
    "and-0-field",
    "and-0-op",
    "and-0-text",
    "and-0-number",
    "and-0-date",
    "and-0-amount",
    "and-0-unit",
    "and-0-preset",
    "and-0-ids-person",
    "and-0-ids-team",
    "and-0-ids-status",
    "and-0-ids-priority",
    "and-0-status_type",
    "and-0-priority_ref",
    "or-0-field",
    "or-999-field",
    "or-99999-field",
    "col",
    "order-id",
    "sort-0-column",
    "sort-0-dir",
    "sort-9-column",
    "unknown_key",
]

# (field, op) pairs that make each typed value input the one the server reads.
_FIELD_FOR = {
    "and-0-text": ("title", "contains"),
    "and-0-number": ("id", "gt"),
    "and-0-date": ("created_at", "before"),
    "and-0-amount": ("created_at", "within_past"),
    "and-0-unit": ("created_at", "within_past"),
    "and-0-preset": ("created_at", "preset"),
    "and-0-ids-person": ("assignee", "any_of"),
    "and-0-ids-team": ("team", "any_of"),
    "and-0-ids-status": ("status", "any_of"),
    "and-0-ids-priority": ("priority", "any_of"),
    "and-0-status_type": ("status", "type_is"),
    "and-0-priority_ref": ("priority", "less_important_than"),
}


def form_body(token: str, field: str, raw_value: str) -> str:
    pairs = {
        "csrf_token": urllib.parse.quote(token),
        "name": "Hostile",
        "col": "id",
        "sort-0-column": "id",
        "sort-0-dir": "asc",
        "and-0-amount": "2",
        "and-0-unit": "days",
    }
    if field in _FIELD_FOR:
        pairs["and-0-field"], pairs["and-0-op"] = _FIELD_FOR[field]
    body = "&".join(f"{k}={v}" for k, v in pairs.items() if k != field)
    return body + f"&{field}={raw_value}"


async def test_every_view_form_field(web: Web, seeded: None, conn: psycopg.Connection[Any]) -> None:
    await web.login("agent@example.com")
    token = await web.csrf()
    outcomes: dict[int, int] = {}
    for field in FORM_FIELDS:
        for value in HOSTILE:
            response = await web.client.post(
                "/staff/views/new",
                data=form_body(token, field, value).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
            )
            text = await response.text()
            assert response.status in (303, 400, 403, 413), (field, value[:40], response.status)
            outcomes[response.status] = outcomes.get(response.status, 0) + 1
            if response.status == 400:
                assert 'class="form-error"' in text or 'class="error-message"' in text
                assert "psycopg" not in text.lower()
            if response.status == 303:
                # Whatever was accepted must list without trouble.
                listed = await web.client.get(response.headers["Location"])
                assert listed.status == 200, (field, value[:40])
    assert outcomes.get(400, 0) > len(FORM_FIELDS) * 5
    assert conn.execute("SELECT count(*) FROM saved_views").fetchone()[0] == outcomes.get(303, 0)


async def test_oversized_and_odd_posts(web: Web, seeded: None) -> None:
    await web.login("agent@example.com")
    token = await web.csrf()
    huge = await web.client.post(
        "/staff/views/new",
        data={"csrf_token": token, "name": "x" * 400_000},
        allow_redirects=False,
    )
    assert huge.status == 413
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("name", "y")
    form.add_field("file", b"\x00\x01", filename="x.bin")
    multipart = await web.client.post("/staff/views/new", data=form, allow_redirects=False)
    assert multipart.status in (400, 303)
    as_json = await web.client.post(
        "/staff/views/new", json={"csrf_token": token}, allow_redirects=False
    )
    assert as_json.status == 403
    login = await web.client.post(
        "/login",
        data=b"email=a%00b&password=%FF&csrf_token=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert login.status in (400, 403)


SCHEDULE_FIELDS = [
    "name",
    "cadence",
    "every_minutes",
    "minute",
    "time",
    "weekday",
    "mode",
    "destination",
    "notify",
    "format",
    "view",
    "q",
    "sort",
    "status",
]


async def test_every_schedule_form_field(
    web: Web, seeded: None, conn: psycopg.Connection[Any]
) -> None:
    make_user(conn, "scheduler@example.com", permissions=512, admin=True)
    await web.login("scheduler@example.com")
    token = await web.csrf()
    outcomes: dict[int, int] = {}
    base = {"view": "all", "name": "Nightly", "cadence": "daily", "time": "02:30"}
    for field in SCHEDULE_FIELDS:
        for value in HOSTILE:
            pairs = {k: v for k, v in base.items() if k != field}
            body = "&".join(f"{k}={v}" for k, v in pairs.items())
            body += f"&csrf_token={urllib.parse.quote(token)}&{field}={value}"
            response = await web.client.post(
                "/staff/schedules",
                data=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
            )
            text = await response.text()
            assert response.status in (303, 400, 413, 429), (field, value[:40], response.status)
            assert "psycopg" not in text.lower()
            outcomes[response.status] = outcomes.get(response.status, 0) + 1
            if response.status == 303:
                shown = await web.client.get(response.headers["Location"])
                assert shown.status == 200, (field, value[:40])
    assert outcomes.get(400, 0) > len(SCHEDULE_FIELDS) * 5
    listed = await web.client.get("/staff/schedules")
    assert listed.status == 200
    for value in HOSTILE:
        for path in (f"/staff/schedules/{value}", f"/staff/schedules?all={value}"):
            response = await web.client.get(URL(path, encoded=True), allow_redirects=False)
            assert response.status in (400, 404), (path[:60], response.status)
            post = await web.client.post(
                URL(f"/staff/schedules/{value}/pause", encoded=True),
                data={"csrf_token": token},
                allow_redirects=False,
            )
            # An id too long for the request line is refused before routing (400).
            assert post.status in (400, 404, 405), (value[:40], post.status)
