"""The staff ticket list: views sidebar, search, sort pills, filters and keyset paging."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from ticketexport.domain.cadence import WEEKDAYS
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats
from ticketexport.schedules.service import modes as schedule_modes
from ticketexport.views import registry, saved, service
from ticketexport.web.keys import USER, pool_of, settings_of
from ticketexport.web.render import CLIENT_GONE, PageError, render

# The parameters that describe what is listed; `page` only says where.
LIST_PARAMS = ("view", "q", "sort", *registry.FILTER_PARAMS)


def _link(params: dict[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "")}
    return "/staff/tickets" + ("?" + urllib.parse.urlencode(kept) if kept else "")


async def ticket_list(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    query = request.query
    for key in query:
        if len(query.getall(key)) > 1:
            raise PageError(400, f"the parameter {key[:40]!r} is given more than once")
    params = dict(query.items())
    list_request = service.parse_list_request(params)
    actor = user
    settings = settings_of(request)
    async with pool_of(request).connection() as conn:
        page = await _unless_gone(
            request,
            service.list_page(
                conn,
                list_request,
                actor,
                now=dt.datetime.now(dt.UTC),
                tz=settings.timezone,
                statement_timeout_ms=settings.web_statement_timeout_ms,
            ),
        )
        if page is None:
            # nginx's "client closed request": nobody reads it, the access log tells.
            return web.Response(status=CLIENT_GONE)
        options = await service.filter_options(conn)
        saved_views = await saved.list_saved_views(conn, actor)

    current = {k: params[k] for k in LIST_PARAMS if params.get(k)}
    view_key = page.view.key
    # No sort= means the view's own order, which is what the "view" pill names.
    active_sort = params.get("sort") or "view"
    context: dict[str, Any] = {
        "page": page,
        "view_key": view_key,
        "builtin_views": list(registry.BUILTIN_VIEWS.items()),
        "saved_views": saved_views,
        "q": params.get("q", ""),
        "current": current,
        "filters": {name: params.get(name, "") for name in registry.FILTER_PARAMS},
        "options": options,
        "sorts": [(key, label, _link(current, sort=key)) for key, label in registry.SORTS.items()],
        "active_sort": active_sort,
        "view_link": lambda key: _link({}, view=key),
        "rows": list(zip(page.ticket_ids, page.rows, strict=True)),
        "count_label": _count_label(page.count, page.count_text),
        "next_url": _link(current, page=page.next_cursor) if page.next_cursor else None,
        "first_url": _link(current) if params.get("page") else None,
        "can_export": user.has(Permission.IMPORT_EXPORT_TICKETS),
        "export_fields": list(current.items()),
        "export_formats": [(f.key, f.label) for f in formats.FORMATS.values()],
        "default_format": formats.DEFAULT_FORMAT,
        "default_format_label": formats.get(formats.DEFAULT_FORMAT).label,
        # The Schedule… form: the same frozen fields, and what the schedule adds.
        "schedule_destinations": [name for name, _ in settings.destinations]
        if user.may_download
        else [],
        "schedule_modes": schedule_modes(),
        "schedule_notify": settings.mail_enabled,
        "schedule_min_minutes": settings.schedule_min_minutes,
        "weekdays": WEEKDAYS,
        "timezone": settings.timezone,
    }
    return render(request, "tickets.html", context)


# How often a running list query looks whether its client is still there.
_GONE_CHECK_SECONDS = 0.1
T = TypeVar("T")


async def _unless_gone(request: web.Request, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None when the client went away first (the work is cancelled).

    aiohttp lets a handler run on after its client disconnected; a list query nobody waits
    for would hold a pool connection until it ends. Cancelling the task makes psycopg cancel
    the statement in the server, and the connection goes back to the pool.
    """
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait([task], timeout=_GONE_CHECK_SECONDS)
            transport = request.transport
            if not task.done() and (transport is None or transport.is_closing()):
                break
    finally:
        if not task.done():
            task.cancel()
            # Let it finish cancelling: it gives the connection back in a clean state.
            await asyncio.wait([task])
    if task.cancelled():
        return None
    return task.result()


def _count_label(count: int, count_text: str) -> str:
    return f"{count_text} ticket" if count == 1 else f"{count_text} tickets"
