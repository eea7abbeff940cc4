"""A file of changes survives a killed worker: the next attempt writes the same bytes, as of
the same two clicks, whatever changed meanwhile."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.exports import csv_in_transaction
from tests.support.services import actor_for, services_for
from tests.support.workers import (
    Workers,
    export_files,
    export_row,
    run_async,
    wait_for,
    wait_status,
)
from ticketexport.domain.exports import copy_application_name
from ticketexport.exports import service
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

# Slow enough that the file of changes (about 2,600 rows) streams for a few seconds.
THROTTLE = 1000


def _full(url: str) -> str:
    async def go() -> str:
        async with services_for(url) as services:
            request = ListRequest(view="all", q="", sort="priority", filters={}, page=None)
            requested = await service.request_export(
                services, actor_for(url), request, client_ip=None
            )
            return requested.export_id

    return str(run_async(go()))


def _changes(url: str, export_id: str) -> str:
    async def go() -> str:
        async with services_for(url) as services:
            requested = await service.request_changes(
                services, actor_for(url), export_id, client_ip=None
            )
            return requested.export_id

    return str(run_async(go()))


def _copying(url: str, export_id: str) -> dict[str, Any] | None:
    """The export's row while its COPY has been running for half a second."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
            "AND query ILIKE 'COPY%%' AND now() - query_start > interval '0.5 seconds'",
            (copy_application_name(export_id),),
        ).fetchone()
    row = export_row(url, export_id)
    return row if found and row["stage"] == "counting" else None


def _stored(home: Path, row: dict[str, Any]) -> bytes:
    return (home / "exports" / row["object_key"]).read_bytes()


def test_a_worker_killed_mid_changes_gives_the_same_bytes_on_the_next_attempt(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    base = _full(seeded_url)
    workers.start(seeded_url)
    done = wait_status(seeded_url, base, {"completed", "failed"}, timeout=120, workers=workers)
    assert done["status"] == "completed", (done["error_code"], workers.outputs())
    workers.stop_all()
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET title = 'Changed ' || id WHERE id % 3 = 0")
        conn.execute("DELETE FROM tickets WHERE id % 10 = 1")
    delta = _changes(seeded_url, base)
    queued = export_row(seeded_url, delta)
    assert queued["request"]["since"]["export_id"] == base
    # The file as the statements give it before any attempt ran.
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        expected, total = csv_in_transaction(
            conn, queued["request"], queued["as_of"], snapshot=queued["as_of_snapshot"]
        )
    first = workers.start(seeded_url, max_rows_per_s=THROTTLE)
    # Killed while its COPY streams into the spool (the counting stage of a file of changes).
    before = wait_for(
        "the COPY of the changes to stream for half a second",
        lambda: _copying(seeded_url, delta),
        timeout=120,
        workers=workers,
    )
    first.kill()
    # The data moves on between the two attempts.
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET title = 'After the kill' WHERE id % 3 = 1")
        conn.execute("DELETE FROM tickets WHERE id % 10 = 2")
    workers.start(seeded_url)
    row = wait_status(seeded_url, delta, {"completed", "failed"}, timeout=180, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == before["attempt"] + 1
    assert row["rows_done"] == row["rows_total"] == total > 0
    stored = _stored(home, row)
    assert stored == expected
    assert b"After the kill" not in stored
    assert row["sha256"] == hashlib.sha256(expected).hexdigest()
    assert export_files(home, delta) == [row["object_key"]]
