"""Every audit action the code writes, with the detail fields each one must carry."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.services import services_for
from tests.support.web import PASSWORD, Web, csrf_in, insert_tickets, make_user, proxies, running
from ticketexport.domain.exports import MAX_ATTEMPTS
from ticketexport.exports import maintenance
from ticketexport.exports.formats import BOM
from ticketexport.exports.worker import ExportRun
from ticketexport.services import Services

EXPORT = 512
ADMIN = "audit.admin@example.com"
STAFF_EXPORT = "audit.staff.export@example.com"
STAFF = "audit.staff@example.com"
OTHER = "audit.other@example.com"
PROXY = "127.0.0.1"  # the test client connects from here
CLIENT = "198.51.100.7"
TICKETS = 75

Conn = psycopg.Connection[Any]


@pytest.fixture
def people(conn: Conn) -> dict[str, int]:
    insert_tickets(conn, TICKETS, title="Audited")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=EXPORT, admin=True),
        STAFF_EXPORT: make_user(conn, STAFF_EXPORT, permissions=EXPORT),
        STAFF: make_user(conn, STAFF),
        OTHER: make_user(conn, OTHER, permissions=EXPORT, admin=True),
    }


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "exports"


def _app(db_url: str, storage_root: Path, **overrides: Any) -> Any:
    return running(db_url, storage_url=storage_root.as_uri(), heartbeat_seconds=0.2, **overrides)


@pytest.fixture
async def web(db_url: str, people: dict[str, int], storage_root: Path) -> AsyncIterator[Web]:
    """The app behind a trusted proxy at the test client's own address."""
    async with _app(db_url, storage_root, trusted_proxies=proxies(PROXY)) as client:
        yield client


@pytest.fixture
async def deps(db_url: str, storage_root: Path, tmp_path: Path) -> AsyncIterator[Services]:
    """What a worker process builds, in-process, sharing the app's storage."""
    env = {
        "TICKETEXPORT_STORAGE_URL": storage_root.as_uri(),
        "TICKETEXPORT_HEARTBEAT_SECONDS": "0.2",
        "TICKETEXPORT_STALL_SECONDS": "3",
    }
    async with services_for(db_url, tmp_path, env=env, claim=True) as services:
        yield services


def audits(conn: Conn, action: str, export_id: str | None = None) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT actor_id, actor_email, host(client_ip) AS ip, export_id::text AS export_id, "
        "details, occurred_at FROM audit_log WHERE action = %s "
        "AND (%s::uuid IS NULL OR export_id = %s::uuid) ORDER BY id",
        (action, export_id, export_id),
    )
    return cur.fetchall()


def only(conn: Conn, action: str, export_id: str | None = None) -> dict[str, Any]:
    rows = audits(conn, action, export_id)
    assert len(rows) == 1, (action, rows)
    return rows[0]


def export_row(conn: Conn, export_id: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT e.*, m.object_key, m.size_bytes, m.sha256 FROM export_jobs e "
        "LEFT JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
        (export_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return row


def forwarded(address: str = CLIENT) -> dict[str, str]:
    # A spoofed first entry, then the address the proxy itself saw (which counts).
    return {"X-Forwarded-For": f"203.0.113.66, {address}"}


async def login(web: Web, email: str, address: str = CLIENT) -> None:
    page = await web.client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    response = await web.client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)},
        headers=forwarded(address),
        allow_redirects=False,
    )
    assert response.status == 303


async def request_export(web: Web, address: str = CLIENT, **fields: str) -> str:
    token = await web.csrf("/staff/exports")
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": token, "view": "all", **fields},
        headers=forwarded(address),
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return response.headers["Location"].rsplit("/", 1)[1]


async def post(web: Web, path: str, address: str = CLIENT) -> Any:
    token = await web.csrf("/staff/exports")
    return await web.client.post(
        path, data={"csrf_token": token}, headers=forwarded(address), allow_redirects=False
    )


async def run_export(deps: Services, conn: Conn, export_id: str) -> dict[str, Any]:
    await ExportRun(deps, export_id, export_row(conn, export_id)["procrastinate_job_id"]).run()
    return export_row(conn, export_id)


# --- the happy path: requested, completed, downloaded, login, logout ------------------------


async def test_request_completion_download_and_session_are_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    admin_id = people[ADMIN]
    await login(web, ADMIN)
    signed_in = only(conn, "login.succeeded")
    assert (signed_in["actor_id"], signed_in["actor_email"], signed_in["ip"]) == (
        admin_id,
        ADMIN,
        CLIENT,
    )

    export_id = await request_export(web, sort="oldest", q="Audited", type="open")
    requested = only(conn, "export.requested", export_id)
    job_id = export_row(conn, export_id)["procrastinate_job_id"]
    assert (requested["actor_id"], requested["actor_email"], requested["ip"]) == (
        admin_id,
        ADMIN,
        CLIENT,
    )
    assert requested["details"] == {
        "view": "all",
        "view_name": "All tickets",
        "q": "Audited",
        "sort": "oldest",
        "filters": {"type": "open"},
        "format": "csv",
        "procrastinate_job_id": job_id,
    }

    export = await run_export(deps, conn, export_id)
    assert export["status"] == "completed"
    completed = only(conn, "export.completed", export_id)
    # The worker acts in the requester's name.
    assert (completed["actor_id"], completed["actor_email"]) == (admin_id, ADMIN)
    assert completed["ip"] is None  # the worker acts, not a browser
    details = completed["details"]
    assert set(details) == {"rows", "bytes", "sha256", "attempt", "duration_s", "job_id", "format"}
    assert details["rows"] == export["rows_done"] == export["rows_total"] > 0
    assert details["bytes"] == export["size_bytes"]
    assert details["sha256"] == export["sha256"]
    assert (details["attempt"], details["job_id"]) == (1, job_id)
    elapsed = (export["finished_at"] - export["started_at"]).total_seconds()
    assert 0 <= details["duration_s"] <= elapsed + 1

    whole = await web.client.get(f"/staff/exports/{export_id}/download?auto=1", headers=forwarded())
    data = await whole.read()
    assert whole.status == 200
    assert hashlib.sha256(data).hexdigest() == export["sha256"]
    assert data.startswith(BOM)
    rows = list(csv.reader(io.StringIO(data[len(BOM) :].decode(), newline="")))
    assert len(rows) - 1 == details["rows"]
    part = await web.client.get(
        f"/staff/exports/{export_id}/download",
        headers={"Range": "bytes=3-12", **forwarded("192.0.2.44")},
    )
    assert part.status == 206
    downloads = audits(conn, "export.downloaded", export_id)
    assert [(d["actor_id"], d["actor_email"], d["ip"]) for d in downloads] == [
        (admin_id, ADMIN, CLIENT),
        (admin_id, ADMIN, "192.0.2.44"),
    ]
    assert downloads[0]["details"] == {
        "bytes": len(data),
        "size": len(data),
        "range": None,
        "auto": True,
    }
    assert downloads[1]["details"] == {
        "bytes": 10,
        "size": len(data),
        "range": "3-12",
        "auto": False,
    }

    response = await post(web, "/logout", "192.0.2.99")
    assert response.status == 303
    logout = only(conn, "logout")
    assert (logout["actor_id"], logout["actor_email"], logout["ip"]) == (
        admin_id,
        ADMIN,
        "192.0.2.99",
    )


async def test_a_download_that_does_not_deliver_the_file_is_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int], storage_root: Path
) -> None:
    await login(web, ADMIN)
    export_id = await request_export(web)
    export = await run_export(deps, conn, export_id)
    (storage_root / export["object_key"]).unlink()
    response = await web.client.get(
        f"/staff/exports/{export_id}/download", headers=forwarded("192.0.2.45")
    )
    assert response.status == 410
    failed = only(conn, "export.download_failed", export_id)
    assert (failed["actor_id"], failed["actor_email"], failed["ip"]) == (
        people[ADMIN],
        ADMIN,
        "192.0.2.45",
    )
    assert failed["details"] == {"reason": "missing", "range": None}
    assert audits(conn, "export.downloaded", export_id) == []


async def test_forwarded_for_counts_only_from_the_trusted_proxy(
    db_url: str, people: dict[str, int], storage_root: Path, conn: Conn
) -> None:
    # No trusted proxy: the header is the client's own claim and is ignored.
    async with _app(db_url, storage_root) as web:
        await login(web, STAFF_EXPORT, "198.51.100.200")
        await request_export(web, "198.51.100.201")
    # A trusted proxy elsewhere: a direct connection from 127.0.0.1 is not it.
    async with _app(db_url, storage_root, trusted_proxies=proxies("10.9.8.7")) as web:
        await login(web, STAFF_EXPORT, "198.51.100.202")
    # The trusted proxy given as a network that holds the client's address.
    async with _app(db_url, storage_root, trusted_proxies=proxies("127.0.0.0/8")) as web:
        await login(web, STAFF_EXPORT, "198.51.100.203")
    ips = [row["ip"] for row in audits(conn, "login.succeeded")]
    assert ips == ["127.0.0.1", "127.0.0.1", "198.51.100.203"]
    assert only(conn, "export.requested")["ip"] == "127.0.0.1"


async def test_failed_logins_are_audited_with_a_reason(
    web: Web, conn: Conn, people: dict[str, int]
) -> None:
    conn.execute("UPDATE users SET is_active = false WHERE id = %s", (people[OTHER],))
    cases = [
        (STAFF, "wrong password", "bad_password", people[STAFF]),
        ("nobody@example.com", PASSWORD, "unknown_email", None),
        (OTHER, PASSWORD, "inactive", people[OTHER]),
        ("", PASSWORD, "malformed", None),
    ]
    for email, password, _, _ in cases:
        page = await web.client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token is not None
        response = await web.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token.group(1)},
            headers=forwarded(),
            allow_redirects=False,
        )
        assert response.status == 400
    failed = audits(conn, "login.failed")
    assert [(f["actor_id"], f["details"], f["ip"]) for f in failed] == [
        (user_id, {"reason": reason}, CLIENT) for _, _, reason, user_id in cases
    ]
    assert [f["actor_email"] for f in failed] == [STAFF, "nobody@example.com", OTHER, None]
    assert audits(conn, "login.succeeded") == []


# --- denials -------------------------------------------------------------------------------


async def test_denials_are_audited_and_create_nothing(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    await login(web, STAFF)
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": await web.csrf("/staff/exports"), "view": "open"},
        headers=forwarded("192.0.2.1"),
        allow_redirects=False,
    )
    assert response.status == 403
    denied = only(conn, "export.denied")
    assert (denied["actor_id"], denied["actor_email"], denied["ip"], denied["export_id"]) == (
        people[STAFF],
        STAFF,
        "192.0.2.1",
        None,
    )
    assert denied["details"] == {"action": "request", "reason": "missing_permission"}

    # A saved view the requester cannot see: denied as if it did not exist.
    hidden = conn.execute(
        "INSERT INTO saved_views (name, owner_id, created_by_id, columns, sort) "
        'VALUES (\'Private\', %s, %s, ARRAY[\'id\'], \'[{"column": "id", "direction": '
        '"asc"}]\') RETURNING id',
        (people[OTHER], people[OTHER]),
    ).fetchone()
    assert hidden is not None
    await web.logout_cookies()
    await login(web, STAFF_EXPORT)
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": await web.csrf("/staff/exports"), "view": str(hidden[0])},
        headers=forwarded("192.0.2.2"),
        allow_redirects=False,
    )
    assert response.status == 404
    denials = audits(conn, "export.denied")
    assert len(denials) == 2
    assert (denials[1]["actor_id"], denials[1]["ip"], denials[1]["details"]) == (
        people[STAFF_EXPORT],
        "192.0.2.2",
        {"action": "request", "reason": "view_not_found"},
    )
    assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (0,)

    # Staff with the permission export, but may not download: denied and audited.
    export_id = await request_export(web, "192.0.2.3")
    assert (await run_export(deps, conn, export_id))["status"] == "completed"
    response = await web.client.get(
        f"/staff/exports/{export_id}/download", headers=forwarded("192.0.2.4")
    )
    assert response.status == 403
    refused = only(conn, "export.download_denied", export_id)
    assert (refused["actor_id"], refused["actor_email"], refused["ip"]) == (
        people[STAFF_EXPORT],
        STAFF_EXPORT,
        "192.0.2.4",
    )
    assert refused["details"] == {"reason": "not_admin_with_permission"}
    assert audits(conn, "export.downloaded") == []

    # The requester lost the permission after a cancel: the retry is denied and audited.
    second = await request_export(web, "192.0.2.5", sort="priority")
    assert (await post(web, f"/staff/exports/{second}/cancel")).status == 303
    conn.execute("DELETE FROM user_roles WHERE user_id = %s", (people[STAFF_EXPORT],))
    response = await post(web, f"/staff/exports/{second}/retry", "192.0.2.6")
    assert response.status == 403
    retry_denied = only(conn, "export.denied", second)
    assert (retry_denied["actor_id"], retry_denied["ip"], retry_denied["details"]) == (
        people[STAFF_EXPORT],
        "192.0.2.6",
        {"action": "retry", "reason": "missing_permission"},
    )
    assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (2,)


# --- cancel, retry, worker failure ------------------------------------------------------------


async def test_head_denials_are_audited_as_get_denials(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    """HEAD answers what GET would and uses nothing up, but a refusal is a refusal: it is
    audited for HEAD as for GET (a script probing for files shows in the log)."""
    await login(web, STAFF_EXPORT)
    own = await request_export(web)
    assert (await run_export(deps, conn, own))["status"] == "completed"
    await web.logout_cookies()
    await login(web, OTHER)
    others = await request_export(web)
    await web.logout_cookies()
    await login(web, STAFF_EXPORT)
    # Not an administrator: may not download even their own file.
    refused = await web.client.head(
        f"/staff/exports/{own}/download", headers=forwarded("192.0.2.31")
    )
    assert refused.status == 403
    denied = only(conn, "export.download_denied", own)
    assert (denied["actor_id"], denied["ip"], denied["details"]) == (
        people[STAFF_EXPORT],
        "192.0.2.31",
        {"reason": "not_admin_with_permission"},
    )
    # Someone else's export: not found, and audited as such.
    hidden = await web.client.head(
        f"/staff/exports/{others}/download", headers=forwarded("192.0.2.32")
    )
    assert hidden.status == 404
    unseen = only(conn, "export.download_denied", others)
    assert (unseen["ip"], unseen["details"]) == ("192.0.2.32", {"reason": "not_found"})
    assert audits(conn, "export.downloaded") == []


async def test_cancel_and_retry_are_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    await login(web, STAFF_EXPORT)
    export_id = await request_export(web, sort="status")
    response = await post(web, f"/staff/exports/{export_id}/cancel", "192.0.2.10")
    assert response.status == 303
    cancelled = only(conn, "export.cancelled", export_id)
    assert (cancelled["actor_id"], cancelled["actor_email"], cancelled["ip"]) == (
        people[STAFF_EXPORT],
        STAFF_EXPORT,
        "192.0.2.10",
    )
    assert cancelled["details"] == {"previous_status": "queued", "rows_done": 0, "attempt": 1}

    # An admin with the permission retries someone else's cancelled export.
    await web.logout_cookies()
    await login(web, ADMIN)
    response = await post(web, f"/staff/exports/{export_id}/retry", "192.0.2.11")
    assert response.status == 303
    new_id = response.headers["Location"].rsplit("/", 1)[1]
    assert new_id != export_id
    retried = only(conn, "export.retried", new_id)
    new_job = export_row(conn, new_id)["procrastinate_job_id"]
    assert (retried["actor_id"], retried["actor_email"], retried["ip"]) == (
        people[ADMIN],
        ADMIN,
        "192.0.2.11",
    )
    assert retried["details"] == {
        "view": "all",
        "view_name": "All tickets",
        "q": "",
        "sort": "status",
        "filters": {},
        "format": "csv",
        "procrastinate_job_id": new_job,
        "retry_of": export_id,
    }
    # A retry is its own action, not a second "requested".
    assert audits(conn, "export.requested", new_id) == []
    # A running export cancelled mid-way reports its progress and status.
    conn.execute(
        "UPDATE export_jobs SET status = 'running', rows_total = %s, rows_done = 40, "
        "heartbeat_at = now(), progress_at = now() WHERE id = %s",
        (TICKETS, new_id),
    )
    assert (await post(web, f"/staff/exports/{new_id}/cancel")).status == 303
    assert only(conn, "export.cancelled", new_id)["details"] == {
        "previous_status": "running",
        "rows_done": 40,
        "attempt": 1,
    }
    assert (await post(web, f"/staff/exports/{new_id}/cancel")).status == 409
    assert len(audits(conn, "export.cancelled")) == 2


async def test_worker_failure_is_audited_with_its_code(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    await login(web, STAFF_EXPORT)
    export_id = await request_export(web)
    conn.execute("DELETE FROM user_roles WHERE user_id = %s", (people[STAFF_EXPORT],))
    export = await run_export(deps, conn, export_id)
    assert (export["status"], export["error_code"]) == ("failed", "permission_revoked")
    failed = only(conn, "export.failed", export_id)
    assert (failed["actor_id"], failed["actor_email"]) == (people[STAFF_EXPORT], STAFF_EXPORT)
    details = failed["details"]
    assert set(details) == {"error_code", "rows", "attempt", "duration_s", "job_id", "format"}
    assert details["error_code"] == "permission_revoked"
    assert (details["rows"], details["attempt"]) == (0, 1)
    assert details["job_id"] == export["procrastinate_job_id"]
    assert 0 <= details["duration_s"] < 30
    assert audits(conn, "export.completed") == []


# --- maintenance: requeue, give up, expire ------------------------------------------------


def _abandon(conn: Conn, export_id: str, rows_done: int) -> None:
    """As if a worker claimed the export, wrote some rows and died without a trace."""
    conn.execute(
        "UPDATE export_jobs SET status = 'running', rows_total = %s, rows_done = %s, "
        "heartbeat_at = now() - interval '1 hour', progress_at = now() - interval '1 hour' "
        "WHERE id = %s",
        (TICKETS, rows_done, export_id),
    )


async def test_maintenance_requeue_and_last_attempt_failure_are_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    await login(web, ADMIN)
    export_id = await request_export(web)
    jobs = [export_row(conn, export_id)["procrastinate_job_id"]]
    for attempt in range(1, MAX_ATTEMPTS):
        _abandon(conn, export_id, rows_done=10 * attempt)
        report = await maintenance.run_maintenance(deps)
        assert report.requeued == 1
        export = export_row(conn, export_id)
        assert (export["status"], export["attempt"]) == ("queued", attempt + 1)
        jobs.append(export["procrastinate_job_id"])
    requeued = audits(conn, "export.requeued", export_id)
    # Maintenance acts in the requester's name too (details say "by": "maintenance").
    assert [(r["actor_id"], r["actor_email"], r["ip"]) for r in requeued] == [
        (people[ADMIN], ADMIN, None)
    ] * (MAX_ATTEMPTS - 1)
    assert [r["details"] for r in requeued] == [
        {
            "reason": "worker_lost",
            "attempt": attempt + 1,
            "rows_done": 10 * attempt,
            "procrastinate_job_id": jobs[attempt],
            "by": "maintenance",
        }
        for attempt in range(1, MAX_ATTEMPTS)
    ]
    assert len(set(jobs)) == MAX_ATTEMPTS  # every re-queue defers a new procrastinate job

    _abandon(conn, export_id, rows_done=5)
    report = await maintenance.run_maintenance(deps)
    assert report.failed == 1
    export = export_row(conn, export_id)
    assert (export["status"], export["error_code"]) == ("failed", "worker_lost")
    failed = only(conn, "export.failed", export_id)
    assert (failed["actor_id"], failed["actor_email"]) == (people[ADMIN], ADMIN)
    assert failed["details"] == {
        "error_code": "worker_lost",
        "attempt": MAX_ATTEMPTS,
        "by": "maintenance",
    }

    # A stall (heartbeat alive, no progress) is told apart from a lost worker.
    stalled_id = await request_export(web, sort="sla")
    conn.execute(
        "UPDATE export_jobs SET status = 'running', heartbeat_at = now(), "
        "progress_at = now() - interval '1 hour' WHERE id = %s",
        (stalled_id,),
    )
    await maintenance.run_maintenance(deps)
    assert only(conn, "export.requeued", stalled_id)["details"]["reason"] == "stalled"


async def test_expiry_is_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int], storage_root: Path
) -> None:
    await login(web, ADMIN)
    done_id = await request_export(web)
    export = await run_export(deps, conn, done_id)
    assert export["status"] == "completed"
    stored = storage_root / export["object_key"]
    assert stored.exists()
    unfinished_id = await request_export(web, sort="oldest")
    for export_id in (done_id, unfinished_id):
        conn.execute(
            "UPDATE export_jobs SET requested_at = now() - interval '73 hours', "
            "expires_at = now() - interval '1 hour' WHERE id = %s",
            (export_id,),
        )
    report = await maintenance.run_maintenance(deps)
    assert (report.expired, report.failed) == (1, 1)

    expired = only(conn, "export.expired", done_id)
    assert (expired["actor_id"], expired["actor_email"], expired["ip"]) == (
        people[ADMIN],
        ADMIN,
        None,
    )
    assert expired["details"] == {"object_key": export["object_key"], "by": "maintenance"}
    assert export_row(conn, done_id)["status"] == "expired"
    assert not stored.exists()

    failed = only(conn, "export.failed", unfinished_id)
    assert failed["actor_email"] == ADMIN
    assert failed["details"] == {
        "error_code": "expired_before_completion",
        "attempt": 1,
        "by": "maintenance",
    }
    assert export_row(conn, unfinished_id)["error_code"] == "expired_before_completion"
    # Nothing is audited twice when maintenance runs again.
    await maintenance.run_maintenance(deps)
    assert len(audits(conn, "export.expired")) == 1
    assert len(audits(conn, "export.failed")) == 1


async def test_a_queued_export_whose_job_vanished_is_requeued_then_failed_audited(
    web: Web, deps: Services, conn: Conn, people: dict[str, int]
) -> None:
    await login(web, ADMIN)
    export_id = await request_export(web)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        job_id = export_row(conn, export_id)["procrastinate_job_id"]
        # The job ended without ever running the export (e.g. failed before the claim).
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (job_id,))
        report = await maintenance.run_maintenance(deps)
        if attempt < MAX_ATTEMPTS:
            assert report.requeued == 1
            requeued = audits(conn, "export.requeued", export_id)[-1]
            assert (requeued["actor_id"], requeued["actor_email"], requeued["ip"]) == (
                people[ADMIN],
                ADMIN,
                None,
            )
            assert requeued["details"] == {
                "reason": "job_lost",
                "attempt": attempt + 1,
                "rows_done": 0,
                "procrastinate_job_id": export_row(conn, export_id)["procrastinate_job_id"],
                "lost_job_id": job_id,
                "lost_job_status": "failed",
                "by": "maintenance",
            }
    assert report.failed == 1
    failed = only(conn, "export.failed", export_id)
    assert (failed["actor_id"], failed["actor_email"]) == (people[ADMIN], ADMIN)
    assert failed["details"] == {
        "error_code": "internal",
        "reason": "job_lost",
        "attempt": MAX_ATTEMPTS,
        "lost_job_id": job_id,
        "lost_job_status": "failed",
        "by": "maintenance",
    }


async def test_throttle_duplicates_limits_and_unseen_exports_are_audited(
    db_url: str, conn: Conn, people: dict[str, int], storage_root: Path
) -> None:
    async with _app(
        db_url, storage_root, trusted_proxies=proxies(PROXY), max_active_exports_per_user=2
    ) as web:
        # A double submit is sent to the first export, and recorded as such.
        await login(web, STAFF_EXPORT)
        first = await request_export(web, "192.0.2.20", sort="oldest")
        again = await request_export(web, "192.0.2.21", sort="oldest")
        assert again == first
        deduplicated = only(conn, "export.deduplicated", first)
        assert (deduplicated["actor_id"], deduplicated["actor_email"], deduplicated["ip"]) == (
            people[STAFF_EXPORT],
            STAFF_EXPORT,
            "192.0.2.21",
        )
        assert deduplicated["details"] == {
            "view": "all",
            "view_name": "All tickets",
            "q": "",
            "sort": "oldest",
            "filters": {},
            "format": "csv",
            "within_s": 10,
        }

        # One over the active-export limit: refused, recorded, and nothing created.
        await request_export(web, sort="newest")
        token = await web.csrf("/staff/exports")
        refused = await web.client.post(
            "/staff/tickets/export",
            data={"csrf_token": token, "view": "all", "sort": "priority"},
            headers=forwarded("192.0.2.22"),
            allow_redirects=False,
        )
        assert refused.status == 429
        assert 'href="/staff/exports"' in await refused.text()
        limited = audits(conn, "export.denied")
        assert [(d["actor_email"], d["ip"], d["details"]) for d in limited] == [
            (STAFF_EXPORT, "192.0.2.22", {"action": "request", "reason": "active_export_limit"})
        ]
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (2,)

        # Someone else's export, retried or downloaded: 404, and recorded.
        await web.logout_cookies()
        await login(web, STAFF)
        retry = await post(web, f"/staff/exports/{first}/retry", "192.0.2.23")
        assert retry.status == 404
        download = await web.client.get(
            f"/staff/exports/{first}/download", headers=forwarded("192.0.2.24")
        )
        assert download.status == 404
        unseen = audits(conn, "export.denied", first)
        assert [(d["actor_id"], d["ip"], d["details"]) for d in unseen] == [
            (people[STAFF], "192.0.2.23", {"action": "retry", "reason": "not_found"})
        ]
        refused_download = only(conn, "export.download_denied", first)
        assert (refused_download["actor_email"], refused_download["ip"]) == (
            STAFF,
            "192.0.2.24",
        )
        assert refused_download["details"] == {"reason": "not_found"}

        # Ten failed sign-ins for one address; the eleventh, right or wrong, is throttled.
        await web.logout_cookies()
        for _ in range(10):
            page = await web.client.get("/login")
            response = await web.client.post(
                "/login",
                data={"email": OTHER, "password": "", "csrf_token": csrf_in(await page.text())},
                headers=forwarded(),
                allow_redirects=False,
            )
            assert response.status == 400
        # Refused again and again: audited once for the address and window, not per request.
        for _ in range(3):
            page = await web.client.get("/login")
            response = await web.client.post(
                "/login",
                data={
                    "email": OTHER,
                    "password": PASSWORD,
                    "csrf_token": csrf_in(await page.text()),
                },
                headers=forwarded(),
                allow_redirects=False,
            )
            assert response.status == 429
        throttled = only(conn, "login.throttled")
        assert (throttled["actor_id"], throttled["actor_email"], throttled["ip"]) == (
            None,
            OTHER,
            CLIENT,
        )
        assert throttled["details"]["limit"] == "email"
        assert throttled["details"]["network"] == f"{CLIENT}/32"
        assert 0 < throttled["details"]["retry_after"] <= 900
        assert audits(conn, "login.succeeded", None)[-1]["actor_email"] == STAFF


def test_every_audit_action_in_the_code_is_covered() -> None:
    """A new audit action written anywhere in the package needs a test here too."""
    package = Path(__file__).resolve().parents[2] / "ticketexport"
    found: set[str] = set()
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found.update(re.findall(r'"((?:export|login|token)\.[a-z_]+|logout)"', text))
    # File names (templates, a download fallback) look alike but are not actions.
    found -= {"export.csv", "export.html", "login.html"}
    covered = {
        "export.requested",
        "export.completed",
        "export.failed",
        "export.cancelled",
        "export.retried",
        "export.requeued",
        "export.expired",
        "export.downloaded",
        "export.download_denied",
        "export.download_failed",
        "export.denied",
        "export.deduplicated",
        # A schedule's delivery: tests/integration/test_schedules.py.
        "export.delivered",
        "export.delivery_failed",
        "login.succeeded",
        "login.failed",
        "login.throttled",
        "logout",
        # tests/integration/test_api.py: created and revoked, with the token's id.
        "token.created",
        "token.revoked",
    }
    assert found <= covered, sorted(found - covered)
    assert "export.requeued" in found
