"""Shared helpers for the web integration tests: a running app, users, tickets, forms."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web as aioweb
from aiohttp.test_utils import TestClient, TestServer

from ticketexport import accounts
from ticketexport.bootstrap import open_services
from ticketexport.config import Network, Settings, networks
from ticketexport.domain.permissions import Permission
from ticketexport.services import Services
from ticketexport.storage import Storage
from ticketexport.web.app import init_app
from ticketexport.web.keys import SERVER_ERRORS

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings_for(db_url: str, **overrides: Any) -> Settings:
    # The run's isolated home (tests/conftest.py), so stored files never land in the working tree.
    base = Settings.from_env(
        {"DATABASE_URL": db_url, "TICKETEXPORT_HOME": os.environ["TICKETEXPORT_HOME"]}
    )
    return dataclasses.replace(base, **overrides)


def proxies(value: str) -> tuple[Network, ...]:
    """TICKETEXPORT_TRUSTED_PROXY's value as the settings hold it."""
    return networks({"TICKETEXPORT_TRUSTED_PROXY": value}, "TICKETEXPORT_TRUSTED_PROXY")


def make_user(
    conn: psycopg.Connection[Any],
    email: str,
    *,
    permissions: int = 0,
    admin: bool = False,
    name: str = "Test User",
) -> int:
    """A user holding exactly `permissions` through a role of their own."""
    roles = []
    if permissions:
        role = "r_" + re.sub(r"[^a-z0-9]", "_", email.lower())[:40]
        accounts.add_role(conn, role, label=role, permissions=Permission(permissions))
        roles.append(role)
    return accounts.add_user(
        conn,
        email,
        name=name,
        password=PASSWORD,
        admin=admin,
        roles=roles,
        password_hash=_password_hash(),
    )


@functools.cache
def _password_hash() -> str:
    """PASSWORD hashed once per run: argon2 is slow on purpose, and every test makes users."""
    return accounts.hash_password(PASSWORD)


def insert_tickets(conn: psycopg.Connection[Any], count: int, *, title: str = "Ticket") -> None:
    conn.execute(
        "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
        "SELECT %s || ' ' || g, 1 + g %% 2, 1 + g %% 4, "
        "  now() - make_interval(mins => g), now() - make_interval(mins => g) "
        "FROM generate_series(1, %s) AS g",
        (title, count),
    )


def csrf_in(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "the page carries no csrf_token input"
    return html.unescape(match.group(1))


class _Collect(logging.Handler):
    """Keeps the app's error log lines, so a 500 failure shows its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Web:
    """A test client bound to one running app, with login and form helpers."""

    def __init__(self, client: TestClient[Any, Any], services: Services):
        self.client = client
        self.services = services
        self.pool = services.pool

    @property
    def app(self) -> Any:
        return self.client.server.app

    async def login(self, email: str, password: str = PASSWORD, next_: str = "") -> Any:
        page = await self.client.get("/login")
        token = csrf_in(await page.text())
        return await self.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token, "next": next_},
            allow_redirects=False,
        )

    async def csrf(self, path: str = "/staff/views") -> str:
        response = await self.client.get(path)
        return csrf_in(await response.text())

    async def logout_cookies(self) -> None:
        self.client.session.cookie_jar.clear()


@contextlib.asynccontextmanager
async def running(
    db_url: str,
    *,
    setup: Callable[[aioweb.Application], None] | None = None,
    expect_500s: bool = False,
    storage: Storage | None = None,
    **overrides: Any,
) -> AsyncIterator[Web]:
    """The real app against `db_url`; fails the test if it served any 500. `storage`
    replaces the configured backend (a store that fails on purpose)."""
    captured = _Collect()
    logger = logging.getLogger("ticketexport.web")
    logger.addHandler(captured)
    try:
        settings = settings_for(db_url, **overrides)
        async with open_services(settings, db_url, web=True, storage=storage) as services:
            app = init_app(services)
            if setup is not None:
                setup(app)
            async with TestClient(TestServer(app)) as client:
                yield Web(client, services)
                served = app[SERVER_ERRORS]
                errors = (served.count, list(served.recent))
    finally:
        logger.removeHandler(captured)
    if errors[0] and not expect_500s:
        pytest.fail(
            f"the app served {errors[0]} response(s) with status 500: {errors[1]}\n"
            + "\n".join(captured.lines)
        )


@contextlib.asynccontextmanager
async def exporting_web(
    db_url: str, home: Path, *, timezone: str, email: str, password: str
) -> AsyncIterator[Web]:
    """The app storing under `home`, signed in, for tests that click every Export before
    any finishes and keep every status stream open on one session: neither per-user limit
    applies."""
    async with running(
        db_url,
        storage_url=(home / "exports").as_uri(),
        timezone=timezone,
        max_active_exports_per_user=0,
        max_streams_per_session=0,
    ) as web:
        assert (await web.login(email, password)).status == 303
        yield web
