"""An export whose file outgrows what the store can hold in one object fails with
`file_too_large` and its fixed message, at once (no retry would fit it either), audited,
with nothing left in storage."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import Seeding
from tests.support.limits import file_size_limit
from tests.support.services import actor_for, services_for
from ticketexport.domain.exports import safe_message
from ticketexport.exports import service, store
from ticketexport.exports.worker import ExportRun
from ticketexport.services import Services
from ticketexport.storage.local import LocalStorage
from ticketexport.views.model import ListRequest

# Far below the file of 400 tickets (some 60 kB), far above anything else the test writes.
LIMIT = 16 * 1024


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=400, seed=7, anchor=dt.date(2026, 6, 1))


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with services_for(
        seeded_url, tmp_path, storage=LocalStorage(tmp_path / "exports")
    ) as services:
        yield services


async def test_a_file_larger_than_the_store_allows_fails_file_too_large(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    requested = await service.request_export(deps, actor_for(seeded_url), request, client_ip=None)
    async with deps.pool.connection() as conn:
        export = await store.get(conn, requested.export_id)
    assert export is not None
    with file_size_limit(LIMIT):
        # The job's own run: a limit is not an outage, so it must not ask for a retry.
        await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    async with deps.pool.connection() as conn:
        export = await store.get(conn, requested.export_id)
    assert export is not None
    assert (export.status, export.error_code, export.attempt) == (
        "failed",
        "file_too_large",
        1,
    )
    assert export.error_message == safe_message("file_too_large")
    assert export.file is None
    assert export.rows_total == 400
    assert [p for p in (tmp_path / "exports").rglob("*") if p.is_file()] == []
    with psycopg.connect(seeded_url) as conn:
        audited = conn.execute(
            "SELECT details->>'error_code' FROM audit_log "
            "WHERE export_id = %s AND action = 'export.failed'",
            (requested.export_id,),
        ).fetchall()
    assert audited == [("file_too_large",)]
