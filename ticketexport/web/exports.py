"""Export routes: request, my exports, status page, live events, retry, cancel, download."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from psycopg.rows import dict_row

from ticketexport.db import q
from ticketexport.domain import exports as rules
from ticketexport.domain.exports import Status
from ticketexport.domain.permissions import Permission
from ticketexport.events import EventHub
from ticketexport.exports import service
from ticketexport.storage import Storage, StorageError
from ticketexport.views import registry
from ticketexport.views import service as view_service
from ticketexport.views.model import ViewInputError, ViewNotFound
from ticketexport.web.render import RUNNING_EXPORTS, PageError, render
from ticketexport.web.security import client_ip
from ticketexport.web.state import SETTINGS, USER, CurrentUser, pool_of

log = logging.getLogger(__name__)

HUB = web.AppKey("event_hub", EventHub)
STORAGE = web.AppKey("storage", Storage)

HEARTBEAT_SECONDS = 15.0
PAGE_SIZE = 25
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def requester_of(user: CurrentUser) -> service.Requester:
    return service.Requester(
        id=user.id, email=user.email, is_admin=user.is_admin, permissions=user.permissions
    )


def _export_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise PageError(404) from None


async def _visible(request: web.Request, export_id: str) -> dict[str, Any]:
    user = requester_of(request[USER])
    async with pool_of(request).connection() as conn:
        try:
            return await service.visible_export(conn, user, export_id)
        except service.ExportNotFound:
            raise PageError(404, "That export does not exist or you cannot see it.") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def event_payload(
    export: Mapping[str, Any], *, can_download: bool, now: dt.datetime
) -> dict[str, Any]:
    """The brief's event JSON: {id, status, stage, attempt, rows, total, percent, error,
    download_url}."""
    status = export["status"]
    if status == Status.COMPLETED and service.expired(export, now):
        status = Status.EXPIRED.value
    error = None
    if export.get("error_code"):
        error = {
            "code": export["error_code"],
            "message": export.get("error_message") or rules.safe_message(export["error_code"]),
        }
    download_url = None
    if status == Status.COMPLETED and can_download:
        download_url = f"/staff/exports/{export['id']}/download"
    return {
        "id": str(export["id"]),
        "status": status,
        "stage": export["stage"],
        "attempt": export["attempt"],
        "rows": export["rows_done"],
        "total": export["rows_total"],
        "percent": rules.percent(export["rows_done"], export["rows_total"]),
        "error": error,
        "download_url": download_url,
    }


def event_id(payload: Mapping[str, Any]) -> str:
    """Identifies a state, so a reconnecting client that saw it is not sent it again."""
    return f"{payload['attempt']}-{payload['status']}-{payload['stage'] or ''}-{payload['rows']}"


# --- request --------------------------------------------------------------------------


async def export_post(request: web.Request) -> web.StreamResponse:
    """POST /staff/tickets/export: the list's fields plus csrf_token → 303 to the status page."""
    form = await request.post()
    params: dict[str, str] = {}
    for key in form:
        if key == "csrf_token":
            continue
        values = form.getall(key)
        if len(values) > 1:
            raise PageError(400, f"the field {key[:40]!r} is given more than once")
        value = values[0]
        if not isinstance(value, str):
            raise PageError(400, f"the field {key[:40]!r} must be text")
        if value != "":
            params[key] = value
    params.pop("page", None)  # an export is the whole view, not one page
    try:
        list_request = view_service.parse_list_request(params)
    except ViewInputError as exc:
        raise PageError(400, str(exc)) from None
    settings = request.app[SETTINGS]
    user = requester_of(request[USER])
    try:
        requested = await service.request_export(
            pool_of(request),
            user,
            list_request,
            timezone=settings.timezone,
            retention_hours=settings.retention_hours,
            client_ip=client_ip(request),
        )
    except service.ExportDenied as exc:
        raise PageError(403, str(exc)) from None
    except ViewNotFound:
        raise PageError(404, "That saved view does not exist or you cannot see it.") from None
    except ViewInputError as exc:
        raise PageError(400, str(exc)) from None
    raise web.HTTPSeeOther(f"/staff/exports/{requested.export_id}")


# --- my exports -----------------------------------------------------------------------


async def export_list(request: web.Request) -> web.StreamResponse:
    current = request[USER]
    user = requester_of(current)
    query = request.query
    unknown = set(query) - {"all", "before"}
    if unknown:
        raise PageError(400, f"unknown parameter {sorted(unknown)[0][:40]!r}")
    everyone = query.get("all") == "1"
    if everyone and not service.download_allowed(user):
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
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            q("export_list"),
            {
                "user_id": None if everyone else user.id,
                "before_time": before_time,
                "before_id": before_id,
                "limit": PAGE_SIZE + 1,
            },
        )
        rows = await cur.fetchall()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    now = _now()
    tz = zoneinfo.ZoneInfo(request.app[SETTINGS].timezone)
    items = []
    for row in rows:
        payload = event_payload(row, can_download=service.download_allowed(user), now=now)
        items.append(
            {
                "row": row,
                "payload": payload,
                "requested": _stamp(row["requested_at"], tz),
                "expires": _stamp(row["expires_at"], tz),
                "active": row["status"] in (Status.QUEUED, Status.RUNNING),
            }
        )
    next_url = None
    if more and rows:
        last = rows[-1]
        cursor = f"{last['requested_at'].isoformat()}_{last['id']}"
        params = {"before": cursor, **({"all": "1"} if everyone else {})}
        next_url = "/staff/exports?" + urllib.parse.urlencode(params)
    return render(
        request,
        "exports.html",
        {
            "items": items,
            "everyone": everyone,
            "can_see_all": service.download_allowed(user),
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


def timing(export: Mapping[str, Any], payload: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """Elapsed time and, while running, the estimate of what is left (first paint)."""
    started = export.get("started_at")
    if started is None:
        return ["", ""]
    active = payload["status"] in (Status.QUEUED, Status.RUNNING)
    end = now if active else (export.get("finished_at") or now)
    elapsed = (end - started).total_seconds()
    percent = payload["percent"]
    eta = ""
    if payload["status"] == Status.RUNNING and percent is not None and 0 < percent < 100:
        eta = f"About {duration(elapsed * (100 - percent) / percent)} left."
    return [f"{'Elapsed' if active else 'Took'} {duration(elapsed)}.", eta]


def _stamp(value: dt.datetime | None, tz: zoneinfo.ZoneInfo) -> str:
    if value is None:
        return ""
    return value.astimezone(tz).isoformat(timespec="seconds")


# --- status page ----------------------------------------------------------------------


def describe_request(frozen: Mapping[str, Any]) -> list[str]:
    """The view and its filters in words, for the status page."""
    view = frozen.get("view", {})
    parts = [f"View: {view.get('name', '?')}"]
    if frozen.get("q"):
        parts.append(f"Search: “{frozen['q']}”")
    sort = frozen.get("sort")
    if sort:
        parts.append(f"Sorted by: {registry.SORTS.get(sort, sort)}")
    for key, value in (frozen.get("filters") or {}).items():
        parts.append(f"{key.replace('_', ' ').capitalize()}: {value}")
    definition = view.get("definition") or {}
    columns = [
        registry.COLUMNS[c].label for c in definition.get("columns", []) if c in registry.COLUMNS
    ]
    if columns:
        parts.append("Columns: " + ", ".join(columns))
    return parts


async def export_status(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    export = await _visible(request, export_id)
    current = request[USER]
    user = requester_of(current)
    allowed = service.download_allowed(user)
    now = _now()
    payload = event_payload(export, can_download=allowed, now=now)
    tz = zoneinfo.ZoneInfo(request.app[SETTINGS].timezone)
    worker_seen = True
    if export["status"] == Status.QUEUED:
        async with pool_of(request).connection() as conn:
            cur = await conn.execute(
                q("live_workers"), {"seconds": request.app[SETTINGS].worker_seen_seconds}
            )
            row = await cur.fetchone()
            worker_seen = bool(row and row[0] > 0)
    auto = (
        export["requester_id"] == user.id
        and allowed
        and export["auto_downloaded_at"] is None
        and payload["status"] in (Status.QUEUED, Status.RUNNING, Status.COMPLETED)
    )
    context = {
        "export": export,
        "payload": payload,
        "payload_json": json.dumps(payload),
        "summary": describe_request(export["request"]),
        "requested": _stamp(export["requested_at"], tz),
        "as_of": _stamp(export["as_of"], tz),
        "started": _stamp(export["started_at"], tz),
        "finished": _stamp(export["finished_at"], tz),
        "expires": _stamp(export["expires_at"], tz),
        "elapsed_from": export["started_at"].isoformat() if export["started_at"] else "",
        "timing": timing(export, payload, now),
        "can_download": allowed,
        "download_denied": service.DOWNLOAD_DENIED,
        "auto_download": auto,
        # Whoever sees an export and holds the permission may retry it once it fails or is
        # cancelled; the form is on the page (hidden) so a live failure can show it.
        "can_retry": current.has(Permission.IMPORT_EXPORT_TICKETS),
        "can_cancel": payload["status"] in (Status.QUEUED, Status.RUNNING),
        "worker_seen": worker_seen,
        "events_url": f"/staff/exports/{export_id}/events",
    }
    return render(request, "export.html", context)


# --- live events ----------------------------------------------------------------------


async def export_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the current state, then every change, until a terminal state."""
    export_id = _export_id(request)
    user = requester_of(request[USER])
    hub = request.app[HUB]
    # Subscribe before reading, so a change between the two is not missed.
    with hub.subscribe(export_id) as subscription:
        export = await _visible(request, export_id)
        allowed = service.download_allowed(user)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        last_sent = request.headers.get("Last-Event-ID")
        state: Mapping[str, Any] | None = export
        while True:
            if state is not None:
                payload = event_payload(state, can_download=allowed, now=_now())
                ident = event_id(payload)
                if ident != last_sent:
                    await response.write(
                        f"event: export\nid: {ident}\ndata: {json.dumps(payload)}\n\n".encode()
                    )
                    last_sent = ident
                if payload["status"] not in (Status.QUEUED, Status.RUNNING):
                    break
            state = await subscription.next(within=HEARTBEAT_SECONDS)
            if state is None:
                if subscription.closed:
                    break
                await response.write(b": heartbeat\n\n")
    await response.write_eof()
    return response


# --- actions --------------------------------------------------------------------------


async def export_retry(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    settings = request.app[SETTINGS]
    try:
        retried = await service.retry_export(
            pool_of(request),
            requester_of(request[USER]),
            export_id,
            retention_hours=settings.retention_hours,
            client_ip=client_ip(request),
        )
    except service.ExportNotFound:
        raise PageError(404, "That export does not exist or you cannot see it.") from None
    except service.ExportDenied as exc:
        raise PageError(403, str(exc)) from None
    except service.ExportConflict as exc:
        raise PageError(409, str(exc)) from None
    raise web.HTTPSeeOther(f"/staff/exports/{retried.export_id}")


async def export_cancel(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    try:
        await service.cancel_export(
            pool_of(request), requester_of(request[USER]), export_id, client_ip=client_ip(request)
        )
    except service.ExportNotFound:
        raise PageError(404, "That export does not exist or you cannot see it.") from None
    except service.ExportConflict as exc:
        raise PageError(409, str(exc)) from None
    raise web.HTTPSeeOther(f"/staff/exports/{export_id}")


# --- download -------------------------------------------------------------------------


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback plus the exact name in filename*."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", file_name) or "export.csv"
    return (
        f'attachment; filename="{fallback}"; '
        f"filename*=UTF-8''{urllib.parse.quote(file_name, safe='')}"
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range as (start, end inclusive); None for the whole file.

    Raises ValueError for an unsatisfiable range. Multiple ranges get the whole file,
    which RFC 9110 allows."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise ValueError("range not satisfiable")
    return start, min(end, size - 1)


async def export_download(request: web.Request) -> web.StreamResponse:
    export_id = _export_id(request)
    user = requester_of(request[USER])
    ip = client_ip(request)
    pool = pool_of(request)
    auto = request.query.get("auto") == "1"
    try:
        export = await service.authorize_download(pool, user, export_id, auto=auto, client_ip=ip)
    except service.ExportNotFound:
        raise PageError(404, "That export does not exist or you cannot see it.") from None
    except service.ExportDenied as exc:
        raise PageError(403, str(exc)) from None
    except service.ExportGone as exc:
        raise PageError(410, str(exc)) from None
    except service.ExportNotReady as exc:
        raise PageError(404, str(exc)) from None
    if export is None:
        # Another tab or browser already downloaded it automatically: do nothing.
        return web.Response(status=204, headers={"Cache-Control": "no-store"})
    storage = request.app[STORAGE]
    size = int(export["size_bytes"])
    try:
        byte_range = parse_range(request.headers.get("Range"), size)
    except ValueError:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    if byte_range is not None and request.headers.get("If-Range") not in (
        None,
        f'"{export["sha256"]}"',
    ):
        byte_range = None
    start, end = byte_range if byte_range is not None else (0, size - 1)
    response = web.StreamResponse(
        status=206 if byte_range is not None else 200,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": content_disposition(export["file_name"]),
            "Accept-Ranges": "bytes",
            "ETag": f'"{export["sha256"]}"',
            "Cache-Control": "no-store",
            "Content-Length": str(max(0, end - start + 1)),
        },
    )
    if byte_range is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await service.record_download(
        pool,
        user,
        export_id,
        client_ip=ip,
        details={
            "bytes": max(0, end - start + 1),
            "size": size,
            "range": f"{start}-{end}" if byte_range is not None else None,
            "auto": auto,
        },
    )
    await response.prepare(request)
    if size > 0:
        try:
            async for chunk in storage.read(export["object_key"], start, end):
                await response.write(chunk)
        except StorageError:
            log.exception("export file unreadable", extra={"export_id": export_id})
            raise
    await response.write_eof()
    return response


# --- navigation count -------------------------------------------------------------------


def _renders_page(request: web.Request) -> bool:
    """Whether a request may end in an HTML page with the layout (and so the nav count)."""
    if request.method != "GET":
        return False
    path = request.path
    return (path == "/" or path.startswith("/staff")) and not path.endswith(
        ("/events", "/download")
    )


@web.middleware
async def running_exports_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the signed-in user's queued and running exports for the navigation.

    One indexed query per page, none for event streams, downloads, static files or
    anonymous requests; the layout reads it through render.page_context."""
    user = request.get(USER)
    if user is not None and _renders_page(request):
        async with pool_of(request).connection() as conn:
            cur = await conn.execute(q("export_running_count"), {"user_id": user.id})
            row = await cur.fetchone()
        request[RUNNING_EXPORTS] = int(row[0]) if row else 0
    return await handler(request)


def add_routes(app: web.Application) -> None:
    uid = r"{id:[0-9a-fA-F-]{36}}"
    # Innermost, so the user is already loaded by the sign-in middleware.
    app.middlewares.append(running_exports_middleware)
    router = app.router
    router.add_post("/staff/tickets/export", export_post)
    router.add_get("/staff/exports", export_list)
    router.add_get(f"/staff/exports/{uid}", export_status)
    router.add_get(f"/staff/exports/{uid}/events", export_events)
    router.add_post(f"/staff/exports/{uid}/retry", export_retry)
    router.add_post(f"/staff/exports/{uid}/cancel", export_cancel)
    router.add_get(f"/staff/exports/{uid}/download", export_download)
