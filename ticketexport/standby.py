"""How far the hot standby that exports read from is behind the primary, for operators."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import psycopg

from ticketexport.db import q
from ticketexport.domain.exports import copy_application_name

if TYPE_CHECKING:
    from ticketexport.bootstrap import Services

log = logging.getLogger(__name__)

# A report must answer quickly even when the standby hangs.
CHECK_TIMEOUT = 3.0


@dataclasses.dataclass(frozen=True)
class StandbyStatus:
    """`state` is ok, lagging, unreachable or not_in_recovery (promoted, or not a standby)."""

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
            cur = await conn.execute(q("standby_lag"), {"lsn": row[0]})
            lag = await cur.fetchone()
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("standby unreachable for its status (%s)", type(exc).__name__)
        return StandbyStatus(state="unreachable")
    assert lag is not None
    in_recovery, seconds, lag_bytes = lag
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
