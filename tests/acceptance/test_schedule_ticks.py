"""A schedule of changes every minute on real time, run by two `worker` processes, one
killed with SIGKILL just before a tick: one run per tick over three ticks, each delivered
once with `latest` following, and the delivered chain applied to the first file is a full
export as of the last tick."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.services import services_for
from tests.support.web import insert_tickets, make_user
from tests.support.workers import Workers
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats, store
from ticketexport.exports import service as exports
from ticketexport.schedules import service
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

OWNER = "ticker@example.com"
REQUEST = ListRequest(view="all", q="", sort="oldest", filters={}, page=None)
TICKS = 3


def _env(drop: Path) -> dict[str, str]:
    return {
        "TICKETEXPORT_SCHEDULE_MIN_MINUTES": "1",
        "TICKETEXPORT_DESTINATIONS": f"drop={drop.as_uri()}",
    }


async def _create(db_url: str, home: Path, owner: Actor, drop: Path) -> int:
    async with services_for(db_url, home, env=_env(drop)) as services:
        return await service.create_schedule(
            services,
            owner,
            REQUEST,
            export_format=formats.CSV,
            fields={
                "name": "Minutely",
                "cadence": "every",
                "every_minutes": "1",
                "mode": "changes",
                "destination": "drop",
            },
            client_ip=None,
        )


async def _full_export(db_url: str, home: Path, owner: Actor) -> bytes:
    """A full export of the same request now, run by whichever worker takes it."""
    async with services_for(db_url, home) as services:
        requested = await exports.request_export(services, owner, REQUEST, client_ip=None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with services.pool.connection() as conn:
                export = await store.get(conn, requested.export_id)
            assert export is not None
            if export.file is not None:
                return b"".join([c async for c in services.storage.read(export.file.object_key)])
            await asyncio.sleep(0.2)
    pytest.fail("the full export did not complete")


def _runs(conn: psycopg.Connection[Any], schedule_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT schedule_tick, status, delivery_status, m.file_name "
        "FROM export_jobs e LEFT JOIN media_items m ON m.id = e.media_item_id "
        "WHERE schedule_id = %s ORDER BY schedule_tick",
        (schedule_id,),
    ).fetchall()


def _wait_delivered(
    conn: psycopg.Connection[Any], schedule_id: int, count: int, workers: Workers
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        runs = _runs(conn, schedule_id)
        if len(runs) >= count and all(r[2] == "delivered" for r in runs[:count]):
            return runs
        time.sleep(0.2)
    pytest.fail(f"runs: {_runs(conn, schedule_id)}\n{workers.outputs()}")


def _rows(body: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    return rows[0], rows[1:]


def test_one_run_per_tick_with_a_worker_killed_across_a_tick(
    db_url: str, home: Path, workers: Workers, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    insert_tickets(conn, 50, title="Minutely")
    owner_id = make_user(conn, OWNER, permissions=512, admin=True)
    owner = Actor(id=owner_id, is_admin=True, permissions=Permission(512), email=OWNER)
    drop = tmp_path / "drop"
    schedule_id = asyncio.run(_create(db_url, home, owner, drop))
    first = workers.start(db_url, name="first", extra_env=_env(drop))
    workers.start(db_url, name="second", extra_env=_env(drop))

    runs = _wait_delivered(conn, schedule_id, 1, workers)
    tick = runs[0][0]
    conn.execute("UPDATE tickets SET title = 'Edited once' WHERE id = 5")
    conn.execute("DELETE FROM tickets WHERE id = 6")
    # Killed just before the next tick: the other worker takes it, once.
    while dt.datetime.now(dt.UTC) < tick + dt.timedelta(minutes=1) - dt.timedelta(seconds=1):
        time.sleep(0.1)
    first.kill()
    _wait_delivered(conn, schedule_id, 2, workers)
    insert_tickets(conn, 3, title="Arrived later")
    conn.execute("UPDATE tickets SET title = 'Edited twice' WHERE id = 5")
    runs = _wait_delivered(conn, schedule_id, TICKS, workers)[:TICKS]
    assert [r[0] for r in runs] == [tick + dt.timedelta(minutes=n) for n in range(TICKS)]
    assert {r[1] for r in runs} == {"completed"}

    # Each delivered once under its own name; latest.csv is the last one.
    folder = drop / "minutely"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*(r[3] for r in runs), "latest.csv"])
    assert (folder / "latest.csv").read_bytes() == (folder / runs[-1][3]).read_bytes()
    recorded = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'export.delivered'"
    ).fetchone()
    assert recorded == (TICKS,)

    # The chain: the first file holds every row as an upsert, the others the changes; applied
    # in order, keyed by ticket id, they give a full export as of the last tick.
    header, rows = _rows((folder / runs[0][3]).read_bytes())
    assert header[:2] == ["Change", "Ticket ID"]
    assert {row[0] for row in rows} == {"upsert"}
    # The view's columns start with Ticket ID, so a row past Change is a full export's row.
    state = {row[1]: row[1:] for row in rows}
    for run in runs[1:]:
        for row in _rows((folder / run[3]).read_bytes())[1]:
            if row[0] == "delete":
                state.pop(row[1])
            else:
                state[row[1]] = row[1:]
    full_header, full_rows = _rows(asyncio.run(_full_export(db_url, home, owner)))
    assert full_header == header[1:]
    assert state == {row[0]: row for row in full_rows}
    assert "6" not in state
    assert state["5"][full_header.index("Title")] == "Edited twice"
