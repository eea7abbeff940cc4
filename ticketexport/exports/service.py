"""Export use cases behind the web routes: request, retry, cancel, read, download access."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ticketexport import audit, events
from ticketexport.db import q
from ticketexport.domain import exports as rules
from ticketexport.domain.exports import Status
from ticketexport.domain.permissions import Permission, can_download, can_export
from ticketexport.views import model as view_model
from ticketexport.views import service as view_service

log = logging.getLogger(__name__)

REQUEST_VERSION = 1
TASK_NAME = "ticketexport:export_tickets"
QUEUE = "exports"
DOUBLE_SUBMIT_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who acts, as the web layer loaded them for this request."""

    id: int
    email: str
    is_admin: bool
    permissions: Permission

    @property
    def actor(self) -> view_model.Actor:
        return view_model.Actor(
            user_id=self.id, is_admin=self.is_admin, permissions=int(self.permissions)
        )


class ExportDenied(Exception):
    """The user may not do this; the message is safe to show (HTTP 403)."""


class ExportNotFound(LookupError):
    """No such export, or not visible to the user (HTTP 404)."""


class ExportConflict(Exception):
    """The export is in a state that does not allow the action (HTTP 409)."""


class ExportGone(Exception):
    """The export's retention is over and its file is (or is about to be) deleted (HTTP 410)."""


class ExportNotReady(LookupError):
    """The export has no file yet (HTTP 404)."""


DOWNLOAD_DENIED = (
    "Downloading requires an administrator with the Import / Export Tickets permission."
)


@dataclasses.dataclass(frozen=True)
class Requested:
    export_id: str
    deduplicated: bool


async def _audit(
    conn: psycopg.AsyncConnection[Any],
    action: str,
    user: Requester,
    *,
    client_ip: str | None,
    export_id: str | None,
    details: Mapping[str, Any],
) -> None:
    """An audit row for something this user did, on the caller's connection."""
    await audit.record(
        conn,
        action,
        actor_id=user.id,
        actor_email=user.email,
        client_ip=client_ip,
        export_id=export_id,
        details=details,
    )


def may_see(user: Requester, export: Mapping[str, Any]) -> bool:
    """Its requester, and admins with the export permission."""
    return export["requester_id"] == user.id or can_download(
        is_admin=user.is_admin, permissions=user.permissions
    )


def frozen_request(
    resolved: view_service.ResolvedView,
    request: view_service.ListRequest,
    user: Requester,
    roles: list[str],
    timezone: str,
    *,
    actor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the worker needs, as it is at the click, in plain JSON."""
    return {
        "version": REQUEST_VERSION,
        "view": {
            "key": resolved.key,
            "name": resolved.name,
            "builtin": resolved.builtin,
            "saved_view_id": resolved.saved_view_id,
            "definition": view_model.definition_to_json(resolved.definition),
        },
        "q": request.q,
        "sort": request.sort,
        "filters": dict(sorted(request.filters.items())),
        "timezone": timezone,
        # The view's meaning ("my tickets") follows this user, even on a retry by an admin.
        "actor": dict(actor)
        if actor is not None
        else {"id": user.id, "is_admin": user.is_admin, "permissions": int(user.permissions)},
        "requester": {
            "id": user.id,
            "email": user.email,
            "is_admin": user.is_admin,
            "permissions": int(user.permissions),
            "roles": roles,
        },
    }


def _fingerprint(frozen: Mapping[str, Any]) -> str:
    return rules.fingerprint(
        {key: frozen[key] for key in ("view", "q", "sort", "filters", "timezone", "actor")}
    )


async def _roles(conn: psycopg.AsyncConnection[Any], user_id: int) -> list[str]:
    cur = await conn.execute(q("user_role_names"), {"user_id": user_id})
    return [str(row[0]) for row in await cur.fetchall()]


async def _insert_and_defer(
    conn: psycopg.AsyncConnection[Any],
    *,
    user: Requester,
    frozen: dict[str, Any],
    retention_hours: float,
    retry_of: str | None,
    client_ip: str | None,
) -> Requested:
    """Insert the export row and its procrastinate job in the caller's transaction."""
    fingerprint = _fingerprint(frozen)
    # Serialise one user's requests so two identical clicks cannot both insert.
    await conn.execute(q("export_request_lock"), {"user_id": user.id})
    if retry_of is None:
        cur = await conn.execute(
            q("export_find_duplicate"),
            {
                "user_id": user.id,
                "fingerprint": fingerprint,
                "seconds": DOUBLE_SUBMIT_SECONDS,
            },
        )
        existing = await cur.fetchone()
        if existing is not None:
            return Requested(export_id=str(existing[0]), deduplicated=True)
    cur = await conn.execute(
        q("export_insert"),
        {
            "requester_id": user.id,
            "request": Jsonb(frozen),
            "view_name": frozen["view"]["name"],
            "fingerprint": fingerprint,
            "retention": dt.timedelta(hours=retention_hours),
            "retry_of": retry_of,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    export_id = str(row[0])
    cur = await conn.execute(
        q("export_defer_job"),
        {"queue": QUEUE, "task": TASK_NAME, "args": Jsonb({"export_id": export_id})},
    )
    job = await cur.fetchone()
    assert job is not None
    await conn.execute(q("export_set_job_id"), {"id": export_id, "job_id": int(job[0])})
    await _audit(
        conn,
        "export.retried" if retry_of else "export.requested",
        user,
        client_ip=client_ip,
        export_id=export_id,
        details={
            "view": frozen["view"]["key"],
            "view_name": frozen["view"]["name"],
            "q": frozen["q"],
            "sort": frozen["sort"],
            "filters": frozen["filters"],
            "procrastinate_job_id": int(job[0]),
            **({"retry_of": retry_of} if retry_of else {}),
        },
    )
    return Requested(export_id=export_id, deduplicated=False)


async def _deny(
    pool: AsyncConnectionPool[Any],
    user: Requester,
    action: str,
    reason: str,
    client_ip: str | None,
    export_id: str | None = None,
) -> None:
    async with pool.connection() as conn:
        await _audit(
            conn,
            "export.denied",
            user,
            client_ip=client_ip,
            export_id=export_id,
            details={"action": action, "reason": reason},
        )


async def request_export(
    pool: AsyncConnectionPool[Any],
    user: Requester,
    request: view_service.ListRequest,
    *,
    timezone: str,
    retention_hours: float,
    client_ip: str | None,
) -> Requested:
    """The Export click: freeze the request, insert the row and defer the job atomically."""
    if not can_export(user.permissions):
        await _deny(pool, user, "request", "missing_permission", client_ip)
        raise ExportDenied("Exporting requires the Import / Export Tickets permission.")
    try:
        async with pool.connection() as conn, conn.transaction():
            resolved = await view_service.check_request(conn, request, user.actor)
            roles = await _roles(conn, user.id)
            frozen = frozen_request(resolved, request, user, roles, timezone)
            return await _insert_and_defer(
                conn,
                user=user,
                frozen=frozen,
                retention_hours=retention_hours,
                retry_of=None,
                client_ip=client_ip,
            )
    except view_model.ViewNotFound:
        await _deny(pool, user, "request", "view_not_found", client_ip)
        raise
    except view_model.ViewInputError as exc:
        await _deny(pool, user, "request", f"invalid: {exc}"[:200], client_ip)
        raise


async def load_export(conn: psycopg.AsyncConnection[Any], export_id: str) -> dict[str, Any] | None:
    try:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("export_get"), {"id": export_id})
        return await cur.fetchone()
    except psycopg.errors.InvalidTextRepresentation:
        return None


async def visible_export(
    conn: psycopg.AsyncConnection[Any], user: Requester, export_id: str
) -> dict[str, Any]:
    """The export row if the user may see it; ExportNotFound otherwise (no existence leak)."""
    export = await load_export(conn, export_id)
    if export is None or not may_see(user, export):
        raise ExportNotFound(export_id)
    return export


async def retry_export(
    pool: AsyncConnectionPool[Any],
    user: Requester,
    export_id: str,
    *,
    retention_hours: float,
    client_ip: str | None,
) -> Requested:
    """A new export of the same frozen view, as of this click, linked to the original."""
    async with pool.connection() as conn:
        await visible_export(conn, user, export_id)  # not visible: 404, nothing audited
    if not can_export(user.permissions):
        # Audited on its own connection: a denial must outlive the refused request.
        await _deny(pool, user, "retry", "missing_permission", client_ip, export_id)
        raise ExportDenied("Retrying requires the Import / Export Tickets permission.")
    async with pool.connection() as conn, conn.transaction():
        original = await visible_export(conn, user, export_id)
        if original["status"] not in (Status.FAILED, Status.CANCELLED):
            raise ExportConflict("Only failed or cancelled exports can be retried.")
        previous = original["request"]
        roles = await _roles(conn, user.id)
        frozen = dict(previous)
        frozen["requester"] = {
            "id": user.id,
            "email": user.email,
            "is_admin": user.is_admin,
            "permissions": int(user.permissions),
            "roles": roles,
        }
        return await _insert_and_defer(
            conn,
            user=user,
            frozen=frozen,
            retention_hours=retention_hours,
            retry_of=export_id,
            client_ip=client_ip,
        )


async def cancel_export(
    pool: AsyncConnectionPool[Any], user: Requester, export_id: str, *, client_ip: str | None
) -> None:
    """Stop a queued or running export; the worker's COPY and upload are cut short."""
    async with pool.connection() as conn:
        async with conn.transaction():
            export = await visible_export(conn, user, export_id)
            cur = await conn.execute(q("export_cancel"), {"id": export_id})
            if await cur.fetchone() is None:
                raise ExportConflict("This export has already finished.")
            if export["procrastinate_job_id"] is not None:
                # abort=true: a running job's worker is told at once and cancels its task
                await conn.execute(
                    q("procrastinate_abort_job"), {"job_id": export["procrastinate_job_id"]}
                )
            await _audit(
                conn,
                "export.cancelled",
                user,
                client_ip=client_ip,
                export_id=export_id,
                details={
                    "previous_status": export["status"],
                    "rows_done": export["rows_done"],
                    "attempt": export["attempt"],
                },
            )
            await events.publish(conn, export_id)
        # Belt and braces: whatever the worker is doing, its COPY stops now.
        await conn.execute(q("export_cancel_backends"), {"app": copy_application_name(export_id)})


def copy_application_name(export_id: str) -> str:
    """application_name of the connection that runs an export's COPY (for pg_stat_activity)."""
    return f"ticketexport-export:{export_id}"


async def authorize_download(
    pool: AsyncConnectionPool[Any],
    user: Requester,
    export_id: str,
    *,
    auto: bool,
    client_ip: str | None,
) -> dict[str, Any] | None:
    """The export row when the user may download its file now, checked at this moment.

    None means the automatic download already happened (another tab or browser): nothing
    to send. Raises ExportNotFound, ExportDenied (audited), ExportGone or ExportNotReady.
    """
    async with pool.connection() as conn:
        export = await visible_export(conn, user, export_id)
        allowed = download_allowed(user)
        if not allowed:
            await _audit(
                conn,
                "export.download_denied",
                user,
                client_ip=client_ip,
                export_id=export_id,
                details={"reason": "not_admin_with_permission"},
            )
    if not allowed:
        # Raised outside the block: a pool connection rolls back when left by an exception,
        # and the denial's audit row must stay.
        raise ExportDenied(DOWNLOAD_DENIED)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT now()")
        now = await cur.fetchone()
        assert now is not None
        if expired(export, now[0]):
            raise ExportGone("This export has expired and its file was deleted.")
        if export["status"] != Status.COMPLETED or export["object_key"] is None:
            raise ExportNotReady("This export has no file yet.")
        if auto:
            cur = await conn.execute(
                q("export_claim_auto_download"), {"id": export_id, "user_id": user.id}
            )
            if await cur.fetchone() is None:
                return None
    return export


async def record_download(
    pool: AsyncConnectionPool[Any],
    user: Requester,
    export_id: str,
    *,
    client_ip: str | None,
    details: Mapping[str, Any],
) -> None:
    async with pool.connection() as conn:
        await _audit(
            conn,
            "export.downloaded",
            user,
            client_ip=client_ip,
            export_id=export_id,
            details=details,
        )


def download_allowed(user: Requester) -> bool:
    return can_download(is_admin=user.is_admin, permissions=user.permissions)


def expired(export: Mapping[str, Any], now: dt.datetime) -> bool:
    return bool(export["expires_at"] <= now) or export["status"] == Status.EXPIRED
