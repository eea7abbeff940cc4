"""Schedule use cases behind the pages: create, list, read, pause, resume, run now, delete."""

from __future__ import annotations

import dataclasses
import datetime as dt
import unicodedata
import zoneinfo
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ticketexport import audit
from ticketexport.db import q
from ticketexport.domain import cadence as cadences
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Conflict, Denied, Invalid, NotFound, TooMany
from ticketexport.domain.exports import slugify
from ticketexport.exports import formats, store
from ticketexport.exports import service as exports
from ticketexport.exports.frozen import FrozenRequest, Requester, Since
from ticketexport.views import model as view_model
from ticketexport.views import service as view_service

if TYPE_CHECKING:
    from ticketexport.services import Services

MODES = ("full", "changes")
# Modes the creation form offers.
AVAILABLE_MODES = MODES
MAX_NAME = 100
RECENT_RUNS = 20


def modes() -> list[tuple[str, str]]:
    """The modes the creation form offers, with their labels."""
    labels = {"full": "Full file", "changes": "Changes since the previous run"}
    return [(mode, labels[mode]) for mode in AVAILABLE_MODES]


class ScheduleNotFound(NotFound):
    """No such schedule, or not the user's to see (HTTP 404)."""

    default_message = "That schedule does not exist or you cannot see it."


class NoCompletedRun(NotFound):
    """The schedule has no completed run whose file is still there (HTTP 404)."""

    default_message = "This schedule has no completed run with a file to download yet."


class ScheduleDenied(Denied):
    """The user may not do this (HTTP 403)."""


class TooManySchedules(TooMany):
    """The owner has as many schedules as allowed (HTTP 429)."""

    link = ("/staff/schedules", "My schedules")

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} schedule{'s' if limit != 1 else ''}, the most allowed. "
            "Delete one and try again."
        )


@dataclasses.dataclass(frozen=True)
class ScheduleForm:
    """The schedule's own fields of the creation form, checked."""

    name: str
    cadence: cadences.Cadence
    mode: str
    destination: str | None
    notify: bool


def parse_form(fields: Mapping[str, str], settings: Any) -> ScheduleForm:
    """The schedule fields (name, cadence, every_minutes, minute, time, weekday, mode,
    destination, notify); Invalid naming the problem."""
    name = unicodedata.normalize("NFC", fields.get("name", "")).strip()
    if not name:
        raise Invalid("name must not be empty")
    if len(name) > MAX_NAME:
        raise Invalid(f"name is too long ({len(name)} characters, at most {MAX_NAME})")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise Invalid("name must not contain control or invisible characters")
    cadence = cadences.parse(fields, min_minutes=settings.schedule_min_minutes)
    mode = fields.get("mode", "") or "full"
    if mode not in MODES:
        raise Invalid("mode must be full or changes")
    destination = fields.get("destination", "") or None
    if destination is not None and settings.destination_url(destination) is None:
        raise Invalid("destination must be one of the destinations the operator configured")
    notify_raw = fields.get("notify", "")
    if notify_raw not in ("", "1"):
        raise Invalid("notify must be 1 or absent")
    notify = notify_raw == "1"
    if notify and not settings.mail_enabled:
        raise Invalid("notify is not available: mail is not configured")
    return ScheduleForm(
        name=name, cadence=cadence, mode=mode, destination=destination, notify=notify
    )


def cadence_of(row: Mapping[str, Any]) -> cadences.Cadence:
    """The cadence a schedule row holds."""
    return cadences.Cadence(
        kind=row["cadence"],
        every_minutes=row["every_minutes"],
        minute=row["minute"],
        time=row["at_time"],
        weekday=row["weekday"],
    )


async def run_request(
    conn: psycopg.AsyncConnection[Any], schedule: Mapping[str, Any], requester: Requester
) -> FrozenRequest:
    """What a run of the schedule exports, asked for by its owner now: the frozen request,
    and for a schedule of changes, since its latest completed run (or from the beginning,
    every row an upsert, before the first)."""
    frozen = FrozenRequest.from_json(schedule["request"]).with_requester(requester)
    if schedule["mode"] != "changes":
        return frozen
    since = await store.schedule_base(conn, int(schedule["id"])) or Since.beginning()
    return frozen.changes_since(since, requester)


def may_see(user: Actor, row: Mapping[str, Any]) -> bool:
    """Its owner, and admins with the export permission."""
    return row["owner_id"] == user.id or user.may_download


def may_list_everyones(user: Actor) -> bool:
    return user.may_download


def owner_may_run(owner: Actor | None, active: bool, destination: str | None) -> bool:
    """Whether the owner's rights, now, allow the schedule to run: active, with permission
    512, and an administrator as well when the file leaves the product."""
    if owner is None or not active or not owner.may_export:
        return False
    return destination is None or owner.is_admin


async def owner_now(
    conn: psycopg.AsyncConnection[Any], schedule: Mapping[str, Any]
) -> tuple[Actor | None, bool]:
    """The schedule's owner with their rights as they are now (None: no such user), and
    whether those rights allow the schedule to run (owner_may_run)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("user_access"), {"user_id": schedule["owner_id"]})
    access = await cur.fetchone()
    owner = (
        Actor(id=access["id"], is_admin=access["is_admin"], permissions=access["permissions"])
        if access
        else None
    )
    active = bool(access and access["is_active"])
    return owner, owner_may_run(owner, active, schedule["destination"])


async def _deny(
    services: Services, user: Actor, action: str, reason: str, client_ip: str | None, **more: Any
) -> None:
    """An audit row for a refusal, on its own connection: it must outlive the request."""
    async with services.pool.connection() as conn:
        await audit.record_by(
            conn,
            "schedule.denied",
            user,
            client_ip=client_ip,
            details={"action": action, "reason": reason, **more},
        )


def _definition(row: Mapping[str, Any], form: ScheduleForm | None = None) -> dict[str, Any]:
    """What an audit row says about a schedule."""
    if form is not None:
        return {
            "name": form.name,
            "cadence": form.cadence.describe(),
            "mode": form.mode,
            "destination": form.destination,
            "notify": form.notify,
        }
    return {
        "name": row["name"],
        "cadence": cadence_of(row).describe(),
        "mode": row["mode"],
        "destination": row["destination"],
        "notify": row["notify"],
    }


async def create_schedule(
    services: Services,
    user: Actor,
    request: view_service.ListRequest,
    *,
    export_format: formats.ExportFormat,
    fields: Mapping[str, str],
    client_ip: str | None,
) -> int:
    """The Schedule click: freeze the request as an export would, and save the schedule."""
    settings = services.settings
    if not user.may_export:
        await _deny(services, user, "create", "missing_permission", client_ip)
        raise ScheduleDenied("Scheduling exports requires the Import / Export Tickets permission.")
    try:
        form = parse_form(fields, settings)
    except Invalid as exc:
        await _deny(services, user, "create", f"invalid: {exc}"[:200], client_ip)
        raise
    if form.destination is not None and not user.may_download:
        await _deny(services, user, "create", "destination_needs_admin", client_ip)
        raise ScheduleDenied(
            "Delivering to a destination requires an administrator with the Import / Export "
            "Tickets permission."
        )
    zone = zoneinfo.ZoneInfo(settings.timezone)
    try:
        async with services.pool.connection() as conn, conn.transaction():
            resolved = await view_service.check_request(conn, request, user)
            cur = await conn.execute(q("user_role_names"), {"user_id": user.id})
            roles = [str(row[0]) for row in await cur.fetchall()]
            frozen = exports.frozen_request(
                resolved, request, user, roles, settings.timezone, export_format
            )
            await conn.execute(q("schedule_owner_lock"), {"owner_id": user.id})
            limit = settings.max_schedules_per_user
            if limit:
                cur = await conn.execute(q("schedule_count_for_owner"), {"owner_id": user.id})
                counted = await cur.fetchone()
                if counted is not None and int(counted[0]) >= limit:
                    raise TooManySchedules(limit)
            now = await _db_now(conn)
            cadence = form.cadence
            cur = await conn.execute(
                q("schedule_insert"),
                {
                    "owner_id": user.id,
                    "name": form.name,
                    "slug": slugify(form.name, 60),
                    "request": Jsonb(frozen.to_json()),
                    "view_name": frozen.view.name,
                    "cadence": cadence.kind,
                    "every_minutes": cadence.every_minutes,
                    "minute": cadence.minute,
                    "at_time": cadence.time,
                    "weekday": cadence.weekday,
                    "mode": form.mode,
                    "destination": form.destination,
                    "notify": form.notify,
                    "next_tick": cadences.next_tick(cadence, zone, now),
                },
            )
            row = await cur.fetchone()
            assert row is not None
            schedule_id = int(row[0])
            await audit.record_by(
                conn,
                "schedule.created",
                user,
                client_ip=client_ip,
                details={
                    "schedule_id": schedule_id,
                    **_definition({}, form),
                    "view": frozen.view.key,
                    "view_name": frozen.view.name,
                    "q": frozen.q,
                    "sort": frozen.sort,
                    "filters": dict(frozen.filters),
                    "format": frozen.format,
                },
            )
            return schedule_id
    except view_model.ViewNotFound:
        await _deny(services, user, "create", "view_not_found", client_ip)
        raise
    except view_model.ViewInputError as exc:
        await _deny(services, user, "create", f"invalid: {exc}"[:200], client_ip)
        raise
    except TooManySchedules:
        await _deny(services, user, "create", "schedule_limit", client_ip)
        raise


async def _db_now(conn: psycopg.AsyncConnection[Any]) -> dt.datetime:
    cur = await conn.execute(q("db_now"))
    row = await cur.fetchone()
    assert row is not None
    value: dt.datetime = row[0]
    return value


async def list_schedules(
    conn: psycopg.AsyncConnection[Any], *, owner_id: int | None
) -> list[dict[str, Any]]:
    """One owner's schedules, or everyone's (None; the caller checks may_list_everyones)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("schedule_list"), {"owner_id": owner_id})
    return await cur.fetchall()


async def visible_schedule(
    conn: psycopg.AsyncConnection[Any], user: Actor, schedule_id: int
) -> dict[str, Any]:
    """The schedule row if the user may see it; ScheduleNotFound otherwise."""
    return await _visible_row(conn, user, q("schedule_get"), schedule_id)


async def latest_file(
    services: Services, user: Actor, schedule_id: int, *, client_ip: str | None
) -> str:
    """The export id of the schedule's latest completed run whose file is still there, for
    a user who may see the schedule. ScheduleNotFound (audited, as a refused download is)
    or NoCompletedRun otherwise; the download's own rights are the file's to check."""
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("schedule_get"), {"id": schedule_id})
        row = await cur.fetchone()
        visible = row is not None and may_see(user, row)
        found = await store.schedule_latest_file(conn, schedule_id) if visible else None
    if not visible:
        await _deny(services, user, "latest", "not_found", client_ip, schedule_id=schedule_id)
        raise ScheduleNotFound()
    if found is None:
        raise NoCompletedRun()
    return found


async def recent_runs(
    conn: psycopg.AsyncConnection[Any], schedule_id: int
) -> tuple[list[store.ScheduleRun], list[dict[str, Any]]]:
    """The schedule's recent runs, and its recent ticks skipped for a run still going."""
    runs = await store.schedule_runs(conn, schedule_id, RECENT_RUNS)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        q("schedule_skipped_ticks"), {"schedule_id": schedule_id, "limit": RECENT_RUNS}
    )
    return runs, await cur.fetchall()


async def _locked_visible(
    conn: psycopg.AsyncConnection[Any], user: Actor, schedule_id: int
) -> dict[str, Any]:
    """The schedule row, locked to the end of the transaction, if the user may see it;
    ScheduleNotFound otherwise."""
    return await _visible_row(conn, user, q("schedule_lock"), schedule_id)


async def _visible_row(
    conn: psycopg.AsyncConnection[Any], user: Actor, statement: sql.SQL, schedule_id: int
) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(statement, {"id": schedule_id})
    row = await cur.fetchone()
    if row is None or not may_see(user, row):
        raise ScheduleNotFound()
    return row


async def change_schedule(
    services: Services, user: Actor, schedule_id: int, action: str, *, client_ip: str | None
) -> str | None:
    """pause, resume, run (one run now) or delete; the run's export id for `run`."""
    try:
        async with services.pool.connection() as conn, conn.transaction():
            row = await _locked_visible(conn, user, schedule_id)
            export_id: str | None = None
            if action == "pause":
                cur = await conn.execute(
                    q("schedule_pause"), {"id": schedule_id, "reason": "paused by a user"}
                )
                if await cur.fetchone() is None:
                    raise Conflict("This schedule is already paused.")
            elif action == "resume":
                if not user.may_export:
                    raise ScheduleDenied(
                        "Resuming a schedule requires the Import / Export Tickets permission."
                    )
                zone = zoneinfo.ZoneInfo(services.settings.timezone)
                now = await _db_now(conn)
                cur = await conn.execute(
                    q("schedule_resume"),
                    {
                        "id": schedule_id,
                        "next_tick": cadences.next_tick(cadence_of(row), zone, now),
                    },
                )
                if await cur.fetchone() is None:
                    raise Conflict("This schedule is not paused.")
            elif action == "run":
                export_id = await _run_now(services, conn, user, row, client_ip)
            elif action == "delete":
                await conn.execute(q("schedule_delete"), {"id": schedule_id})
            else:
                raise ValueError(action)
            await audit.record_by(
                conn,
                f"schedule.{'deleted' if action == 'delete' else action + 'd'}"
                if action != "run"
                else "schedule.run_requested",
                user,
                client_ip=client_ip,
                details={
                    "schedule_id": schedule_id,
                    "owner_id": row["owner_id"],
                    **_definition(row),
                    **({"export_id": export_id} if export_id else {}),
                },
            )
            return export_id
    except ScheduleNotFound:
        await _deny(services, user, action, "not_found", client_ip, schedule_id=schedule_id)
        raise
    except ScheduleDenied:
        await _deny(
            services, user, action, "missing_permission", client_ip, schedule_id=schedule_id
        )
        raise


async def _run_now(
    services: Services,
    conn: psycopg.AsyncConnection[Any],
    user: Actor,
    row: Mapping[str, Any],
    client_ip: str | None,
) -> str:
    """One run now, asked for by the owner or an admin: the owner's rights must allow it,
    and the clicker's too."""
    if not user.may_export:
        raise ScheduleDenied("Running a schedule requires the Import / Export Tickets permission.")
    owner, allowed = await owner_now(conn, row)
    if not allowed:
        raise Conflict("The schedule's owner no longer has the rights this schedule needs.")
    if await store.active_run(conn, int(row["id"])) is not None:
        raise Conflict("This schedule's previous run is still queued or running.")
    plain = await conn.execute(q("user_role_names"), {"user_id": row["owner_id"]})
    roles = [str(r[0]) for r in await plain.fetchall()]
    assert owner is not None
    recorded = FrozenRequest.from_json(row["request"])
    requester = Requester.of(dataclasses.replace(owner, email=recorded.requester.email), roles)
    frozen = await run_request(conn, row, requester)
    return await exports.insert_scheduled_run(
        services,
        conn,
        frozen=frozen,
        schedule_id=int(row["id"]),
        tick=None,
        deliver=row["destination"] is not None,
        notify=bool(row["notify"]),
        actor=user,
        client_ip=client_ip,
    )
