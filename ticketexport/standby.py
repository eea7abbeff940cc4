"""Exports reading a hot standby: when to, waiting for its replay, its lag for operators."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from ticketexport.config import Settings
from ticketexport.db import fetch_one, in_thread, q
from ticketexport.domain.exports import copy_application_name

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)

# A report must answer quickly even when the standby hangs.
CHECK_TIMEOUT = 3.0
# How often, and how far apart, a standby found behind is asked again before it counts as
# lagging (at most 0.2 s added to a report).
CATCH_UP_CHECKS = 5
CATCH_UP_PAUSE = 0.05
# How often an attempt checks how far the standby has replayed while it waits.
STANDBY_POLL_SECONDS = 0.05
# Attempts a standby's recovery conflicts may cut short before the next one reads the primary.
STANDBY_CONFLICTS_BEFORE_PRIMARY = 2


@dataclasses.dataclass(frozen=True)
class StandbyStatus:
    """`state` is ok, lagging, unreachable, not_in_recovery (promoted, or not a standby) or
    other_cluster (a standby of another primary: never read)."""

    state: str
    lag_seconds: float | None = None
    lag_bytes: int | None = None


async def standby_status(services: Services) -> StandbyStatus | None:
    """None when no standby is configured; otherwise how it is doing right now."""
    if services.standby_pool is None:
        return None
    try:
        async with services.pool.connection(timeout=CHECK_TIMEOUT) as conn:
            cur = await conn.execute(q("primary_wal_position"))
            row = await cur.fetchone()
        assert row is not None
        async with services.standby_pool.connection(timeout=CHECK_TIMEOUT) as conn:
            for check in range(1, CATCH_UP_CHECKS + 1):
                cur = await conn.execute(q("standby_lag"), {"lsn": row[0]})
                lag = await cur.fetchone()
                if lag is None or not lag[1] or check == CATCH_UP_CHECKS:
                    break
                # Behind the position just read: usually WAL still in flight, replayed
                # within milliseconds. Only a standby still behind after a moment is
                # lagging; measured at once, the seconds since its last replayed
                # transaction (perhaps long ago on a quiet primary) would say it was.
                await asyncio.sleep(CATCH_UP_PAUSE)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("standby unreachable for its status (%s)", type(exc).__name__)
        return StandbyStatus(state="unreachable")
    assert lag is not None
    in_recovery, seconds, lag_bytes, system_id = lag
    if system_id != row[1]:
        # Its LSNs are another cluster's: no lag to speak of, and never read.
        return StandbyStatus(state="other_cluster")
    if not in_recovery:
        return StandbyStatus(state="not_in_recovery")
    seconds = float(seconds or 0.0)
    lagging = seconds > services.settings.standby_max_lag_seconds
    return StandbyStatus(
        state="lagging" if lagging else "ok", lag_seconds=seconds, lag_bytes=int(lag_bytes or 0)
    )


async def stop_standby_reads(services: Services, export_id: str) -> None:
    """Cancel an export's statements on the standby (a cancel or a rescue; best effort: the
    attempt's worker also cancels its own statement when its task is told to stop)."""
    if services.standby_pool is None:
        return
    try:
        async with services.standby_pool.connection(timeout=CHECK_TIMEOUT) as conn:
            await conn.execute(
                q("export_cancel_backends"), {"app": copy_application_name(export_id)}
            )
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("could not reach the standby to stop an export's reads (%s)", exc)


def skip_standby(
    settings: Settings, as_of_lsn: str | None, conflicts: int
) -> tuple[bool, str | None]:
    """Whether an export attempt reads the primary without trying the standby, and the
    fallback to record: none without a standby (or a click position to wait for), and
    `conflicts` once recovery conflicts have cut short enough attempts."""
    if settings.export_database_url is None or as_of_lsn is None:
        return True, None
    if conflicts >= STANDBY_CONFLICTS_BEFORE_PRIMARY:
        return True, "conflicts"
    return False, None


async def replay_not_reached(
    services: Services,
    conn: psycopg.Connection[Any],
    lsn: str,
    deadline: float,
    *,
    waiting: Callable[[], Awaitable[None]],
) -> str | None:
    """None once the standby behind the blocking `conn` may be read for an export clicked at
    WAL position `lsn`; otherwise why not (the standby_fallback recorded). `waiting` is
    awaited about once a second while replay is behind: waiting is the attempt's work for
    now, not a stall."""
    async with services.pool.connection() as primary:
        cur = await primary.execute(q("cluster_system_identifier"))
        row = await cur.fetchone()
    assert row is not None
    cluster = row[0]
    last_mark = time.monotonic()
    try:
        while True:
            in_recovery, replayed, system_id = await in_thread(
                conn, fetch_one, conn, q("standby_replayed"), {"lsn": lsn}
            )
            if system_id != cluster:
                # A standby of another primary: its rows are another database's,
                # whatever its replay position says.
                return "other_cluster"
            if not in_recovery:
                return "not_in_recovery"
            if replayed:
                return None
            if time.monotonic() >= deadline:
                return "lagging"
            if time.monotonic() - last_mark >= 1.0:
                last_mark = time.monotonic()
                await waiting()
            await asyncio.sleep(STANDBY_POLL_SECONDS)
    except (psycopg.OperationalError, OSError):
        return "unreachable"
