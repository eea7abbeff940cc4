"""The web process's LISTEN connection killed server-side mid-export: open streams still
reach the final state, and the process is back to exactly one listener."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.sse import (
    EMAIL,
    PASSWORD,
    add_admin,
    listeners,
    login_cookie,
    read_report,
    serving,
    start_clients,
)
from ticketexport import events
from ticketexport.bootstrap import open_services
from ticketexport.config import Settings
from ticketexport.services import Services

pytestmark = pytest.mark.slow

TICKETS = 3000
THROTTLE = 1000  # rows per second: about three seconds of export to kill the listener in
CLIENTS = 20
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _insert_tickets(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(
        "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
        "SELECT 'Ticket ' || g, 1 + g %% 2, 1 + g %% 4, "
        "  now() - make_interval(mins => g), now() - make_interval(mins => g) "
        "FROM generate_series(1, %s) AS g",
        (count,),
    )


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    settings = Settings.from_env({"DATABASE_URL": db_url})
    async with open_services(settings, db_url, web=True) as opened:
        yield opened


@contextlib.contextmanager
def _worker(db_url: str, home: Path) -> Any:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "TICKETEXPORT_HOME": str(home),
        "TICKETEXPORT_EXPORT_MAX_ROWS_PER_S": str(THROTTLE),
        "TICKETEXPORT_HEARTBEAT_SECONDS": "1",
    }
    log = (home / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketexport", "worker", "--concurrency", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


async def _request_export(base_url: str, cookie: str) -> str:
    """Click Export to CSV on the "All tickets" view, over HTTP."""
    async with aiohttp.ClientSession(headers={"Cookie": cookie}) as session:
        async with session.get(f"{base_url}/staff/tickets?view=all") as page:
            match = _CSRF.search(await page.text())
            assert match
        async with session.post(
            f"{base_url}/staff/tickets/export",
            data={"view": "all", "csrf_token": match.group(1)},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            location = response.headers["Location"]
    return location.rsplit("/", 1)[1]


def _state(conn: psycopg.Connection[Any], export_id: str) -> tuple[str, int]:
    row = conn.execute(
        "SELECT status, rows_done FROM export_jobs WHERE id = %s", (export_id,)
    ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def _kill_listener(conn: psycopg.Connection[Any]) -> int:
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = %s AND datname = current_database()",
        (events.APPLICATION_NAME,),
    ).fetchall()
    return sum(1 for (ok,) in rows if ok)


async def test_streams_reach_the_end_when_the_listener_is_killed(
    db_url: str,
    conn: psycopg.Connection[Any],
    services: Services,
    run_dir: Path,
) -> None:
    home = run_dir / f"reconnect-{secrets.token_hex(4)}"
    home.mkdir()
    _insert_tickets(conn, TICKETS)
    add_admin(conn)
    async with serving(services) as (_app, base_url):
        hub = services.hub
        assert hub is not None
        cookie = await login_cookie(base_url, EMAIL, PASSWORD)
        export_id = await _request_export(base_url, cookie)
        proc = await start_clients(
            f"{base_url}/staff/exports/{export_id}/events", [cookie], CLIENTS
        )
        try:
            ready = await read_report(proc, 60)
            assert ready["ready"] == CLIENTS
            with _worker(db_url, home):
                # Wait until the export is visibly under way, then cut the listener.
                deadline = time.monotonic() + 30
                while _state(conn, export_id) == ("queued", 0) or _state(conn, export_id)[1] == 0:
                    assert time.monotonic() < deadline, "the export never started"
                    await asyncio.sleep(0.05)
                status, rows_at_kill = _state(conn, export_id)
                assert status == "running"
                killed_at = time.monotonic()
                assert _kill_listener(conn) == 1
                kills = 1
                # Keep cutting it while the export runs; near the end, cut it every 20 ms
                # (and for a moment after), so the completion's NOTIFY almost surely lands
                # while the hub is deaf and only its resync query can carry the end.
                storm_until: float | None = None
                while storm_until is None or time.monotonic() < storm_until:
                    status, rows = _state(conn, export_id)
                    if status != "running" and storm_until is None:
                        storm_until = time.monotonic() + 0.3
                    near_end = rows >= TICKETS * 0.8 or storm_until is not None
                    await asyncio.sleep(0.02 if near_end else 0.4)
                    kills += _kill_listener(conn)
                final = await read_report(proc, 60)
            assert final["statuses"] == {"completed": CLIENTS}, final
            assert final["errors"] == []
            assert _state(conn, export_id) == ("completed", TICKETS)
            # The final row count reached every client (while storing, and again when done),
            # and so did progress made after the cut.
            assert len(final["received"][str(TICKETS)]) >= CLIENTS
            later = [
                t
                for rows, times in final["received"].items()
                if int(rows) > rows_at_kill
                for t in times
                if t > killed_at
            ]
            assert len(later) >= CLIENTS
            assert hub.reconnects >= 1
            assert hub.reconnects <= kills
            # Back to exactly one LISTEN connection.
            deadline = time.monotonic() + 10
            while listeners(conn) != 1:
                assert time.monotonic() < deadline, "the hub did not reconnect"
                await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
