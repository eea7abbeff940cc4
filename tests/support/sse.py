"""Shared by the event-stream acceptance tests: an in-process web app, the client process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

from ticketexport import accounts, events
from ticketexport.domain.permissions import Permission
from ticketexport.services import Services
from ticketexport.web import auth
from ticketexport.web.app import init_app

CLIENT_SCRIPT = Path(__file__).resolve().with_name("event_clients.py")
EMAIL = "watcher.admin@example.com"
PASSWORD = "correct horse battery"


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def login_cookie(base_url: str, email: str, password: str) -> str:
    """Sign in over HTTP; returns a Cookie header value for the session."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/login") as page:
            match = _CSRF.search(await page.text())
            assert match, "the login page carries a csrf_token"
            token = match.group(1)
            cookies = {k: m.value for k, m in page.cookies.items()}
        async with session.post(
            f"{base_url}/login",
            data={"email": email, "password": password, "csrf_token": token, "next": ""},
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            allow_redirects=False,
        ) as response:
            if response.status != 303:
                raise RuntimeError(f"login failed with HTTP {response.status}")
            cookies.update({k: m.value for k, m in response.cookies.items()})
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def add_admin(conn: psycopg.Connection[Any]) -> int:
    """An administrator holding Import / Export Tickets (512)."""
    accounts.add_role(
        conn, "watchers", label="Watchers", permissions=Permission.IMPORT_EXPORT_TICKETS
    )
    return accounts.add_user(
        conn, EMAIL, name="Wat Cher", password=PASSWORD, admin=True, roles=["watchers"]
    )


@contextlib.asynccontextmanager
async def serving(services: Services) -> AsyncIterator[tuple[web.Application, str]]:
    """The real application on a TCP port in this process; yields (app, base URL)."""
    app = init_app(services)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def session_cookies(conn: psycopg.Connection[Any], user_id: int, count: int) -> list[str]:
    """`count` signed-in sessions of one user, made as a sign-in makes them (sessions live
    in the database), without a password check each; returns their Cookie header values."""
    cookies = []
    for _ in range(count):
        token = auth.new_token()
        conn.execute(
            "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) "
            "VALUES (%s, %s, %s, now() + interval '1 hour')",
            (auth.session_id(token), user_id, auth.new_token()),
        )
        cookies.append(f"{auth.SESSION_COOKIE}={token}")
    return cookies


async def start_clients(url: str, cookies: list[str], clients: int) -> asyncio.subprocess.Process:
    """The separate client process, holding `clients` event streams on `url`, spread over
    the sessions of `cookies`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT_SCRIPT),
        "--url",
        url,
        *(arg for cookie in cookies for arg in ("--cookie", cookie)),
        "--clients",
        str(clients),
        "--timeout",
        "90",
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,
    )


async def read_report(proc: asyncio.subprocess.Process, seconds: float) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), seconds)
    assert line, "the client process ended without a report"
    report: dict[str, Any] = json.loads(line)
    return report


def listeners(conn: psycopg.Connection[Any]) -> int:
    """Backends of this database holding the event hub's LISTEN."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = %s AND datname = current_database()",
        (events.APPLICATION_NAME,),
    ).fetchone()
    assert row is not None
    return int(row[0])
