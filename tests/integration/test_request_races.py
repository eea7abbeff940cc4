"""Requests that arrive at the same instant, sent together with asyncio.gather through the
real app: one user's identical clicks, and clicks or retries racing for the last place
under the active-export limit. Only the per-user lock taken before the checks makes the
answers exact; without it several requests read the same state and all insert."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest_asyncio

from tests.support.web import Web, csrf_in, insert_tickets, make_user, running

EXPORT = 512
AGENT = "racer@example.com"
# Enough clicks at once that, without the lock, several of them pass the check together.
RACERS = 8
LIMIT = 3


@pytest_asyncio.fixture
async def web(db_url: str, conn: psycopg.Connection[Any]) -> AsyncIterator[Web]:
    insert_tickets(conn, 40, title="Race")
    make_user(conn, AGENT, permissions=EXPORT)
    async with running(db_url, max_active_exports_per_user=LIMIT) as client:
        assert (await client.login(AGENT)).status == 303
        yield client


async def _post_all(web: Web, posts: list[tuple[str, dict[str, str]]]) -> list[tuple[int, str]]:
    """Every (path, form) posted at once; (status, Location or body) for each."""
    token = csrf_in(await (await web.client.get("/staff/exports")).text())

    async def post(path: str, form: dict[str, str]) -> tuple[int, str]:
        response = await web.client.post(
            path, data={"csrf_token": token, **form}, allow_redirects=False
        )
        body = await response.text()
        return response.status, response.headers.get("Location", body)

    return list(await asyncio.gather(*(post(path, form) for path, form in posts)))


def _exports(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (str(row[0]), row[1])
        for row in conn.execute("SELECT id, status FROM export_jobs ORDER BY requested_at")
    ]


def _audited(conn: psycopg.Connection[Any], action: str) -> int:
    row = conn.execute("SELECT count(*) FROM audit_log WHERE action = %s", (action,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_identical_clicks_at_once_make_one_export(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    form = {"view": "all", "sort": "oldest"}
    answers = await _post_all(web, [("/staff/tickets/export", form)] * RACERS)
    assert {status for status, _ in answers} == {303}, answers
    exports = _exports(conn)
    assert len(exports) == 1, f"{len(exports)} exports for {RACERS} identical clicks"
    assert {location for _, location in answers} == {f"/staff/exports/{exports[0][0]}"}
    assert _audited(conn, "export.requested") == 1
    assert _audited(conn, "export.deduplicated") == RACERS - 1


async def test_clicks_racing_for_the_last_place_get_exactly_the_limit(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    # Two places taken, one left: RACERS different requests want it at once.
    taken = [("/staff/tickets/export", {"view": "all", "q": f"taken {n}"}) for n in range(2)]
    assert {status for status, _ in await _post_all(web, taken)} == {303}
    racing = [("/staff/tickets/export", {"view": "all", "q": f"race {n}"}) for n in range(RACERS)]
    answers = await _post_all(web, racing)
    statuses = collections.Counter(status for status, _ in answers)
    assert statuses == {303: 1, 429: RACERS - 1}, answers
    assert len(_exports(conn)) == LIMIT
    assert _audited(conn, "export.denied") == RACERS - 1


async def test_retries_racing_for_the_last_place_get_exactly_the_limit(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    # RACERS failed exports, then two active ones: every retry at once wants the last place.
    for n in range(RACERS):
        failed = [("/staff/tickets/export", {"view": "all", "q": f"failed {n}"})]
        assert {status for status, _ in await _post_all(web, failed)} == {303}
        conn.execute(
            "UPDATE export_jobs SET status = 'failed', error_code = 'internal', "
            "error_message = 'x', finished_at = now() WHERE status = 'queued'"
        )
    active = [("/staff/tickets/export", {"view": "all", "q": f"active {n}"}) for n in range(2)]
    assert {status for status, _ in await _post_all(web, active)} == {303}
    failed_ids = [export_id for export_id, status in _exports(conn) if status == "failed"]
    answers = await _post_all(web, [(f"/staff/exports/{i}/retry", {}) for i in failed_ids])
    statuses = collections.Counter(status for status, _ in answers)
    assert statuses == {303: 1, 429: RACERS - 1}, answers
    queued = [export_id for export_id, status in _exports(conn) if status == "queued"]
    assert len(queued) == LIMIT
    assert _audited(conn, "export.retried") == 1
