"""The export pipeline in-process: request → job row → worker run → stored CSV = the list."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.databases import Seeding
from tests.support.exports import guard
from tests.support.services import actor_for, services_for
from ticketexport import seed
from ticketexport.domain.actor import Actor
from ticketexport.exports import maintenance, service, store
from ticketexport.exports.formats import BOM
from ticketexport.exports.store import Export
from ticketexport.exports.worker import MAX_ATTEMPTS, ExportRun
from ticketexport.services import Services
from ticketexport.storage.local import LocalStorage
from ticketexport.views import service as view_service
from ticketexport.views.model import ListRequest

ANCHOR = dt.date(2026, 6, 1)


@pytest.fixture
def seeding() -> Seeding:
    """The data behind `seeded_url` in this module: 400 seeded tickets."""
    return Seeding(tickets=400, seed=7, anchor=ANCHOR)


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    env = {"TICKETEXPORT_HEARTBEAT_SECONDS": "0.2", "TICKETEXPORT_STALL_SECONDS": "3"}
    async with services_for(
        seeded_url, tmp_path, env=env, storage=LocalStorage(tmp_path / "exports"), claim=True
    ) as services:
        yield services


def _user(url: str, email: str) -> Actor:
    return actor_for(url, email)


def _admin(url: str) -> Actor:
    return actor_for(url)


async def _list_all(
    deps: Services, request: ListRequest, user: Actor, now: dt.datetime
) -> tuple[list[str], list[list[str]]]:
    rows: list[list[str]] = []
    page: str | None = None
    async with deps.pool.connection() as conn:
        while True:
            current = ListRequest(
                view=request.view,
                q=request.q,
                sort=request.sort,
                filters=request.filters,
                page=page,
            )
            result = await view_service.list_page(conn, current, user, now=now, tz="UTC")
            rows.extend(result.rows)
            if result.next_cursor is None:
                return [c.label for c in result.columns], rows
            page = result.next_cursor


async def _read(deps: Services, key: str) -> bytes:
    assert isinstance(deps.storage, LocalStorage)
    return b"".join([chunk async for chunk in deps.storage.read(key)])


async def _export_row(deps: Services, export_id: str) -> Export:
    async with deps.pool.connection() as conn:
        row = await store.get(conn, export_id)
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("view", "sort", "filters", "q"),
    [
        ("all", None, {}, ""),
        ("open", "priority", {}, ""),
        ("all", "assignee", {"type": "closed"}, ""),
        ("all", "sla", {}, "a"),
    ],
)
async def test_export_equals_the_list(
    deps: Services, seeded_url: str, view: str, sort: str | None, filters: dict[str, str], q: str
) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view=view, q=q, sort=sort, filters=filters, page=None)
    requested = await service.request_export(deps, user, request, client_ip="127.0.0.1")
    assert not requested.deduplicated
    export = await _export_row(deps, requested.export_id)
    assert export.status == "queued"
    job_id = export.procrastinate_job_id
    assert job_id is not None

    await ExportRun(deps, requested.export_id, job_id).run()

    export = await _export_row(deps, requested.export_id)
    assert export.status == "completed", export.error_code
    data = await _read(deps, export.file.object_key)
    assert data.startswith(BOM)
    assert export.file.size_bytes == len(data)
    parsed = list(csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline="")))
    labels, listed = await _list_all(deps, request, user, export.as_of)
    assert parsed[0] == labels
    # The list shows raw values; the file guards formula-like cells with a leading quote.
    guarded = [[guard(v) for v in row] for row in listed]
    assert parsed[1:] == guarded
    assert export.rows_done == export.rows_total == len(listed)
    assert export.file.name.startswith("tickets-")


async def test_double_submit_returns_the_first(deps: Services, seeded_url: str) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view="open", q="x", sort=None, filters={}, page=None)
    first = await service.request_export(deps, user, request, client_ip=None)
    second = await service.request_export(deps, user, request, client_ip=None)
    assert second.deduplicated
    assert second.export_id == first.export_id
    other = ListRequest(view="open", q="y", sort=None, filters={}, page=None)
    third = await service.request_export(deps, user, other, client_ip=None)
    assert third.export_id != first.export_id


async def test_permission_revoked_before_the_job_runs(deps: Services, seeded_url: str) -> None:
    login = next(d for d in seed.DEMO_LOGINS if not d.is_admin and d.can_export)
    user = _user(seeded_url, login.email)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, user, request, client_ip=None)
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("DELETE FROM user_roles WHERE user_id = %s", (user.id,))
    export = await _export_row(deps, requested.export_id)
    await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    export = await _export_row(deps, requested.export_id)
    assert export.status == "failed"
    assert export.error_code == "permission_revoked"
    assert "Import / Export Tickets" in export.error_message
    assert export.file is None
    assert not list((Path(deps.settings.home) / "exports").rglob("*.csv*"))


async def test_request_without_permission_is_denied_and_creates_nothing(
    deps: Services, seeded_url: str
) -> None:
    login = next(d for d in seed.DEMO_LOGINS if d.is_admin and not d.can_export)
    user = _user(seeded_url, login.email)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    with pytest.raises(service.ExportDenied):
        await service.request_export(deps, user, request, client_ip="10.0.0.1")
    with psycopg.connect(seeded_url) as conn:
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (0,)
        denial = conn.execute(
            "SELECT actor_id, client_ip::text, details FROM audit_log "
            "WHERE action = 'export.denied'"
        ).fetchone()
    assert denial == (user.id, "10.0.0.1/32", {"action": "request", "reason": "missing_permission"})


async def test_cancel_then_retry(deps: Services, seeded_url: str) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, user, request, client_ip=None)
    await service.cancel_export(deps, user, requested.export_id, client_ip=None)
    export = await _export_row(deps, requested.export_id)
    assert export.status == "cancelled"
    with pytest.raises(service.ExportConflict):
        await service.cancel_export(deps, user, requested.export_id, client_ip=None)
    with psycopg.connect(seeded_url) as conn:
        job = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s",
            (export.procrastinate_job_id,),
        ).fetchone()
    assert job == ("cancelled",)
    # the cancelled job, if a worker picks it up anyway, does nothing
    await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    assert (await _export_row(deps, requested.export_id)).status == "cancelled"

    retried = await service.retry_export(deps, user, requested.export_id, client_ip=None)
    new = await _export_row(deps, retried.export_id)
    assert new.retry_of_id is not None
    assert str(new.retry_of_id) == requested.export_id
    assert new.frozen is not None
    assert export.frozen is not None
    assert new.frozen.view == export.frozen.view
    # A manual retry is as of its own click, strictly later than the original.
    assert new.as_of > export.as_of
    await ExportRun(deps, retried.export_id, new.procrastinate_job_id).run()
    assert (await _export_row(deps, retried.export_id)).status == "completed"


async def test_other_staff_cannot_see_an_export(deps: Services, seeded_url: str) -> None:
    owner = _admin(seeded_url)
    login = next(d for d in seed.DEMO_LOGINS if not d.is_admin and not d.can_export)
    stranger = _user(seeded_url, login.email)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, owner, request, client_ip=None)
    async with deps.pool.connection() as conn:
        with pytest.raises(service.ExportNotFound):
            await service.visible_export(conn, stranger, requested.export_id)
        with pytest.raises(service.ExportNotFound):
            await service.visible_export(conn, stranger, "not-a-uuid")
    with pytest.raises(service.ExportNotFound):
        await service.cancel_export(deps, stranger, requested.export_id, client_ip=None)


async def test_maintenance_requeues_a_lost_attempt_and_sweeps_its_upload(
    deps: Services, seeded_url: str
) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, user, request, client_ip=None)
    export_id = requested.export_id
    # A worker claimed it, wrote half a file and died without a trace.
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET status = 'running', heartbeat_at = now() - interval '1 hour', "
            "progress_at = now() - interval '1 hour', rows_done = 10, rows_total = 400 "
            "WHERE id = %s",
            (export_id,),
        )
    partial = Path(deps.settings.home) / "exports" / "exports" / export_id / "1"
    partial.mkdir(parents=True)
    (partial / "tickets-all.csv.deadbeef.part").write_bytes(b"half")

    report = await maintenance.run_maintenance(deps)
    assert report.requeued == 1
    assert report.orphans_removed == 1
    assert not list(partial.iterdir())
    export = await _export_row(deps, export_id)
    assert (export.status, export.attempt, export.rows_done) == ("queued", 2, 0)
    await ExportRun(deps, export_id, export.procrastinate_job_id).run()
    export = await _export_row(deps, export_id)
    assert (export.status, export.attempt) == ("completed", 2)
    assert "/2/" in export.file.object_key


async def test_dba_views_show_exports_with_their_jobs(deps: Services, seeded_url: str) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    done = await service.request_export(deps, user, request, client_ip=None)
    waiting = await service.request_export(
        deps,
        user,
        ListRequest(view="open", q="", sort=None, filters={}, page=None),
        client_ip=None,
    )
    export = await _export_row(deps, done.export_id)
    await ExportRun(deps, done.export_id, export.procrastinate_job_id).run()
    with psycopg.connect(seeded_url) as conn:
        overview = conn.execute(
            "SELECT status, requester_email, rows_done, rows_total, percent, job_status, "
            "sha256 IS NOT NULL, rows_per_second > 0 FROM export_overview WHERE export_id = %s",
            (done.export_id,),
        ).fetchone()
        active = conn.execute("SELECT export_id::text FROM export_active").fetchall()
    assert overview == ("completed", user.email, 400, 400, 100, "todo", True, True)
    assert active == [(waiting.export_id,)]


async def test_sweep_never_deletes_a_completed_file(deps: Services, seeded_url: str) -> None:
    """The sweep lists unfinished uploads, then asks which attempts run: an attempt that
    completes in between must keep its file."""
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, user, request, client_ip=None)
    export = await _export_row(deps, requested.export_id)
    await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    export = await _export_row(deps, requested.export_id)
    final = Path(deps.settings.home) / "exports" / export.file.object_key
    # what the listing saw an instant before the rename
    final.with_name(final.name + ".0123abcd.part").write_bytes(b"half")
    report = await maintenance.run_maintenance(deps)
    assert report.orphans_removed == 1
    assert final.is_file()
    assert (await _read(deps, export.file.object_key)).startswith(BOM)


class _RetentionEndsWhileStoring(LocalStorage):
    """Real files, but the export's retention ends just as its file is stored."""

    def __init__(self, root: Path, url: str) -> None:
        super().__init__(root)
        self.url = url

    async def put_stream(self, key, chunks, *, content_type):  # type: ignore[no-untyped-def]
        stored = await super().put_stream(key, chunks, content_type=content_type)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE export_jobs SET expires_at = requested_at + interval '1 microsecond' "
                "WHERE id = %s",
                (key.split("/")[1],),
            )
        return stored


async def test_an_attempt_completing_after_expiry_fails_instead(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    late = dataclasses.replace(
        deps, storage=_RetentionEndsWhileStoring(tmp_path / "late", seeded_url)
    )
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort="oldest", filters={}, page=None)
    requested = await service.request_export(late, user, request, client_ip=None)
    export = await _export_row(late, requested.export_id)
    await ExportRun(late, requested.export_id, export.procrastinate_job_id).run()
    export = await _export_row(late, requested.export_id)
    assert (export.status, export.error_code) == ("failed", "expired_before_completion")
    assert export.file is None
    # The file it had stored is gone again, and the failure is audited in the requester's
    # name.
    assert [p for p in (tmp_path / "late").rglob("*") if p.is_file()] == []
    with psycopg.connect(seeded_url) as conn:
        audited = conn.execute(
            "SELECT action, actor_id, actor_email, details->>'error_code' FROM audit_log "
            "WHERE export_id = %s AND action <> 'export.requested' ORDER BY id",
            (requested.export_id,),
        ).fetchall()
        media = conn.execute("SELECT count(*) FROM media_items").fetchone()
    assert audited == [("export.failed", user.id, user.email, "expired_before_completion")]
    assert media == (0,)


def _failure_audits(url: str, export_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT action, actor_id, details->>'error_code', (details->>'attempt')::int, "
            "details->>'format' FROM audit_log "
            "WHERE export_id = %s AND action <> 'export.requested' ORDER BY id",
            (export_id,),
        ).fetchall()


@pytest.mark.parametrize(
    ("setup", "code", "attempt"),
    [
        # Retention ran out while the export waited in the queue.
        (
            "UPDATE export_jobs SET expires_at = requested_at + interval '1 microsecond' "
            "WHERE id = %s",
            "expired_before_completion",
            1,
        ),
        # Every attempt was already used by workers that died mid-export.
        (
            f"UPDATE export_jobs SET status = 'running', attempt = {MAX_ATTEMPTS}, "
            "started_at = now() WHERE id = %s",
            "worker_lost",
            MAX_ATTEMPTS,
        ),
    ],
    ids=["expired_in_queue", "attempts_used_up"],
)
async def test_an_export_failed_when_claimed_is_audited(
    deps: Services, seeded_url: str, setup: str, code: str, attempt: int
) -> None:
    user = _admin(seeded_url)
    request = ListRequest(view="all", q="", sort="oldest", filters={}, page=None)
    requested = await service.request_export(deps, user, request, client_ip=None)
    with psycopg.connect(seeded_url) as conn:
        conn.execute(setup, (requested.export_id,))
    export = await _export_row(deps, requested.export_id)
    await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    export = await _export_row(deps, requested.export_id)
    assert (export.status, export.error_code) == ("failed", code)
    assert _failure_audits(seeded_url, requested.export_id) == [
        ("export.failed", user.id, code, attempt, "csv")
    ]


async def test_export_sessions_run_without_jit(deps: Services, seeded_url: str) -> None:
    # JIT compiling an export's plan costs seconds before the first row (bench/README.md).
    run = ExportRun(deps, "00000000-0000-0000-0000-000000000000", None)
    counter = await run._connect(seeded_url)
    try:
        cur = await counter.execute("SHOW jit")
        assert await cur.fetchone() == ("off",)
    finally:
        await counter.close()
    copier = await run._connect(seeded_url, blocking=True)
    try:
        assert copier.execute("SHOW jit").fetchone() == ("off",)
    finally:
        copier.close()
