"""How far the hot standby that exports read from is behind the primary, for operators."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

import psycopg

from ticketexport.db import q
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
