"""What the queue holds now: jobs by queue and status, the oldest wait, workers, and the
exports that are stalled or failing, read from procrastinate's tables and export_jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg

from ticketexport.db import q

# Exports listed in each table of the page: the newest few are what an operator acts on.
LISTED = 50
# Failures shown: those of the past day.
FAILING_WINDOW = dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class ExportLine:
    id: str
    requester: str
    status: str
    stage: str | None
    attempt: int
    requested_at: dt.datetime
    last_progress_at: dt.datetime | None
    error_code: str | None
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class QueueStatus:
    now: dt.datetime
    counts: list[tuple[str, str, int]]
    oldest_waiting: tuple[int, str, dt.datetime] | None
    workers: list[tuple[int, dt.datetime]]
    stalled: list[ExportLine]
    failing: list[ExportLine]
    failing_codes: list[tuple[str, int]]


def _line(row: tuple[Any, ...]) -> ExportLine:
    return ExportLine(
        id=str(row[0]),
        requester=row[1],
        status=row[2],
        stage=row[3],
        attempt=int(row[4]),
        requested_at=row[5],
        last_progress_at=row[6],
        error_code=row[7],
        finished_at=row[8],
    )


async def read(conn: psycopg.AsyncConnection[Any], *, stall_seconds: float) -> QueueStatus:
    now_row = await (await conn.execute(q("queue_now"))).fetchone()
    assert now_row is not None
    counts = await (await conn.execute(q("queue_counts"))).fetchall()
    oldest = await (await conn.execute(q("queue_oldest_waiting"))).fetchone()
    workers = await (await conn.execute(q("queue_workers"), {"limit": LISTED})).fetchall()
    stalled = await (
        await conn.execute(q("queue_stalled_exports"), {"stall": stall_seconds, "limit": LISTED})
    ).fetchall()
    failing = await (
        await conn.execute(q("queue_failing_exports"), {"window": FAILING_WINDOW, "limit": LISTED})
    ).fetchall()
    codes = await (
        await conn.execute(q("queue_failing_codes"), {"window": FAILING_WINDOW})
    ).fetchall()
    return QueueStatus(
        now=now_row[0],
        counts=[(str(a), str(b), int(c)) for a, b, c in counts],
        oldest_waiting=(int(oldest[0]), str(oldest[1]), oldest[2]) if oldest else None,
        workers=[(int(a), b) for a, b in workers],
        stalled=[_line(row) for row in stalled],
        failing=[_line(row) for row in failing],
        failing_codes=[(str(a), int(b)) for a, b in codes],
    )
