"""Export routes over HTTP: the access matrix, the flow to a download, events, ops."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from tests.support.databases import create_database, drop_database
from tests.support.services import services_for
from tests.support.web import Web, csrf_in, insert_tickets, make_user, running
from ticketexport.exports.formats import BOM
from ticketexport.exports.worker import ExportRun

EXPORT = 512
ADMIN_EXPORT = "admin.export@example.com"
ADMIN_ONLY = "admin.only@example.com"
STAFF_EXPORT = "staff.export@example.com"
STAFF_ONLY = "staff.only@example.com"
OTHER_EXPORT = "other.export@example.com"


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 120, title='Printer, "jammed"')
    conn.execute("UPDATE tickets SET title = '=cmd|calc' WHERE id = 3")
    return {
        ADMIN_EXPORT: make_user(conn, ADMIN_EXPORT, permissions=EXPORT, admin=True),
        ADMIN_ONLY: make_user(conn, ADMIN_ONLY, admin=True),
        STAFF_EXPORT: make_user(conn, STAFF_EXPORT, permissions=EXPORT),
        STAFF_ONLY: make_user(conn, STAFF_ONLY),
        OTHER_EXPORT: make_user(conn, OTHER_EXPORT, permissions=EXPORT),
    }


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int]) -> AsyncIterator[Web]:
    async with running(db_url, heartbeat_seconds=0.2) as client:
        yield client


async def _request_export(web: Web, **fields: str) -> str:
    token = await web.csrf("/staff/tickets")
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": token, "view": "all", **fields},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    match = re.fullmatch(r"/staff/exports/([0-9a-f-]{36})", location)
    assert match, location
    return match.group(1)


async def _run_worker(db_url: str, export_id: str) -> None:
    async with services_for(db_url, env={"TICKETEXPORT_HEARTBEAT_SECONDS": "0.2"}) as services:
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT procrastinate_job_id FROM export_jobs WHERE id = %s", (export_id,)
            )
            row = await cur.fetchone()
        assert row is not None
        await ExportRun(services, export_id, row[0]).run()


def _events(text: str) -> list[dict[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if "event: export" in lines:
            data = next(line[len("data: ") :] for line in lines if line.startswith("data: "))
            ident = next(line[len("id: ") :] for line in lines if line.startswith("id: "))
            payload = json.loads(data)
            payload["_event_id"] = ident
            found.append(payload)
    return found


async def test_full_flow_to_download(web: Web, db_url: str) -> None:
    assert (await web.login(ADMIN_EXPORT)).status == 303
    export_id = await _request_export(web, sort="oldest")
    page = await web.client.get(f"/staff/exports/{export_id}")
    body = await page.text()
    assert page.status == 200
    assert f'data-events-url="/staff/exports/{export_id}/events"' in body
    assert 'data-auto-download="true"' in body
    assert "queued" in body

    await _run_worker(db_url, export_id)

    events = await web.client.get(f"/staff/exports/{export_id}/events")
    assert events.headers["Content-Type"].startswith("text/event-stream")
    received = _events(await events.text())
    assert len(received) == 1  # a terminal state is sent once and the stream ends
    state = received[0]
    assert set(state) - {"_event_id"} == {
        "id",
        "status",
        "stage",
        "attempt",
        "rows",
        "total",
        "percent",
        "error",
        "download_url",
    }
    assert state["status"] == "completed"
    assert (state["rows"], state["total"], state["percent"]) == (120, 120, 100)
    assert state["download_url"] == f"/staff/exports/{export_id}/download"
    again = await web.client.get(
        f"/staff/exports/{export_id}/events", headers={"Last-Event-ID": state["_event_id"]}
    )
    assert _events(await again.text()) == []

    first = await web.client.get(state["download_url"] + "?auto=1")
    assert first.status == 200
    assert first.headers["Content-Type"] == "text/csv; charset=utf-8"
    disposition = first.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="tickets-all-tickets-')
    assert "filename*=UTF-8''tickets-all-tickets-" in disposition
    data = await first.read()
    assert data.startswith(BOM)
    rows = list(csv.reader(io.StringIO(data[3:].decode(), newline="")))
    assert rows[0][:2] == ["Ticket ID", "Title"]
    # oldest first: the seeded ticket g was created g minutes ago
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(120, 0, -1)]
    assert rows[1:][120 - 3][:2] == ["3", "'=cmd|calc"]
    # the automatic download happens once; a second tab gets nothing
    second = await web.client.get(state["download_url"] + "?auto=1")
    assert second.status == 204
    # a plain download (the button) still works, with ranges
    ranged = await web.client.get(state["download_url"], headers={"Range": "bytes=0-2"})
    assert ranged.status == 206
    assert await ranged.read() == BOM
    assert ranged.headers["Content-Range"] == f"bytes 0-2/{len(data)}"
    tail = await web.client.get(state["download_url"], headers={"Range": "bytes=-5"})
    assert await tail.read() == data[-5:]
    bad = await web.client.get(state["download_url"], headers={"Range": f"bytes={len(data)}-"})
    assert bad.status == 416

    with psycopg.connect(db_url) as conn:
        audits = conn.execute(
            "SELECT action, details FROM audit_log WHERE export_id = %s ORDER BY id",
            (export_id,),
        ).fetchall()
    actions = [a for a, _ in audits]
    assert actions[:2] == ["export.requested", "export.completed"]
    assert actions.count("export.downloaded") == 3  # auto, range, suffix range
    completed = dict(audits)["export.completed"]
    assert completed["rows"] == 120
    assert completed["bytes"] == len(data)


async def test_export_list_and_status_for_each_role(web: Web, db_url: str) -> None:
    await web.login(STAFF_EXPORT)
    export_id = await _request_export(web)
    mine = await web.client.get("/staff/exports")
    assert export_id in await mine.text()
    assert (await web.client.get("/staff/exports?all=1")).status == 403
    await _run_worker(db_url, export_id)
    status = await web.client.get(f"/staff/exports/{export_id}")
    text = await status.text()
    assert (
        "Downloading requires an administrator with the Import / Export Tickets permission" in text
    )
    assert 'data-auto-download="false"' in text
    denied = await web.client.get(f"/staff/exports/{export_id}/download")
    assert denied.status == 403

    # another staff member does not learn the export exists
    await web.logout_cookies()
    await web.login(OTHER_EXPORT)
    for path in ("", "/events", "/download"):
        assert (await web.client.get(f"/staff/exports/{export_id}{path}")).status == 404
    token = await web.csrf("/staff/exports")
    for action in ("retry", "cancel"):
        response = await web.client.post(
            f"/staff/exports/{export_id}/{action}", data={"csrf_token": token}
        )
        assert response.status == 404
    assert export_id not in await (await web.client.get("/staff/exports")).text()

    # an admin with the permission sees and downloads it, and lists everyone's
    await web.logout_cookies()
    await web.login(ADMIN_EXPORT)
    everyone = await web.client.get("/staff/exports?all=1")
    assert export_id in await everyone.text()
    download = await web.client.get(f"/staff/exports/{export_id}/download")
    assert download.status == 200
    # an admin without the permission is neither its requester nor allowed to see it
    await web.logout_cookies()
    await web.login(ADMIN_ONLY)
    assert (await web.client.get(f"/staff/exports/{export_id}/download")).status == 404


async def test_request_denied_without_permission(web: Web, db_url: str) -> None:
    for email in (ADMIN_ONLY, STAFF_ONLY):
        await web.logout_cookies()
        await web.login(email)
        page = await web.client.get("/staff/tickets")
        assert 'id="export-button"' not in await page.text()
        token = csrf_in(await page.text())
        response = await web.client.post(
            "/staff/tickets/export",
            data={"csrf_token": token, "view": "all"},
            allow_redirects=False,
        )
        assert response.status == 403
        assert "Import / Export Tickets" in await response.text()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'export.denied'"
        ).fetchone() == (2,)


async def test_bad_export_requests_are_4xx(web: Web) -> None:
    await web.login(ADMIN_EXPORT)
    token = await web.csrf("/staff/tickets")
    cases = [
        ({"view": "nope"}, 400),
        ({"view": "99999"}, 404),
        ({"view": "all", "sort": "sideways"}, 400),
        ({"view": "all", "status": "no_such_status"}, 400),
        ({"view": "all", "q": "x" * 201}, 400),
        ({"view": "all", "bogus": "1"}, 400),
        ({"view": "all", "q": "a\x00b"}, 400),
    ]
    for fields, expected in cases:
        response = await web.client.post(
            "/staff/tickets/export", data={"csrf_token": token, **fields}, allow_redirects=False
        )
        assert response.status == expected, (fields, await response.text())
    missing_csrf = await web.client.post("/staff/tickets/export", data={"view": "all"})
    assert missing_csrf.status == 403
    assert (await web.client.get("/staff/exports/not-a-uuid")).status == 404
    assert (await web.client.get("/staff/exports?before=garbage")).status == 400


async def test_logged_out_answers(web: Web, people: dict[str, int]) -> None:
    await web.login(ADMIN_EXPORT)
    export_id = await _request_export(web)
    await web.logout_cookies()
    base = f"/staff/exports/{export_id}"
    for path in ("/staff/exports", base):
        response = await web.client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")
    for path in (f"{base}/download", f"{base}/events"):
        assert (await web.client.get(path, allow_redirects=False)).status == 401
    for path in ("/staff/tickets/export", f"{base}/retry", f"{base}/cancel"):
        assert (await web.client.post(path, allow_redirects=False)).status == 401


async def test_cancel_retry_and_expiry(web: Web, db_url: str) -> None:
    await web.login(ADMIN_EXPORT)
    export_id = await _request_export(web, q="Printer")
    token = await web.csrf(f"/staff/exports/{export_id}")
    cancelled = await web.client.post(
        f"/staff/exports/{export_id}/cancel", data={"csrf_token": token}, allow_redirects=False
    )
    assert cancelled.status == 303
    again = await web.client.post(
        f"/staff/exports/{export_id}/cancel", data={"csrf_token": token}, allow_redirects=False
    )
    assert again.status == 409
    retried = await web.client.post(
        f"/staff/exports/{export_id}/retry", data={"csrf_token": token}, allow_redirects=False
    )
    assert retried.status == 303
    new_id = retried.headers["Location"].rsplit("/", 1)[1]
    assert new_id != export_id
    await _run_worker(db_url, new_id)
    # retention over: 410 at once, before any cleanup
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET requested_at = requested_at - interval '73 hours', "
            "as_of = as_of - interval '73 hours', expires_at = now() - interval '1 second' "
            "WHERE id = %s",
            (new_id,),
        )
    assert (await web.client.get(f"/staff/exports/{new_id}/download")).status == 410
    page = await web.client.get(f"/staff/exports/{new_id}")
    assert "has expired" in await page.text()


async def test_healthz_and_metrics(web: Web, db_url: str) -> None:
    health = await web.client.get("/healthz")
    assert health.status == 503  # no worker has been seen
    body = await health.json()
    assert (body["status"], body["worker"]) == ("unhealthy", "missing")
    assert body["details"]["worker"] == {"live": 0, "seen_within_seconds": 60.0}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    health = await web.client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["status"] == "ok"

    def metric(text: str, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    before = await (await web.client.get("/metrics")).text()
    assert metric(before, 'ticketexport_exports{status="completed"}') == 0
    assert metric(before, "ticketexport_live_workers") == 1
    await web.login(ADMIN_EXPORT)
    export_id = await _request_export(web)
    queued = await (await web.client.get("/metrics")).text()
    assert metric(queued, 'ticketexport_queue_depth{queue="exports"}') == 1
    assert metric(queued, 'ticketexport_exports{status="queued"}') == 1
    await _run_worker(db_url, export_id)
    after = await (await web.client.get("/metrics")).text()
    assert metric(after, 'ticketexport_exports{status="completed"}') == 1
    assert metric(after, "ticketexport_export_rows_total") == 120
    assert metric(after, "ticketexport_export_bytes_total") > 0
    assert metric(after, "ticketexport_export_duration_seconds_count") == 1


async def test_healthz_reports_a_pending_migration(db_url: str, people: dict[str, int]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = '0001'")
    async with running(db_url) as web:
        health = await web.client.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["migrations"] == "pending"
        assert body["details"]["migrations"] == {"pending": ["0001_domain.sql"]}


def _seen_worker(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")


async def test_healthz_tells_strangers_a_word_per_check_and_operators_the_details(
    db_url: str, people: dict[str, int]
) -> None:
    token = "health-and-metrics-token"
    _seen_worker(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = '0009'")
    async with running(db_url, metrics_token=token) as web:
        stranger = await web.client.get("/healthz")
        assert stranger.status == 503
        assert await stranger.json() == {
            "status": "unhealthy",
            "database": "ok",
            "migrations": "pending",
            "worker": "unknown",
            "storage": "ok",
        }
        for wrong in ("Bearer nope-nope-nope-nope", f"Basic {token}", token):
            answer = await web.client.get("/healthz", headers={"Authorization": wrong})
            assert "details" not in await answer.json()
        operator = await web.client.get("/healthz", headers={"Authorization": f"Bearer {token}"})
        assert operator.status == 503
        body = await operator.json()
        assert body["details"] == {"migrations": {"pending": ["0009_retention.sql"]}}
        assert body["migrations"] == "pending"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations")
    # Without a token set, /healthz shows the details to everyone, as /metrics is open.
    async with running(db_url) as web:
        body = await (await web.client.get("/healthz")).json()
        assert body["migrations"] == "pending"
        assert len(body["details"]["migrations"]["pending"]) > 1


async def test_healthz_keeps_the_storage_state_for_a_few_seconds(
    db_url: str, people: dict[str, int]
) -> None:
    _seen_worker(db_url)
    async with running(db_url) as web:
        storage = web.services.storage
        probes = []
        check = storage.check

        async def counted() -> None:
            probes.append(1)
            await check()

        storage.check = counted  # type: ignore[method-assign]
        answers = await asyncio.gather(*(web.client.get("/healthz") for _ in range(20)))
        answers += [await web.client.get("/healthz") for _ in range(20)]
        assert {a.status for a in answers} == {200}
        assert {(await a.json())["storage"] for a in answers} == {"ok"}
        # Forty requests within the cache's seconds: one call to the store.
        assert len(probes) == 1
    # The database is asked for every request: a database gone is 503 at once.
    async with running(db_url, health_cache_seconds=0) as web:
        storage = web.services.storage
        probes.clear()
        check = storage.check
        storage.check = counted  # type: ignore[method-assign]
        for _ in range(3):
            assert (await web.client.get("/healthz")).status == 200
        assert len(probes) == 3


async def test_permission_lost_between_request_and_download(web: Web, db_url: str) -> None:
    await web.login(ADMIN_EXPORT)
    export_id = await _request_export(web)
    await _run_worker(db_url, export_id)
    assert (await web.client.get(f"/staff/exports/{export_id}/download")).status == 200
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET is_admin = false WHERE email = %s", (ADMIN_EXPORT,))
    # checked at download time: the same session is refused on its next request
    refused = await web.client.get(f"/staff/exports/{export_id}/download")
    assert refused.status == 403
    assert "Downloading requires an administrator" in await refused.text()
    with psycopg.connect(db_url) as conn:
        denied = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'export.download_denied' "
            "AND export_id = %s",
            (export_id,),
        ).fetchone()
    assert denied == (1,)


async def test_healthz_answers_503_when_the_database_is_down(
    server_url: str, template_db: str
) -> None:
    name = f"te_down_{template_db[-8:]}"
    url = create_database(server_url, name, template_db)
    try:
        async with running(url) as web:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
            assert (await web.client.get("/healthz")).status == 200
            drop_database(server_url, name)  # terminates the pool's connections too
            health = await web.client.get("/healthz")
            assert health.status == 503
            assert (await health.json())["database"] == "unavailable"
            metrics = await web.client.get("/metrics")
            assert metrics.status == 503
    finally:
        drop_database(server_url, name)


async def test_status_page_and_my_exports_show_readable_times(
    db_url: str, people: dict[str, int]
) -> None:
    async with running(db_url, timezone="Europe/Berlin", heartbeat_seconds=0.2) as web:
        await web.login(ADMIN_EXPORT)
        export_id = await _request_export(web)
        await _run_worker(db_url, export_id)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            # Either side of the change to summer time, and an expiry far ahead.
            await conn.execute(
                "UPDATE export_jobs SET requested_at = '2026-03-29 00:30:00+00',"
                " as_of = '2026-03-29 00:30:05+00', started_at = '2026-03-29 00:59:00+00',"
                " finished_at = '2026-03-29 01:02:00+00', expires_at = '2099-07-01 10:00:00+00'"
                " WHERE id = %s",
                (export_id,),
            )
        page = await (await web.client.get(f"/staff/exports/{export_id}")).text()
        for iso, readable in (
            ("2026-03-29T01:30:00+01:00", "29 Mar 2026, 01:30 CET"),
            ("2026-03-29T01:30:05+01:00", "29 Mar 2026, 01:30 CET"),
            ("2026-03-29T03:02:00+02:00", "29 Mar 2026, 03:02 CEST"),
            ("2099-07-01T12:00:00+02:00", "1 Jul 2099, 12:00 CEST"),
        ):
            assert f'<time datetime="{iso}">{readable}</time>' in page, iso
        assert (
            '<dd data-field="started"><time datetime="2026-03-29T01:59:00+01:00">'
            "29 Mar 2026, 01:59 CET</time></dd>"
        ) in page
        assert '<dd data-field="finished"><time datetime="2026-03-29T03:02:00+02:00">' in page
        # The page's script names the zone as the server does, by offset.
        names = re.search(r'data-zone-names="([^"]*)"', page)
        assert names
        assert json.loads(html.unescape(names.group(1))) == {"60": "CET", "120": "CEST"}

        listed = await (await web.client.get("/staff/exports")).text()
        row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{export_id}(?:(?!</tr>).)*</tr>", listed, re.S)
        assert row
        assert (
            '<td><time datetime="2026-03-29T01:30:00+01:00">29 Mar 2026, 01:30 CET</time></td>'
            in (row.group(0))
        )
        assert '<time datetime="2099-07-01T12:00:00+02:00">1 Jul 2099, 12:00 CEST</time>' in (
            row.group(0)
        )

        # A time within the past day also says how long ago it was.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE export_jobs SET requested_at = now() - interval '2 hours 10 minutes'"
                " WHERE id = %s",
                (export_id,),
            )
        listed = await (await web.client.get("/staff/exports")).text()
        assert re.search(r'</time> <span class="ago">\(2 h ago\)</span></td>', listed), listed
