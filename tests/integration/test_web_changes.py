"""Changes since an earlier export over HTTP: who may ask, the 409s, the status page, the
audit, and a chain of files of changes that gives the full view."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from yarl import URL

from tests.support.services import services_for
from tests.support.web import Web, insert_tickets, make_user, running
from ticketexport import db
from ticketexport.exports import maintenance
from ticketexport.exports.formats import BOM
from ticketexport.exports.worker import ExportRun

EXPORT = 512
OWNER = "owner.export@example.com"
ADMIN = "admin.export@example.com"
OTHER = "other.export@example.com"
NO_PERMISSION = "staff.only@example.com"


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 40, title="Printer jammed")
    return {
        OWNER: make_user(conn, OWNER, permissions=EXPORT, admin=True),
        ADMIN: make_user(conn, ADMIN, permissions=EXPORT, admin=True),
        OTHER: make_user(conn, OTHER, permissions=EXPORT),
        NO_PERMISSION: make_user(conn, NO_PERMISSION),
    }


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int]) -> AsyncIterator[Web]:
    async with running(db_url, heartbeat_seconds=0.2) as client:
        yield client


def _id_of(location: str) -> str:
    match = re.fullmatch(r"/staff/exports/([0-9a-f-]{36})", location)
    assert match, location
    return match.group(1)


async def _full_export(web: Web, **fields: str) -> str:
    token = await web.csrf("/staff/tickets")
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": token, "view": "all", "sort": "oldest", **fields},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return _id_of(response.headers["Location"])


async def _changes(web: Web, export_id: str) -> Any:
    token = await web.csrf(f"/staff/exports/{export_id}")
    return await web.client.post(
        f"/staff/exports/{export_id}/changes", data={"csrf_token": token}, allow_redirects=False
    )


async def _run_worker(db_url: str, export_id: str) -> None:
    async with services_for(db_url, env={"TICKETEXPORT_HEARTBEAT_SECONDS": "0.2"}) as services:
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT procrastinate_job_id FROM export_jobs WHERE id = %s", (export_id,)
            )
            row = await cur.fetchone()
        assert row is not None
        await ExportRun(services, export_id, row[0]).run()


async def _file(web: Web, export_id: str) -> list[list[str]]:
    response = await web.client.get(f"/staff/exports/{export_id}/download")
    assert response.status == 200, await response.text()
    data = await response.read()
    assert data.startswith(BOM)
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode(), newline="")))


def _apply(state: dict[str, list[str]], changes: list[list[str]]) -> None:
    """Apply a file of changes (header first) to rows keyed by ticket id."""
    header = changes[0]
    assert header[0] == "Change"
    at = header.index("Ticket ID")
    for row in changes[1:]:
        if row[0] == "delete":
            del state[row[at]]
        else:
            assert row[0] == "upsert"
            state[row[at]] = row[1:]


def _keyed(full: list[list[str]]) -> dict[str, list[str]]:
    at = full[0].index("Ticket ID")
    return {row[at]: row for row in full[1:]}


async def test_a_chain_of_changes_gives_the_full_view(web: Web, db_url: str) -> None:
    await web.login(OWNER)
    first = await _full_export(web)
    await _run_worker(db_url, first)
    page = await (await web.client.get(f"/staff/exports/{first}")).text()
    assert f'action="/staff/exports/{first}/changes"' in page
    assert "Export changes since this one" in page
    listing = await (await web.client.get("/staff/exports")).text()
    assert f'action="/staff/exports/{first}/changes"' in listing

    state = _keyed(await _file(web, first))
    writes = [
        [
            "UPDATE tickets SET title = 'Edited once' WHERE id = 5",
            "DELETE FROM tickets WHERE id = 7",
            "INSERT INTO tickets (id, title, status_id, priority_id) VALUES (900, 'New', 1, 2)",
        ],
        [
            "UPDATE ticket_priorities SET label = 'Very urgent' WHERE id = 1",
            "INSERT INTO tickets (id, title, status_id, priority_id) VALUES (7, 'Back', 2, 3)",
        ],
        [
            "DELETE FROM tickets WHERE id IN (1, 2, 900)",
            "UPDATE tickets SET title = '=x' WHERE id = 3",
        ],
    ]
    base = first
    for step, statements in enumerate(writes):
        with psycopg.connect(db_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)
        response = await _changes(web, base)
        assert response.status == 303, await response.text()
        delta = _id_of(response.headers["Location"])
        assert delta != base
        await _run_worker(db_url, delta)
        changes = await _file(web, delta)
        assert changes[0][:3] == ["Change", "Ticket ID", "Title"]
        kinds = [row[0] for row in changes[1:]]
        assert kinds == sorted(kinds), "deletes come first"
        if step == 0:
            assert [r[:3] for r in changes[1:]] == [
                ["delete", "7", ""],
                # Oldest first: the new ticket is the newest.
                ["upsert", "5", "Edited once"],
                ["upsert", "900", "New"],
            ]
        _apply(state, changes)
        page = await (await web.client.get(f"/staff/exports/{delta}")).text()
        assert f'Changes since export <a href="/staff/exports/{base}">' in page
        assert "up to" in page
        base = delta
    # Nothing changes between the last file of changes and this full export.
    last_full = await _full_export(web, q="")
    await _run_worker(db_url, last_full)
    assert state == _keyed(await _file(web, last_full))

    with psycopg.connect(db_url) as conn:
        since = conn.execute(
            "SELECT since_export_id::text FROM export_overview WHERE export_id = %s", (base,)
        ).fetchone()
        audit = conn.execute(
            "SELECT details FROM audit_log WHERE export_id = %s AND action = 'export.requested'",
            (base,),
        ).fetchone()
    assert since is not None
    assert audit is not None
    assert since[0] == audit[0]["since"] != first


async def test_only_the_requester_of_a_completed_unexpired_export_may_ask(
    web: Web, db_url: str
) -> None:
    await web.login(OWNER)
    queued = await _full_export(web)
    # Not completed yet: 409 with a page that says why.
    refused = await _changes(web, queued)
    assert refused.status == 409
    assert "only be exported since an export that has completed" in await refused.text()
    await _run_worker(db_url, queued)
    # Twice within seconds: the same export (double submit).
    first = await _changes(web, queued)
    again = await _changes(web, queued)
    assert first.status == again.status == 303
    assert first.headers["Location"] == again.headers["Location"]

    # Anyone else, an admin with the permission included: as if it did not exist.
    for email in (ADMIN, OTHER, NO_PERMISSION):
        await web.logout_cookies()
        await web.login(email)
        token = await web.csrf("/staff/exports")
        response = await web.client.post(
            f"/staff/exports/{queued}/changes", data={"csrf_token": token}, allow_redirects=False
        )
        assert response.status == 404, email
    await web.logout_cookies()
    await web.login(ADMIN)
    page = await (await web.client.get(f"/staff/exports/{queued}")).text()
    assert "Export changes since this one" not in page

    await web.logout_cookies()
    await web.login(OWNER)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET requested_at = requested_at - interval '73 hours', "
            "expires_at = now() - interval '1 second' WHERE id = %s",
            (queued,),
        )
    expired = await _changes(web, queued)
    assert expired.status == 409
    assert "has expired" in await expired.text()
    page = await (await web.client.get(f"/staff/exports/{queued}")).text()
    assert "Export changes since this one" not in page
    with psycopg.connect(db_url) as conn:
        denied = conn.execute(
            "SELECT count(*) FROM audit_log WHERE export_id = %s AND action = 'export.denied' "
            "AND details->>'action' = 'changes'",
            (queued,),
        ).fetchone()
    assert denied is not None
    assert denied[0] == 5  # unfinished, three strangers, expired


@pytest.mark.parametrize(
    "path",
    [
        "/staff/exports/00000000-0000-0000-0000-000000000000/changes",
        "/staff/exports/------------------------------------/changes",
        "/staff/exports/ffffffff-ffff-ffff-ffff-ffffffffffff/changes",
        "/staff/exports/not-a-uuid/changes",
        "/staff/exports/%00%00/changes",
    ],
)
async def test_hostile_changes_requests_are_4xx(web: Web, path: str) -> None:
    await web.login(OWNER)
    token = await web.csrf("/staff/exports")
    response = await web.client.post(
        URL(path, encoded=True), data={"csrf_token": token}, allow_redirects=False
    )
    assert 400 <= response.status < 500, response.status
    no_token = await web.client.post(URL(path, encoded=True), allow_redirects=False)
    assert 400 <= no_token.status < 500
    wrong = await web.client.post(
        URL(path, encoded=True), data={"csrf_token": "x" * 5000}, allow_redirects=False
    )
    assert 400 <= wrong.status < 500
    get = await web.client.get(URL(path, encoded=True), allow_redirects=False)
    assert 400 <= get.status < 500


async def test_changes_need_csrf_and_a_session(web: Web, db_url: str) -> None:
    await web.login(OWNER)
    export_id = await _full_export(web)
    await _run_worker(db_url, export_id)
    forged = await web.client.post(
        f"/staff/exports/{export_id}/changes", data={"csrf_token": "forged"}, allow_redirects=False
    )
    assert forged.status == 403
    await web.logout_cookies()
    anonymous = await web.client.post(
        f"/staff/exports/{export_id}/changes", data={"csrf_token": "x"}, allow_redirects=False
    )
    assert anonymous.status == 401
    with psycopg.connect(db_url) as conn:
        count = conn.execute("SELECT count(*) FROM export_jobs WHERE request ? 'since'").fetchone()
    assert count == (0,)


def _history_rows(conn: psycopg.Connection[Any]) -> int:
    return sum(
        int(conn.execute(f"SELECT count(*) FROM {t}_history").fetchone()[0])  # type: ignore[index]
        for t in db.VERSIONED_TABLES
    )


async def test_pruning_keeps_a_possible_base_until_it_expires(web: Web, db_url: str) -> None:
    """History pruning keeps the row versions a completed, unexpired export's click sees,
    however many rounds of updates and pruning follow, so the changes since it stay exact;
    once it expires they go, and the metrics show both."""
    await web.login(OWNER)
    base = await _full_export(web)
    await _run_worker(db_url, base)
    full = _keyed(await _file(web, base))
    async with services_for(db_url) as services:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for round_ in range(5):
                conn.execute(
                    "UPDATE tickets SET title = %s WHERE id BETWEEN 1 AND 10", (f"Round {round_}",)
                )
                conn.execute(
                    "UPDATE users SET last_name = %s WHERE email = %s", (str(round_), OWNER)
                )
                await maintenance.run_maintenance(services)
            # The versions the base's click sees (one per changed row) are still there.
            assert _history_rows(conn) >= 10
        metrics = await (await web.client.get("/metrics")).text()
        assert 'ticketexport_history_kept_clicks{reason="possible_base"} 1.0' in metrics
        assert 'ticketexport_history_rows{table="tickets"}' in metrics
        response = await _changes(web, base)
        assert response.status == 303
        delta = _id_of(response.headers["Location"])
        await _run_worker(db_url, delta)
        changes = await _file(web, delta)
        assert sorted(int(row[1]) for row in changes[1:]) == list(range(1, 11))
        _apply(full, changes)
        assert all(full[str(i)][1] == "Round 4" for i in range(1, 11))

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE export_jobs SET requested_at = requested_at - interval '73 hours', "
                "as_of = as_of - interval '73 hours', "
                "started_at = started_at - interval '73 hours', "
                "finished_at = finished_at - interval '73 hours', "
                "expires_at = now() - interval '1 second' WHERE status = 'completed'"
            )
            await maintenance.run_maintenance(services)
            assert _history_rows(conn) == 0
        metrics = await (await web.client.get("/metrics")).text()
        assert 'ticketexport_history_kept_clicks{reason="possible_base"} 0.0' in metrics
