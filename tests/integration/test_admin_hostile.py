"""Hostile input in every administration parameter and form field: a clear 4xx, never a 500."""

from __future__ import annotations

import urllib.parse
from typing import Any

import psycopg
import pytest
from yarl import URL

from tests.integration.test_web_hostile import HOSTILE
from tests.support.web import Web, make_user
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission, permission_name

ROOT = "root@example.com"

QUERIES = {
    "/admin/users": ["q", "page", "unknown_key"],
    "/admin/audit": ["action", "actor", "export", "from", "to", "page", "unknown_key"],
    "/admin/audit.csv": ["action", "actor", "export", "from", "to", "page"],
    "/admin/queue": ["unknown_key"],
    "/admin/roles": ["unknown_key"],
}
# Each form with values that would be accepted, so each hostile field is what is judged.
FORMS = {
    "/admin/users": {
        "name": "Hos Tile",
        "email": "hostile@example.com",
        "password": "pw",
        "admin": "1",
        "roles": "r_root_example_com",
    },
    "/admin/users/{user}": {
        "name": "Hos Tile",
        "email": ROOT,
        "password": "",
        "active": "1",
        "admin": "1",
        "roles": "r_root_example_com",
    },
    "/admin/roles": {"dev_name": "hostile", "label": "Hostile", "permissions": "users"},
    # Every permission again, so the accepted posts leave the signed-in administrator's rights.
    "/admin/roles/r_root_example_com": {
        "label": "Root",
        "permissions": ",".join(permission_name(p) for p in Permission),
    },
}


@pytest.fixture
def root_id(conn: psycopg.Connection[Any]) -> int:
    return make_user(conn, ROOT, permissions=int(ALL_PERMISSIONS), admin=True)


async def test_every_admin_parameter(web: Web, root_id: int) -> None:
    assert (await web.login(ROOT)).status == 303
    outcomes: dict[int, int] = {}
    for path, params in QUERIES.items():
        for param in params:
            for value in HOSTILE:
                url = URL(f"{path}?{param}={value}", encoded=True)
                response = await web.client.get(url, allow_redirects=False)
                body = await response.read()
                assert response.status in (200, 400), (path, param, value[:40], response.status)
                outcomes[response.status] = outcomes.get(response.status, 0) + 1
                if response.status == 400 and len(value) < 8000:
                    assert b'class="error-message"' in body, (path, param, value[:40])
                    assert b"psycopg" not in body.lower()
    assert outcomes.get(400, 0) > 50
    for path in (
        "/admin/users/0",
        "/admin/users/99999999999999999999",
        "/admin/users/-1",
        "/admin/roles/%00",
        "/admin/roles/" + "a" * 60,
        "/admin/roles/Root",
        "/admin/roles/..%2F..%2Fetc",
    ):
        response = await web.client.get(URL(path, encoded=True), allow_redirects=False)
        assert response.status == 404, path


async def test_every_admin_form_field(
    web: Web, root_id: int, conn: psycopg.Connection[Any]
) -> None:
    assert (await web.login(ROOT)).status == 303
    token = await web.csrf("/admin/users")
    outcomes: dict[int, int] = {}
    for template, fields in FORMS.items():
        path = template.format(user=root_id)
        for field in [*fields, "unknown_key"]:
            for value in HOSTILE:
                pairs = [f"csrf_token={urllib.parse.quote(token)}"]
                pairs += [
                    f"{key}={urllib.parse.quote(text)}"
                    for key, text in fields.items()
                    if key != field
                ]
                pairs.append(f"{field}={value}")
                response = await web.client.post(
                    path,
                    data="&".join(pairs).encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    allow_redirects=False,
                )
                body = await response.text()
                assert response.status in (303, 400, 403, 413), (path, field, value[:40])
                outcomes[response.status] = outcomes.get(response.status, 0) + 1
                if response.status in (400, 403):
                    assert 'class="form-error"' in body or 'class="error-message"' in body
                    assert "psycopg" not in body.lower()
    assert outcomes.get(400, 0) > 100
    # Whatever was accepted still lists.
    for path in ("/admin/users", "/admin/roles", "/admin/audit"):
        assert (await web.client.get(path)).status == 200
    row = conn.execute("SELECT is_admin, is_active FROM users WHERE id = %s", (root_id,)).fetchone()
    assert row == (True, True)
