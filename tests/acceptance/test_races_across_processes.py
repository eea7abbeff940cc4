"""One user's clicks arriving at once at two `serve` processes on one database: a lock held
in one process would not serialise them, the per-user lock in PostgreSQL does."""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.servers import Server, Servers
from tests.support.web import PASSWORD, csrf_in, insert_tickets, make_user

pytestmark = pytest.mark.slow

AGENT = "racer@example.com"
RACERS = 8
LIMIT = 3


async def _post_at_once(
    servers: list[Server], forms: list[dict[str, str]]
) -> list[tuple[int, str]]:
    """Signs in on the first process, then posts every form at once, alternating between
    the processes; (status, Location) for each."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        login_page = await (await http.get(f"{servers[0].url}/login")).text()
        signed_in = await http.post(
            f"{servers[0].url}/login",
            data={"email": AGENT, "password": PASSWORD, "csrf_token": csrf_in(login_page)},
            allow_redirects=False,
        )
        assert signed_in.status == 303
        token = csrf_in(await (await http.get(f"{servers[1].url}/staff/exports")).text())

        async def post(server: Server, form: dict[str, str]) -> tuple[int, str]:
            async with http.post(
                f"{server.url}/staff/tickets/export",
                data={"csrf_token": token, **form},
                allow_redirects=False,
            ) as response:
                return response.status, response.headers.get("Location", "")

        return list(
            await asyncio.gather(
                *(post(s, f) for s, f in zip(itertools.cycle(servers), forms, strict=False))
            )
        )


def _export_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM export_jobs").fetchone()
    assert row is not None
    return int(row[0])


async def test_identical_clicks_and_the_last_place_across_two_processes(
    servers: Servers, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    insert_tickets(conn, 40, title="Race")
    make_user(conn, AGENT, permissions=512)
    pair = servers.pair(db_url, {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": str(LIMIT)})

    same = await _post_at_once(pair, [{"view": "all", "sort": "oldest"}] * RACERS)
    assert {status for status, _ in same} == {303}, same
    assert len({location for _, location in same}) == 1, same
    assert _export_count(conn) == 1, "identical clicks at two processes made several exports"

    # One place taken by the click above, one more here: one left for RACERS requests.
    assert (await _post_at_once(pair, [{"view": "all", "q": "second"}]))[0][0] == 303
    racing = [{"view": "all", "q": f"race {n}"} for n in range(RACERS)]
    answers = await _post_at_once(pair, racing)
    assert collections.Counter(status for status, _ in answers) == {303: 1, 429: RACERS - 1}
    assert _export_count(conn) == LIMIT, servers.outputs()
