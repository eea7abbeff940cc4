"""The ticker: at a given instant, take every schedule whose tick has come, exactly once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from ticketexport import audit
from ticketexport.db import q
from ticketexport.domain import cadence as cadences
from ticketexport.exports import service as exports
from ticketexport.exports import store
from ticketexport.exports.frozen import FrozenRequest, MalformedRequest, Requester
from ticketexport.schedules.service import cadence_of, owner_now, run_request

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)

# Schedules taken by one call at most: a backlog is worked off over the next calls.
MAX_PER_CALL = 200


@dataclasses.dataclass(frozen=True)
class Taken:
    """What one tick of one schedule came to."""

    schedule_id: int
    tick: dt.datetime
    outcome: str  # run | skipped | permission_revoked
    export_id: str | None


async def run_due(services: Services, now: dt.datetime | None = None) -> list[Taken]:
    """Take the due tick of every schedule whose next tick is at or before `now` (the
    database's clock when None). A schedule late by several ticks (an outage) runs once,
    for the latest of them. One transaction per schedule: a worker killed mid-way leaves
    the schedule as it was, for the next call on any worker."""
    zone = zoneinfo.ZoneInfo(services.settings.timezone)
    taken: list[Taken] = []
    async with services.pool.connection() as conn:
        if now is None:
            cur = await conn.execute(q("db_now"))
            row = await cur.fetchone()
            assert row is not None
            now = row[0]
        assert now is not None
        for _ in range(MAX_PER_CALL):
            async with conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(q("schedule_due"), {"now": now})
                schedule = await cur.fetchone()
                if schedule is None:
                    break
                result = await _take(services, conn, schedule, zone, now)
            if result is not None:
                taken.append(result)
                log.info(
                    "schedule tick taken",
                    extra={
                        "event": "schedule_tick",
                        "schedule_id": result.schedule_id,
                        "outcome": result.outcome,
                        "export_id": result.export_id,
                    },
                )
    return taken


async def _take(
    services: Services,
    conn: psycopg.AsyncConnection[Any],
    schedule: dict[str, Any],
    zone: zoneinfo.ZoneInfo,
    now: dt.datetime,
) -> Taken | None:
    cadence = cadence_of(schedule)
    tick = cadences.latest_tick(cadence, zone, now)
    schedule_id = int(schedule["id"])
    try:
        frozen = FrozenRequest.from_json(schedule["request"])
    except MalformedRequest:
        # Not a row this code wrote: stop it rather than fail on it at every call.
        log.exception("a schedule's saved request is malformed", extra={"schedule_id": schedule_id})
        await conn.execute(
            q("schedule_pause"), {"id": schedule_id, "reason": "its saved request cannot be read"}
        )
        return None
    await conn.execute(
        q("schedule_advance"),
        {"id": schedule_id, "tick": tick, "next_tick": cadences.next_tick(cadence, zone, now)},
    )
    cur = await conn.execute(
        q("schedule_tick_claim"), {"schedule_id": schedule_id, "tick": tick, "outcome": "run"}
    )
    if await cur.fetchone() is None:
        # Taken already (a clock set back, a resumed schedule): never twice.
        return None
    active = await store.active_run(conn, schedule_id)
    if active is not None:
        await _record(conn, schedule_id, tick, "skipped", None)
        await audit.record(
            conn,
            "schedule.tick_skipped",
            actor_id=None,
            actor_email=None,
            details={
                "schedule_id": schedule_id,
                "tick": tick.isoformat(),
                "running_export_id": active,
            },
        )
        return Taken(schedule_id, tick, "skipped", None)
    owner, allowed = await owner_now(conn, schedule)
    cur = await conn.execute(q("user_role_names"), {"user_id": schedule["owner_id"]})
    roles = [str(r[0]) for r in await cur.fetchall()]
    if owner is not None:
        owner = dataclasses.replace(owner, email=frozen.requester.email)
        frozen = await run_request(conn, schedule, Requester.of(owner, roles))
    export_id = await exports.insert_scheduled_run(
        services,
        conn,
        frozen=frozen,
        schedule_id=schedule_id,
        tick=tick,
        deliver=schedule["destination"] is not None,
        notify=bool(schedule["notify"]),
        actor=None,
    )
    if allowed:
        await _record(conn, schedule_id, tick, "run", export_id)
        return Taken(schedule_id, tick, "run", export_id)
    # The run is recorded and fails at once, so the owner sees why on its status page.
    await exports.fail_unstarted(conn, export_id, "permission_revoked", "schedule owner's rights")
    await pause_for_revoked(conn, schedule_id, export_id)
    await _record(conn, schedule_id, tick, "permission_revoked", export_id)
    return Taken(schedule_id, tick, "permission_revoked", export_id)


async def pause_for_revoked(
    conn: psycopg.AsyncConnection[Any], schedule_id: int, export_id: str
) -> None:
    """Pause a schedule whose run failed for its owner's rights, and audit it."""
    cur = await conn.execute(
        q("schedule_pause"),
        {"id": schedule_id, "reason": "the owner's rights no longer allow it"},
    )
    if await cur.fetchone() is None:
        return
    await audit.record_for_requester(
        conn,
        "schedule.paused",
        export_id=export_id,
        details={"schedule_id": schedule_id, "reason": "permission_revoked"},
    )


async def _record(
    conn: psycopg.AsyncConnection[Any],
    schedule_id: int,
    tick: dt.datetime,
    outcome: str,
    export_id: str | None,
) -> None:
    await conn.execute(
        q("schedule_tick_record"),
        {"schedule_id": schedule_id, "tick": tick, "outcome": outcome, "export_id": export_id},
    )
