"""Export use cases behind the web routes: request, retry, cancel, read, download access."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg

from ticketexport import audit, events, jobqueue
from ticketexport.db import q
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Conflict, Denied, Gone, NotFound, TooMany
from ticketexport.domain.exports import Status, copy_application_name
from ticketexport.exports import formats, manifest, store
from ticketexport.exports.frozen import FrozenActor, FrozenRequest, FrozenView, Requester, Since
from ticketexport.exports.store import Export, ExportState
from ticketexport.standby import stop_standby_reads
from ticketexport.views import model as view_model
from ticketexport.views import service as view_service

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)

__all__ = [
    "DOWNLOAD_DENIED",
    "ExportConflict",
    "ExportDenied",
    "ExportGone",
    "ExportNotFound",
    "ExportNotReady",
    "FileGone",
    "Requested",
    "TooManyExports",
    "authorize_download",
    "cancel_export",
    "copy_application_name",
    "expired",
    "export_manifest",
    "fail_unstarted",
    "frozen_request",
    "insert_scheduled_run",
    "list_exports",
    "list_own_exports",
    "may_list_everyones",
    "may_see",
    "record_download",
    "request_changes",
    "request_export",
    "retry_export",
    "running_count",
    "visible_export",
    "workers_seen",
]

DOUBLE_SUBMIT_SECONDS = 10


class ExportDenied(Denied):
    """The user may not do this (HTTP 403)."""


class ExportNotFound(NotFound):
    """No such export, or not visible to the user (HTTP 404)."""

    default_message = "That export does not exist or you cannot see it."


class ExportConflict(Conflict):
    """The export is in a state that does not allow the action (HTTP 409)."""


class ExportGone(Gone):
    """The export's retention is over and its file is (or is about to be) deleted (HTTP 410)."""

    default_message = "This export has expired and its file was deleted."


class FileGone(ExportGone):
    """The export completed, but its file is gone from the store, or is not the file that
    was recorded (HTTP 410): never served, whatever the store holds under its key."""

    default_message = (
        "This export's file is no longer available. Request the export again for a new file."
    )


class ExportNotReady(NotFound):
    """The export has no file yet (HTTP 404)."""

    default_message = "This export has no file yet."


class TooManyExports(TooMany):
    """The requester already has as many exports queued or running as allowed (HTTP 429)."""

    link = ("/staff/exports", "My exports")

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} export{'s' if limit != 1 else ''} queued or running, "
            "the most allowed at once. Wait for one to finish, or cancel one, and try again."
        )


DOWNLOAD_DENIED = (
    "Downloading requires an administrator with the Import / Export Tickets permission."
)


@dataclasses.dataclass(frozen=True)
class Requested:
    export_id: str
    deduplicated: bool


def may_see(user: Actor, export: ExportState) -> bool:
    """Its requester, and admins with the export permission."""
    return export.requester_id == user.id or user.may_download


def may_list_everyones(user: Actor) -> bool:
    """Everyone's exports are listed for those who may see (and download) any export."""
    return user.may_download


async def list_exports(
    conn: psycopg.AsyncConnection[Any],
    *,
    requester_id: int | None,
    before_time: dt.datetime | None,
    before_id: str | None,
    limit: int,
) -> list[Export]:
    """Up to `limit` exports requested before the cursor, newest first: one requester's, or
    everyone's (None; the caller checks may_list_everyones)."""
    return await store.page(
        conn, requester_id=requester_id, before_time=before_time, before_id=before_id, limit=limit
    )


async def running_count(conn: psycopg.AsyncConnection[Any], user_id: int) -> int:
    """The user's queued and running exports (one indexed count)."""
    return await store.running_count(conn, user_id)


async def workers_seen(conn: psycopg.AsyncConnection[Any], seconds: float) -> bool:
    """Whether any worker's heartbeat is recent: a queued export will be picked up."""
    cur = await conn.execute(q("live_workers"), {"seconds": seconds})
    row = await cur.fetchone()
    return bool(row and row[0] > 0)


def frozen_request(
    resolved: view_service.ResolvedView,
    request: view_service.ListRequest,
    user: Actor,
    roles: list[str],
    timezone: str,
    export_format: formats.ExportFormat,
) -> FrozenRequest:
    """Everything the worker needs, as it is at the click."""
    return FrozenRequest(
        view=FrozenView(
            key=resolved.key,
            name=resolved.name,
            builtin=resolved.builtin,
            saved_view_id=resolved.saved_view_id,
            definition=view_model.definition_to_json(resolved.definition),
        ),
        q=request.q,
        sort=request.sort,
        filters=dict(sorted(request.filters.items())),
        timezone=timezone,
        format=export_format.key,
        actor=FrozenActor(id=user.id, is_admin=user.is_admin, permissions=int(user.permissions)),
        requester=Requester.of(user, roles),
    )


async def _roles(conn: psycopg.AsyncConnection[Any], user_id: int) -> list[str]:
    cur = await conn.execute(q("user_role_names"), {"user_id": user_id})
    return [str(row[0]) for row in await cur.fetchall()]


async def _insert_and_defer(
    services: Services,
    conn: psycopg.AsyncConnection[Any],
    *,
    user: Actor,
    frozen: FrozenRequest,
    retry_of: str | None,
    client_ip: str | None,
) -> Requested:
    """Insert the export row and its procrastinate job in the caller's transaction."""
    # Serialise one user's requests so two identical clicks cannot both insert.
    await store.lock_requests(conn, user.id)
    if retry_of is None:
        existing = await store.find_duplicate(
            conn, user.id, frozen.fingerprint(), DOUBLE_SUBMIT_SECONDS
        )
        if existing is not None:
            await audit.record_by(
                conn,
                "export.deduplicated",
                user,
                client_ip=client_ip,
                export_id=existing,
                details={**_request_details(frozen), "within_s": DOUBLE_SUBMIT_SECONDS},
            )
            return Requested(export_id=existing, deduplicated=True)
    limit = services.settings.max_active_exports_per_user
    # Counted under the same lock: two racing clicks cannot both take the last place.
    if limit and await store.running_count(conn, user.id) >= limit:
        raise TooManyExports(limit)
    export_id = await store.insert(
        conn,
        requester_id=user.id,
        frozen=frozen,
        retention=dt.timedelta(hours=services.settings.retention_hours),
        retry_of=retry_of,
    )
    job_id = await jobqueue.defer_export(services.jobs, conn, export_id)
    await store.set_job(conn, export_id, job_id)
    await audit.record_by(
        conn,
        "export.retried" if retry_of else "export.requested",
        user,
        client_ip=client_ip,
        export_id=export_id,
        details={
            **_request_details(frozen),
            "procrastinate_job_id": job_id,
            **({"retry_of": retry_of} if retry_of else {}),
        },
    )
    return Requested(export_id=export_id, deduplicated=False)


async def insert_scheduled_run(
    services: Services,
    conn: psycopg.AsyncConnection[Any],
    *,
    frozen: FrozenRequest,
    schedule_id: int,
    tick: dt.datetime | None,
    deliver: bool,
    notify: bool,
    actor: Actor | None,
    client_ip: str | None = None,
) -> str:
    """A schedule's run: an ordinary export requested by its owner, recorded with the
    schedule and tick, in the caller's transaction. Neither the double-submit rule nor the
    active-export limit applies; the unique (schedule, tick) index refuses a second run of
    one tick. `actor` is who asked for a run by hand (None: the cadence did)."""
    export_id = await store.insert_scheduled(
        conn,
        requester_id=frozen.requester.id,
        frozen=frozen,
        retention=dt.timedelta(hours=services.settings.retention_hours),
        schedule_id=schedule_id,
        tick=tick,
        deliver=deliver,
        notify=notify,
    )
    job_id = await jobqueue.defer_export(services.jobs, conn, export_id)
    await store.set_job(conn, export_id, job_id)
    details = {
        **_request_details(frozen),
        "procrastinate_job_id": job_id,
        "schedule_id": schedule_id,
        "tick": tick.isoformat() if tick else None,
    }
    if actor is None:
        await audit.record_for_requester(
            conn, "export.requested", export_id=export_id, details=details
        )
    else:
        await audit.record_by(
            conn,
            "export.requested",
            actor,
            client_ip=client_ip,
            export_id=export_id,
            details=details,
        )
    return export_id


async def fail_unstarted(
    conn: psycopg.AsyncConnection[Any], export_id: str, code: str, reason: str
) -> None:
    """queued → failed before any attempt ran, audited in the requester's name."""
    if await store.fail_unclaimed(conn, export_id, code):
        await audit.record_for_requester(
            conn,
            "export.failed",
            export_id=export_id,
            details={"error_code": code, "reason": reason, "rows": 0, "attempt": 1},
        )
        await events.publish(conn, export_id)


def _request_details(frozen: FrozenRequest) -> dict[str, Any]:
    """What an audit row says about the view requested."""
    return {
        "view": frozen.view.key,
        "view_name": frozen.view.name,
        "q": frozen.q,
        "sort": frozen.sort,
        "filters": dict(frozen.filters),
        "format": frozen.format or formats.DEFAULT_FORMAT,
        **({"since": frozen.since.export_id} if frozen.since is not None else {}),
    }


async def _deny(
    services: Services,
    user: Actor,
    action: str,
    reason: str,
    client_ip: str | None,
    export_id: str | None = None,
) -> None:
    """An audit row for a refusal, on its own connection: it must outlive the request.

    Downloads have an action of their own (export.download_denied); every other refused
    action is export.denied and names the action."""
    if action == "download":
        kind, details = "export.download_denied", {"reason": reason}
    else:
        kind, details = "export.denied", {"action": action, "reason": reason}
    async with services.pool.connection() as conn:
        await audit.record_by(
            conn, kind, user, client_ip=client_ip, export_id=export_id, details=details
        )


async def request_export(
    services: Services,
    user: Actor,
    request: view_service.ListRequest,
    *,
    export_format: formats.ExportFormat = formats.CSV,
    client_ip: str | None,
) -> Requested:
    """The Export click: freeze the request, insert the row and defer the job atomically."""
    if not user.may_export:
        await _deny(services, user, "request", "missing_permission", client_ip)
        raise ExportDenied("Exporting requires the Import / Export Tickets permission.")
    try:
        async with services.pool.connection() as conn, conn.transaction():
            resolved = await view_service.check_request(conn, request, user)
            roles = await _roles(conn, user.id)
            frozen = frozen_request(
                resolved, request, user, roles, services.settings.timezone, export_format
            )
            return await _insert_and_defer(
                services, conn, user=user, frozen=frozen, retry_of=None, client_ip=client_ip
            )
    except view_model.ViewNotFound:
        await _deny(services, user, "request", "view_not_found", client_ip)
        raise
    except view_model.ViewInputError as exc:
        await _deny(services, user, "request", f"invalid: {exc}"[:200], client_ip)
        raise
    except TooManyExports:
        await _deny(services, user, "request", "active_export_limit", client_ip)
        raise


async def visible_export(conn: psycopg.AsyncConnection[Any], user: Actor, export_id: str) -> Export:
    """The export if the user may see it; ExportNotFound otherwise (no existence leak)."""
    export = await store.get(conn, export_id)
    if export is None or not may_see(user, export):
        raise ExportNotFound()
    return export


async def retry_export(
    services: Services, user: Actor, export_id: str, *, client_ip: str | None
) -> Requested:
    """A new export of the same frozen view, as of this click, linked to the original."""
    try:
        async with services.pool.connection() as conn:
            await visible_export(conn, user, export_id)
    except ExportNotFound:
        # Answered as if it did not exist, and recorded: someone tried.
        await _deny(services, user, "retry", "not_found", client_ip, export_id)
        raise
    if not user.may_export:
        await _deny(services, user, "retry", "missing_permission", client_ip, export_id)
        raise ExportDenied("Retrying requires the Import / Export Tickets permission.")
    try:
        async with services.pool.connection() as conn, conn.transaction():
            original = await visible_export(conn, user, export_id)
            if original.status not in (Status.FAILED, Status.CANCELLED):
                raise ExportConflict("Only failed or cancelled exports can be retried.")
            recorded = original.frozen
            if recorded is None:
                raise ExportConflict("This export's request cannot be repeated.")
            # A schedule's first run of changes is measured from the beginning: no base.
            if recorded.since is not None and recorded.since.export_id is not None:
                await _check_base(conn, recorded.since.export_id)
            frozen = recorded.with_requester(Requester.of(user, await _roles(conn, user.id)))
            return await _insert_and_defer(
                services, conn, user=user, frozen=frozen, retry_of=export_id, client_ip=client_ip
            )
    except TooManyExports:
        await _deny(services, user, "retry", "active_export_limit", client_ip, export_id)
        raise


async def _check_base(conn: psycopg.AsyncConnection[Any], export_id: str) -> Export:
    """The export a file of changes is to be measured from, held as a base (see
    store.lock_as_base); ExportConflict when it is no longer one."""
    expired = await store.lock_as_base(conn, export_id)
    base = await store.get(conn, export_id)
    if expired is None or base is None:
        raise ExportNotFound()
    if base.status == Status.EXPIRED or expired:
        raise ExportConflict(
            "The export the changes are measured from has expired, so they can no longer be "
            "worked out. Export the view again for a full file."
        )
    if base.status != Status.COMPLETED:
        raise ExportConflict(
            "Changes can only be exported since an export that has completed; "
            f"that one is {base.status}."
        )
    return base


async def request_changes(
    services: Services, user: Actor, export_id: str, *, client_ip: str | None
) -> Requested:
    """A new export of an earlier one's frozen request, as of this click, whose file holds
    the changes since that export's click. Only that export's requester may ask: its rows
    depend on who asked."""
    async with services.pool.connection() as conn:
        found = await store.get(conn, export_id)
    if found is None or found.requester_id != user.id:
        await _deny(services, user, "changes", "not_found", client_ip, export_id)
        raise ExportNotFound()
    if not user.may_export:
        await _deny(services, user, "changes", "missing_permission", client_ip, export_id)
        raise ExportDenied("Exporting requires the Import / Export Tickets permission.")
    try:
        async with services.pool.connection() as conn, conn.transaction():
            base = await _check_base(conn, export_id)
            if base.requester_id != user.id:
                raise ExportNotFound()
            if base.frozen is None or base.as_of_snapshot is None:
                raise ExportConflict(
                    "This export was made before the changes since an export could be "
                    "worked out. Export the view again for a full file."
                )
            since = Since(export_id=base.id, as_of=base.as_of, snapshot=str(base.as_of_snapshot))
            requester = Requester.of(user, await _roles(conn, user.id))
            return await _insert_and_defer(
                services,
                conn,
                user=user,
                frozen=base.frozen.changes_since(since, requester),
                retry_of=None,
                client_ip=client_ip,
            )
    except ExportConflict as exc:
        await _deny(services, user, "changes", f"conflict: {exc}"[:200], client_ip, export_id)
        raise
    except TooManyExports:
        await _deny(services, user, "changes", "active_export_limit", client_ip, export_id)
        raise


async def cancel_export(
    services: Services, user: Actor, export_id: str, *, client_ip: str | None
) -> None:
    """Stop a queued or running export; the worker's COPY and upload are cut short.

    The row and the job's abort request change in one transaction, so no crash can leave
    a cancelled export whose job still runs (or an aborted job whose export runs on).
    """
    async with services.pool.connection() as conn:
        async with conn.transaction():
            export = await visible_export(conn, user, export_id)
            if not await store.cancel(conn, export_id):
                raise ExportConflict("This export has already finished.")
            if export.procrastinate_job_id is not None:
                # A waiting job is cancelled; a running one's worker is told at commit and
                # cancels its task.
                await jobqueue.abort_job(services.jobs, conn, export.procrastinate_job_id)
            await audit.record_by(
                conn,
                "export.cancelled",
                user,
                client_ip=client_ip,
                export_id=export_id,
                details={
                    "previous_status": export.status.value,
                    "rows_done": export.rows_done,
                    "attempt": export.attempt,
                },
            )
            await events.publish(conn, export_id)
        # Belt and braces: whatever the worker is doing, its COPY stops now.
        await conn.execute(q("export_cancel_backends"), {"app": copy_application_name(export_id)})
    await stop_standby_reads(services, export_id)


async def authorize_download(
    services: Services,
    user: Actor,
    export_id: str,
    *,
    auto: bool,
    client_ip: str | None,
    head: bool = False,
) -> Export | None:
    """The export when the user may download its file now, checked at this moment.

    None means the automatic download already happened (another tab or browser): nothing
    to send. Raises ExportNotFound, ExportDenied, ExportGone or ExportNotReady; refusals
    are audited, for HEAD as for GET. `head` (a HEAD request) otherwise answers the same
    question with no effect: the automatic download is looked at but not used up (and the
    caller records no download).
    """
    try:
        async with services.pool.connection() as conn:
            export = await visible_export(conn, user, export_id)
    except ExportNotFound:
        await _deny(services, user, "download", "not_found", client_ip, export_id)
        raise
    if not user.may_download:
        await _deny(services, user, "download", "not_admin_with_permission", client_ip, export_id)
        raise ExportDenied(DOWNLOAD_DENIED)
    async with services.pool.connection() as conn:
        cur = await conn.execute(q("db_now"))
        now = await cur.fetchone()
        assert now is not None
        if expired(export, now[0]):
            raise ExportGone()
        if export.status != Status.COMPLETED or export.file is None:
            raise ExportNotReady()
        if export.file_lost_at is not None:
            raise FileGone()
        if auto and head:
            if export.auto_downloaded_at is not None or export.requester_id != user.id:
                return None
        elif auto and not await store.claim_auto_download(conn, export_id, user.id):
            return None
    return export


async def record_download(
    services: Services,
    user: Actor,
    export_id: str,
    *,
    client_ip: str | None,
    details: Mapping[str, Any],
) -> None:
    async with services.pool.connection() as conn:
        await audit.record_by(
            conn,
            "export.downloaded",
            user,
            client_ip=client_ip,
            export_id=export_id,
            details=details,
        )


def expired(export: ExportState, now: dt.datetime) -> bool:
    return export.expires_at <= now or export.status == Status.EXPIRED


async def list_own_exports(
    conn: psycopg.AsyncConnection[Any], user: Actor, *, after: str | None, limit: int
) -> list[Export]:
    """Up to `limit` of the user's exports, newest first, after export `after` (one of theirs:
    ExportNotFound otherwise, so a page cannot start from anyone else's export)."""
    before_time = before_id = None
    if after is not None:
        position = await store.get(conn, after)
        if position is None or position.requester_id != user.id:
            raise ExportNotFound()
        before_time, before_id = position.requested_at, position.id
    return await store.page(
        conn, requester_id=user.id, before_time=before_time, before_id=before_id, limit=limit
    )


async def export_manifest(
    services: Services, user: Actor, export_id: str, *, client_ip: str | None
) -> dict[str, Any]:
    """The manifest of a completed export, for those who may download its file now (the
    same checks and audited refusals as the download)."""
    export = await authorize_download(
        services, user, export_id, auto=False, client_ip=client_ip, head=True
    )
    assert export is not None  # never None unless an automatic download is asked for
    return manifest.build(export)
