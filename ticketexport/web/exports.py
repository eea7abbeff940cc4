"""Export pages and actions: the request, my exports, the status page, retry and cancel."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ticketexport.domain.actor import Actor
from ticketexport.domain.exports import Status
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats, service
from ticketexport.exports.frozen import FrozenRequest
from ticketexport.exports.store import Export
from ticketexport.views import registry
from ticketexport.views import service as view_service
from ticketexport.web import downloads, export_events, times
from ticketexport.web.downloads import export_id_of
from ticketexport.web.export_events import event_payload
from ticketexport.web.keys import USER, pool_of, services_of, settings_of
from ticketexport.web.render import PageError, posted_fields, render
from ticketexport.web.security import client_ip

PAGE_SIZE = 25


# --- request --------------------------------------------------------------------------


def requested_view(
    fields: dict[str, str],
) -> tuple[view_service.ListRequest, formats.ExportFormat]:
    """The list request and the file format a posted form names, taken out of `fields`. Its
    page is dropped: an export is the whole view, not one page."""
    fields.pop("page", None)
    export_format = formats.get(fields.pop("format", None))
    return view_service.parse_list_request(fields), export_format


async def export_post(request: web.Request) -> web.StreamResponse:
    """POST /staff/tickets/export: the list's fields plus csrf_token → 303 to the status page."""
    list_request, export_format = requested_view(await posted_fields(request))
    requested = await service.request_export(
        services_of(request),
        request[USER],
        list_request,
        export_format=export_format,
        client_ip=client_ip(request),
    )
    raise web.HTTPSeeOther(f"/staff/exports/{requested.export_id}")


# --- my exports -----------------------------------------------------------------------


async def export_list(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    query = request.query
    unknown = set(query) - {"all", "before"}
    if unknown:
        raise PageError(400, f"unknown parameter {sorted(unknown)[0][:40]!r}")
    everyone = query.get("all") == "1"
    if everyone and not service.may_list_everyones(user):
        raise PageError(
            403, "Only administrators with the export permission see everyone's exports."
        )
    before_time: dt.datetime | None = None
    before_id: str | None = None
    if query.get("before"):
        try:
            stamp, _, raw_id = query["before"].partition("_")
            before_time = dt.datetime.fromisoformat(stamp)
            before_id = str(uuid.UUID(raw_id))
            if before_time.tzinfo is None:
                raise ValueError("naive")
        except ValueError:
            raise PageError(400, "the page cursor 'before' is malformed") from None
    async with pool_of(request).connection() as conn:
        rows = await service.list_exports(
            conn,
            requester_id=None if everyone else user.id,
            before_time=before_time,
            before_id=before_id,
            limit=PAGE_SIZE + 1,
        )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    now = export_events.now()
    items = []
    for row in rows:
        payload = event_payload(row, can_download=user.may_download, now=now)
        items.append(
            {
                "row": row,
                "payload": payload,
                "format": formats.recorded(row.format),
                "active": row.active,
                "own": row.requester_id == user.id,
                "changes": may_export_changes(user, row, now),
            }
        )
    next_url = None
    if more and rows:
        last = rows[-1]
        cursor = f"{last.requested_at.isoformat()}_{last.id}"
        params = {"before": cursor, **({"all": "1"} if everyone else {})}
        next_url = "/staff/exports?" + urllib.parse.urlencode(params)
    return render(
        request,
        "exports.html",
        {
            "items": items,
            "everyone": everyone,
            "can_see_all": user.may_download,
            "next_url": next_url,
            "first_url": ("/staff/exports" + ("?all=1" if everyone else ""))
            if query.get("before")
            else None,
        },
    )


def duration(seconds: float) -> str:
    """A short human duration; the same wording export.js uses."""
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def timing(export: Export, payload: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """Elapsed time and, while running, the estimate of what is left (first paint)."""
    started = export.started_at
    if started is None:
        return ["", ""]
    active = payload["status"] in (Status.QUEUED, Status.RUNNING)
    end = now if active else (export.finished_at or now)
    elapsed = (end - started).total_seconds()
    percent = payload["percent"]
    eta = ""
    if payload["status"] == Status.RUNNING and percent is not None and 0 < percent < 100:
        eta = f"About {duration(elapsed * (100 - percent) / percent)} left."
    return [f"{'Elapsed' if active else 'Took'} {duration(elapsed)}.", eta]


# --- status page ----------------------------------------------------------------------


def may_export_changes(
    user: Actor, export: Export, now: dt.datetime, *, once_completed: bool = False
) -> bool:
    """Whether to offer "Export changes since this one": to its requester while it is
    completed and unexpired (the server checks again on the click); `once_completed` also
    while it is queued or running, for a live page to show once it completes."""
    statuses = (Status.QUEUED, Status.RUNNING, Status.COMPLETED) if once_completed else ()
    return bool(
        export.requester_id == user.id
        and user.has(Permission.IMPORT_EXPORT_TICKETS)
        and export.status in (*statuses, Status.COMPLETED)
        and not service.expired(export, now)
    )


def describe_request(frozen: FrozenRequest | None) -> list[str]:
    """The view and its filters in words, for the status page (of any row: a request this
    code did not write shows as an unknown view in CSV)."""
    if frozen is None:
        return ["View: ?", f"Format: {formats.recorded(None).label}"]
    parts = [f"View: {frozen.view.name}", f"Format: {formats.recorded(frozen.format).label}"]
    if frozen.q:
        parts.append(f"Search: “{frozen.q}”")
    if frozen.sort:
        parts.append(f"Sorted by: {registry.SORTS.get(frozen.sort, frozen.sort)}")
    for key, value in frozen.filters.items():
        parts.append(f"{key.replace('_', ' ').capitalize()}: {value}")
    columns = [
        registry.COLUMNS[c].label
        for c in frozen.view.definition.get("columns", [])
        if c in registry.COLUMNS
    ]
    if columns:
        parts.append("Columns: " + ", ".join(columns))
    return parts


async def export_status(request: web.Request) -> web.StreamResponse:
    export_id = export_id_of(request)
    user = request[USER]
    settings = settings_of(request)
    async with pool_of(request).connection() as conn:
        export = await service.visible_export(conn, user, export_id)
        worker_seen = True
        if export.status == Status.QUEUED:
            worker_seen = await service.workers_seen(conn, settings.worker_seen_seconds)
    allowed = user.may_download
    now = export_events.now()
    frozen = export.frozen
    payload = event_payload(export, can_download=allowed, now=now)
    tz = zoneinfo.ZoneInfo(settings.timezone)
    file_lost = export.file_lost_at is not None
    auto = (
        export.requester_id == user.id
        and allowed
        and not file_lost
        and export.auto_downloaded_at is None
        and payload["status"] in (Status.QUEUED, Status.RUNNING, Status.COMPLETED)
    )
    context = {
        "export": export,
        "payload": payload,
        "payload_json": json.dumps(payload),
        "summary": describe_request(frozen),
        "format": formats.recorded(frozen.format if frozen else None),
        "elapsed_from": export.started_at.isoformat() if export.started_at else "",
        "timing": timing(export, payload, now),
        "can_download": allowed,
        "download_denied": service.DOWNLOAD_DENIED,
        "file_lost": service.FileGone.default_message if file_lost else None,
        "auto_download": auto,
        # Whoever sees an export and holds the permission may retry it once it fails or is
        # cancelled; the form is on the page (hidden) so a live failure can show it.
        "can_retry": user.has(Permission.IMPORT_EXPORT_TICKETS),
        "can_cancel": payload["status"] in (Status.QUEUED, Status.RUNNING),
        "worker_seen": worker_seen,
        "events_url": f"/staff/exports/{export_id}/events",
        # For the page's script: live times in the organisation's zone, and whether this
        # export is among the ones the navigation counts.
        "timezone": settings.timezone,
        "zone_names": json.dumps(times.zone_names(tz, now)),
        "own": export.requester_id == user.id,
        "since": export.frozen.since if export.frozen else None,
        # On the page (hidden) while the export may still complete, so the live page
        # shows it when it does.
        "can_export_changes": may_export_changes(user, export, now, once_completed=True),
    }
    return render(request, "export.html", context)


# --- actions --------------------------------------------------------------------------


async def export_retry(request: web.Request) -> web.StreamResponse:
    retried = await service.retry_export(
        services_of(request), request[USER], export_id_of(request), client_ip=client_ip(request)
    )
    raise web.HTTPSeeOther(f"/staff/exports/{retried.export_id}")


async def export_changes(request: web.Request) -> web.StreamResponse:
    """POST /staff/exports/{id}/changes (csrf_token) → 303 to the new export of the changes
    since that one."""
    requested = await service.request_changes(
        services_of(request), request[USER], export_id_of(request), client_ip=client_ip(request)
    )
    raise web.HTTPSeeOther(f"/staff/exports/{requested.export_id}")


async def export_cancel(request: web.Request) -> web.StreamResponse:
    export_id = export_id_of(request)
    await service.cancel_export(
        services_of(request), request[USER], export_id, client_ip=client_ip(request)
    )
    raise web.HTTPSeeOther(f"/staff/exports/{export_id}")


async def export_manifest(request: web.Request) -> web.StreamResponse:
    """GET /staff/exports/{id}/manifest: what the file holds, for those who may download it."""
    found = await service.export_manifest(
        services_of(request), request[USER], export_id_of(request), client_ip=client_ip(request)
    )
    response = web.json_response(found)
    response.headers["Cache-Control"] = "no-store"
    return response


def add_routes(app: web.Application) -> None:
    uid = r"{id:[0-9a-fA-F-]{36}}"
    router = app.router
    router.add_post("/staff/tickets/export", export_post)
    router.add_get("/staff/exports", export_list)
    router.add_get(f"/staff/exports/{uid}", export_status)
    router.add_get(f"/staff/exports/{uid}/events", export_events.export_events)
    router.add_post(f"/staff/exports/{uid}/retry", export_retry)
    router.add_post(f"/staff/exports/{uid}/cancel", export_cancel)
    router.add_post(f"/staff/exports/{uid}/changes", export_changes)
    router.add_get(f"/staff/exports/{uid}/download", downloads.export_download)
    router.add_get(f"/staff/exports/{uid}/manifest", export_manifest)
