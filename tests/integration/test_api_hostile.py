"""Hostile input to every API route and field: malformed JSON, wrong types, huge bodies,
forged ids and cursors answer 4xx in the API's JSON error shape, never 500."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from tests.support.api import api, error_of, make_token, run_worker
from tests.support.web import Web, insert_tickets, make_user, running

ADMIN = "hostile.api.admin@example.com"
OTHER = "hostile.api.other@example.com"


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 5, title="Hostile")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=512, admin=True),
        OTHER: make_user(conn, OTHER, permissions=512),
    }


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int]) -> AsyncIterator[Web]:
    # Running the app fails the test if it served any 500.
    async with running(db_url, max_active_exports_per_user=0) as client:
        yield client


@pytest_asyncio.fixture
async def secret(web: Web) -> str:
    return (await make_token(web, ADMIN))[1]


BAD_BODIES: tuple[tuple[bytes, str], ...] = (
    (b"", "malformed_json"),
    (b"{", "malformed_json"),
    (b"{'view': 'all'}", "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    (b"NaN", "invalid_field"),
    (b"[]", "invalid_field"),
    (b'"all"', "invalid_field"),
    (b"null", "invalid_field"),
    (b"1e999", "invalid_field"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
    (b'{"view": 1}', "invalid_field"),
    (b'{"view": ["all"]}', "invalid_field"),
    (b'{"view": {"$gt": ""}}', "invalid_field"),
    (b'{"q": 5}', "invalid_field"),
    (b'{"sort": true}', "invalid_field"),
    (b'{"format": 1}', "invalid_field"),
    (b'{"filters": []}', "invalid_field"),
    (b'{"filters": "status=open"}', "invalid_field"),
    (b'{"filters": {"status": 1}}', "invalid_field"),
    (b'{"filters": {"nope": "x"}}', "invalid_field"),
    (b'{"filters": {"status": ["open"]}}', "invalid_field"),
    (b'{"since": 1}', "invalid_field"),
    (b'{"since": null}', "invalid_field"),
    (b'{"since": ["x"]}', "invalid_field"),
    (b'{"since": "\\u0000"}', "invalid_field"),
    (b'{"since": "00000000-0000-0000-0000-000000000000", "view": "all"}', "invalid_field"),
    (b'{"since": "00000000-0000-0000-0000-000000000000", "format": "csv"}', "invalid_field"),
    (b'{"view": "all", "page": "x"}', "invalid_field"),
    (b'{"view": "all", "columns": ["id"]}', "invalid_field"),
    (b'{"view": "nope"}', "invalid_request"),
    (b'{"view": "-1"}', "invalid_request"),
    (b'{"view": "99999999999999999999"}', "invalid_request"),
    (b'{"view": "all", "sort": "sideways"}', "invalid_request"),
    (b'{"view": "all", "format": "pdf"}', "invalid_request"),
    (b'{"view": "all", "q": "' + b"x" * 201 + b'"}', "invalid_request"),
    (b'{"view": "all", "q": "a\\u0000b"}', "invalid_field"),
    (b'{"view": "all", "q": "\\ud800"}', "invalid_field"),
    (b'{"view": "\\udfff"}', "invalid_field"),
    (b'{"filters": {"status": "\\ud800"}}', "invalid_field"),
    (b'{"filters": {"status": "Open Now"}}', "invalid_request"),
    (b'{"filters": {"type": "both"}}', "invalid_request"),
    (b'{"filters": {"assignee": "1; DROP TABLE users"}}', "invalid_request"),
    (b'{"filters": {"snoozed": "sometimes"}}', "invalid_request"),
)


async def test_malformed_and_mistyped_export_requests(web: Web, secret: str, db_url: str) -> None:
    for body, code in BAD_BODIES:
        response = await api(
            web,
            "POST",
            "/exports",
            secret,
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert await error_of(response, 400) == code, body[:80]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (0,)


async def test_a_body_over_the_limit_is_413(web: Web, secret: str) -> None:
    huge = b'{"q": "' + b"x" * (300 * 1024) + b'"}'
    response = await api(
        web, "POST", "/exports", secret, data=huge, headers={"Content-Type": "application/json"}
    )
    assert await error_of(response, 413) == "body_too_large"
    for action in ("cancel", "retry", "changes"):
        response = await api(web, "POST", f"/exports/{uuid.uuid4()}/{action}", secret, data=huge)
        assert await error_of(response, 413) == "body_too_large"


async def test_forged_ids_and_action_bodies(web: Web, secret: str, db_url: str) -> None:
    made = await api(web, "POST", "/exports", secret, json={"view": "all"})
    real = (await made.json())["id"]
    forged = (
        str(uuid.uuid4()),
        "not-a-uuid",
        "0",
        "1' OR '1'='1",
        "%00",
        "%2e%2e",
        "x" * 64,
    )
    for export_id in forged:
        for method, suffix in (
            ("GET", ""),
            ("GET", "/file"),
            ("GET", "/manifest"),
            ("GET", "/events"),
            ("POST", "/cancel"),
            ("POST", "/retry"),
            ("POST", "/changes"),
        ):
            response = await api(web, method, f"/exports/{export_id}{suffix}", secret)
            assert await error_of(response, 404) == "not_found", (export_id, suffix)
        since = await api(web, "POST", "/exports", secret, json={"since": export_id})
        assert await error_of(since, 404) == "not_found", export_id
    too_long = await api(web, "GET", f"/exports/{'x' * 65}", secret)
    assert await error_of(too_long, 404) == "not_found"
    for body in (b"{", b"[]", b'{"force": true}', b"\xff"):
        response = await api(web, "POST", f"/exports/{real}/cancel", secret, data=body)
        assert response.status == 400, body
    # Cancel with an empty object or no body at all works.
    assert (await api(web, "POST", f"/exports/{real}/cancel", secret, json={})).status == 200
    await run_worker(db_url, real)  # a cancelled export's job does nothing
    # Unknown query parameters are named, not ignored.
    for path in ("/views", "/exports/" + real, "/exports/" + real + "/manifest", "/openapi.json"):
        response = await api(web, "GET", path + "?debug=1", secret)
        assert await error_of(response, 400) == "invalid_parameter", path


async def test_forged_schedule_ids(web: Web, secret: str) -> None:
    for schedule_id in (
        "0",
        "-1",
        "1.5",
        "abc",
        "123456",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999",
        "1' OR '1'='1",
        "%00",
        "%2e%2e",
        "\u0661",
        "x" * 64,
    ):
        response = await api(web, "GET", f"/schedules/{schedule_id}/latest", secret)
        assert await error_of(response, 404) == "not_found", schedule_id
    too_long = await api(web, "GET", f"/schedules/{'1' * 65}/latest", secret)
    assert await error_of(too_long, 404) == "not_found"
    response = await api(web, "GET", "/schedules/1/latest?debug=1", secret)
    assert await error_of(response, 400) == "invalid_parameter"
    for method in ("POST", "DELETE"):
        response = await api(web, method, "/schedules/1/latest", secret)
        assert await error_of(response, 405) == "method_not_allowed"


async def test_forged_cursors_and_limits(web: Web, secret: str) -> None:
    for view in ("all", "open", "closed"):
        assert (await api(web, "POST", "/exports", secret, json={"view": view})).status == 202
    page = await (await api(web, "GET", "/exports", secret, params={"limit": "1"})).json()
    cursor = page["next"]
    assert isinstance(cursor, str)
    # Another user's export, a made-up one, and anything not handed out: 400.
    _, others = await make_token(web, OTHER)
    theirs = await (await api(web, "POST", "/exports", others, json={"view": "all"})).json()
    their_cursor = base64.urlsafe_b64encode(uuid.UUID(theirs["id"]).bytes).decode().rstrip("=")
    made_up = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    for forged in (
        their_cursor,
        made_up,
        "",
        "x",
        cursor + "A",
        cursor[:-1],
        cursor[:-1] + ("B" if cursor[-1] != "B" else "C"),
        "%00" * 22,
        "=" * 22,
        "é" * 22,
        "A" * 5_000,
        "+" + cursor[1:],
        cursor[:-1] + "/",
    ):
        response = await api(web, "GET", "/exports", secret, params={"cursor": forged})
        code = await error_of(response, 400)
        assert code == "invalid_cursor", forged[:40]
    for limit in ("0", "101", "-1", "1.5", "", "x", "1e2", "9" * 40, "٣"):
        response = await api(web, "GET", "/exports", secret, params={"limit": limit})
        assert await error_of(response, 400) == "invalid_parameter", limit
    # The cursor that was handed out works, and the other user's token sees only theirs.
    assert (await api(web, "GET", "/exports", secret, params={"cursor": cursor})).status == 200
    listed = await (await api(web, "GET", "/exports", others)).json()
    assert [item["id"] for item in listed["items"]] == [theirs["id"]]


async def test_odd_methods_headers_and_paths(web: Web, secret: str) -> None:
    for method, path in (
        ("PUT", "/exports"),
        ("DELETE", f"/exports/{uuid.uuid4()}"),
        ("PATCH", "/views"),
        ("POST", "/views"),
        ("GET", f"/exports/{uuid.uuid4()}/cancel"),
    ):
        response = await api(web, method, path, secret)
        assert await error_of(response, 405) == "method_not_allowed", (method, path)
        assert "Allow" in response.headers
    for path in ("/nothing", "/exports/x/y/z", "", "/../staff/tickets"):
        response = await api(web, "GET", path, secret)
        assert response.status in (404, 405), path
    for header in (
        "Bearer  " + secret,
        "bearer " + secret,
        "Bearer " + secret + " extra",
        "Bearer \t" + secret,
        "Token " + secret,
    ):
        response = await web.client.get("/api/v1/views", headers={"Authorization": header})
        assert response.status in (200, 401), header
    response = await web.client.get(
        "/api/v1/views", headers={"Authorization": "Bearer " + secret + "\u00e9"}
    )
    assert response.status in (400, 401)
    # A range the file cannot satisfy is 416 there, not a 500.
    response = await api(
        web, "GET", f"/exports/{uuid.uuid4()}/file", secret, headers={"Range": "bytes=9-1"}
    )
    assert response.status == 404
