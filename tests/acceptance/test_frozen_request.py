"""The request is frozen at the click: a saved view edited, the organisation's time zone
changed and a relative date boundary crossed before the worker starts change nothing in
the file, and the automatic retry after a killed attempt keeps the click's instant."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import psycopg
import pytest

from tests.support.services import actor_for, services_for
from tests.support.workers import (
    Workers,
    assert_settled,
    export_row,
    run_async,
    wait_for,
    wait_status,
)
from ticketexport.exports import service
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

CLICK_ZONE = "Asia/Kolkata"  # +05:30 all year
WORKER_ZONE = "America/New_York"
NEAR_BOUNDARY = 30  # tickets that leave "created within the past hour" seconds after the click
WELL_INSIDE = 20


def _setup(url: str, owner_id: int) -> tuple[int, list[int]]:
    """A saved view of the tickets created within the past hour, and those tickets: some a
    few seconds from leaving it. Returns the view's id and the tickets' ids in its order."""
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                "INSERT INTO tickets (title, status_id, priority_id, created_at) "
                "SELECT 'frozen ' || n, 1, 1, CASE WHEN n <= %s "
                "THEN now() - interval '1 hour' + interval '4 seconds' "
                "ELSE now() - interval '30 minutes' END "
                "FROM generate_series(1, %s) AS n ORDER BY n RETURNING id",
                (NEAR_BOUNDARY, NEAR_BOUNDARY + WELL_INSIDE),
            ).fetchall()
        ]
        row = conn.execute(
            "INSERT INTO saved_views (name, owner_id, created_by_id, conditions_and, columns, "
            "sort) VALUES ('Past hour', %s, %s, %s, %s, %s) RETURNING id",
            (
                owner_id,
                owner_id,
                json.dumps(
                    [
                        {
                            "field": "created_at",
                            "operator": "within_past",
                            "value": {"amount": 1, "unit": "hours"},
                        }
                    ]
                ),
                ["id", "title", "created_at"],
                json.dumps([{"column": "created_at", "direction": "asc"}]),
            ),
        ).fetchone()
    assert row is not None
    # created_at ascending, then id ascending: the near-boundary tickets first.
    return int(row[0]), ids


def _click(url: str, view_id: int) -> str:
    async def go() -> str:
        env = {"TICKETEXPORT_TIMEZONE": CLICK_ZONE}
        async with services_for(url, env=env) as services:
            request = ListRequest(view=str(view_id), q="", sort=None, filters={}, page=None)
            requested = await service.request_export(
                services, actor_for(url), request, client_ip=None
            )
        return requested.export_id

    return str(run_async(go()))


def _in_view_now(url: str, ids: list[int]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tickets WHERE id = ANY(%s) "
            "AND created_at >= now() - interval '1 hour'",
            (ids,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_file_follows_the_click_and_the_retry_keeps_its_instant(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    admin = actor_for(seeded_url)
    view_id, ids = _setup(seeded_url, admin.id)
    export_id = _click(seeded_url, view_id)
    clicked = export_row(seeded_url, export_id)
    assert _in_view_now(seeded_url, ids) == len(ids), "the click came too late to test"

    # Between the click and the worker's start: the view is edited, the organisation moves
    # to another zone, and the near-boundary tickets leave "within the past hour".
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE saved_views SET name = 'Edited', columns = '{id,status}', "
            "conditions_and = '[]', sort = %s WHERE id = %s",
            (json.dumps([{"column": "id", "direction": "desc"}]), view_id),
        )
    wait_for(
        "the relative-date boundary to pass",
        lambda: _in_view_now(seeded_url, ids) == WELL_INSIDE,
        timeout=30,
    )
    zone = {"TICKETEXPORT_TIMEZONE": WORKER_ZONE}

    # The first attempt is killed while it streams; the automatic retry finishes.
    first = workers.start(seeded_url, max_rows_per_s=10, name="a", extra_env=zone)

    def streaming() -> bool:
        row = export_row(seeded_url, export_id)
        return row["status"] == "running" and row["rows_done"] > 0

    wait_for("the first attempt to stream", streaming, timeout=60, workers=workers)
    first.kill()
    workers.start(seeded_url, name="b", extra_env=zone)
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=90, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert row["attempt"] == 2
    # Exactly the click's instant and snapshot, not merely some instant after it.
    assert (row["as_of"], row["as_of_snapshot"]) == (clicked["as_of"], clicked["as_of_snapshot"])
    assert_settled(seeded_url, export_id, home, workers)

    stored = (home / "exports" / row["object_key"]).read_bytes().decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(stored, newline="")))
    # The view as it was clicked: its columns, its order, its relative date at the click.
    assert lines[0] == ["Ticket ID", "Title", "Created"]
    assert [int(line[0]) for line in lines[1:]] == ids
    # Timestamps in the click's zone, whatever the worker's settings say.
    assert all(line[2].endswith("+05:30") for line in lines[1:]), lines[1]
