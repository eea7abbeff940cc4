"""A status stream ends when its session does, by time as well as by logout: past its
absolute lifetime, or idle too long, within one keep-alive interval."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import psycopg
import pytest

from tests.support.web import csrf_in, insert_tickets, make_user, running
from ticketexport.signin import IDLE_SECONDS

ADMIN = "streamer@example.com"
KEEPALIVE = 0.5
ENDINGS = {
    "lifetime": "UPDATE web_sessions SET expires_at = now() - interval '1 second' "
    "WHERE user_id = %s",
    "idle": "UPDATE web_sessions SET last_seen_at = now() - make_interval(secs => %s) "
    "WHERE user_id = %s",
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_stream_ends_when_its_session_expires(
    db_url: str, conn: psycopg.Connection[Any], ending: str
) -> None:
    insert_tickets(conn, 10, title="Streamed")
    user_id = make_user(conn, ADMIN, permissions=512, admin=True)
    async with running(db_url, keepalive_seconds=KEEPALIVE) as web:
        assert (await web.login(ADMIN)).status == 303
        token = csrf_in(await (await web.client.get("/staff/tickets")).text())
        # No worker runs: the export stays queued and its stream stays open.
        requested = await web.client.post(
            "/staff/tickets/export",
            data={"csrf_token": token, "view": "all"},
            allow_redirects=False,
        )
        match = re.fullmatch(r"/staff/exports/([0-9a-f-]{36})", requested.headers["Location"])
        assert match
        response = await web.client.get(f"/staff/exports/{match.group(1)}/events")
        assert response.status == 200
        first = await response.content.readuntil(b"\n\n")
        data = next(line for line in first.decode().splitlines() if line.startswith("data:"))
        assert json.loads(data[5:])["status"] == "queued"

        params = (user_id,) if ending == "lifetime" else (IDLE_SECONDS + 1, user_id)
        conn.execute(ENDINGS[ending], params)
        # The stream ends by itself (its recheck, once per keep-alive interval, finds the
        # session over); the bound only keeps a stream that never ends from hanging.
        async with asyncio.timeout(KEEPALIVE * 2 + 10):
            rest = await response.content.read()
        assert response.content.at_eof()
        assert b"data:" not in rest, rest
