"""A schedule every minute on real time, run by two `worker` processes, one killed with
SIGKILL just before a tick: one run per tick, each delivered once, `latest` following."""

from __future__ import annotations

import asyncio
import datetime as dt
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
from ticketexport.exports import formats
from ticketexport.schedules import service
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

OWNER = "ticker@example.com"


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
            ListRequest(view="all", q="", sort="oldest", filters={}, page=None),
            export_format=formats.CSV,
            fields={
                "name": "Minutely",
                "cadence": "every",
                "every_minutes": "1",
                "destination": "drop",
            },
            client_ip=None,
        )


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
    # Killed just before the next tick: the other worker takes it, once.
    next_tick = tick + dt.timedelta(minutes=1)
    while dt.datetime.now(dt.UTC) < next_tick - dt.timedelta(seconds=1):
        time.sleep(0.1)
    first.kill()
    runs = _wait_delivered(conn, schedule_id, 2, workers)
    ticks = [r[0] for r in runs]
    assert ticks[:2] == [tick, next_tick]
    assert len(set(ticks)) == len(ticks)
    assert [r[1] for r in runs[:2]] == ["completed", "completed"]
    # Each delivered once under its own name, and latest.csv is the newest one.
    folder = drop / "minutely"
    names = sorted(p.name for p in folder.iterdir())
    delivered = sorted(r[3] for r in runs if r[2] == "delivered")
    assert names == sorted([*delivered, "latest.csv"])
    newest = max((r for r in runs if r[2] == "delivered"), key=lambda r: r[0])
    assert (folder / "latest.csv").read_bytes() == (folder / newest[3]).read_bytes()
    recorded = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'export.delivered'"
    ).fetchone()
    assert recorded == (len(delivered),)
