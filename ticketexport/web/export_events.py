"""The live status stream: server-sent events for one export, fed by the process's hub."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ticketexport.domain import exports as rules
from ticketexport.domain.exports import Status
from ticketexport.exports import service
from ticketexport.web.downloads import export_id_of
from ticketexport.web.keys import USER, pool_of, services_of

# The keep-alive comment's interval; also the longest a stream waits between checks.
KEEPALIVE_SECONDS = 15.0
ACTIVE = (Status.QUEUED, Status.RUNNING)


def now() -> dt.datetime:
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


async def export_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the current state, then every change, until a terminal state.

    A waiting stream holds no database connection: the hub's one LISTEN connection wakes
    it, and the hub's single fetch per notification hands it the new state.
    """
    export_id = export_id_of(request)
    user = request[USER]
    hub = services_of(request).hub
    assert hub is not None  # a web process always has its hub
    # Subscribe before reading, so a change between the two is not missed.
    with hub.subscribe(export_id) as subscription:
        async with pool_of(request).connection() as conn:
            export = await service.visible_export(conn, user, export_id)
        stream = EventSourceResponse(sep="\n", ping_interval=KEEPALIVE_SECONDS)
        # Per-user state in every event: never cached by anything between us and the browser.
        stream.headers["Cache-Control"] = "no-store"
        stream.headers["Content-Type"] = "text/event-stream; charset=utf-8"
        await stream.prepare(request)
        async with stream:
            last_sent = stream.last_event_id
            state: Mapping[str, Any] | None = export
            while True:
                if state is not None:
                    payload = event_payload(state, can_download=user.may_download, now=now())
                    ident = event_id(payload)
                    if ident != last_sent:
                        await stream.send(json.dumps(payload), id=ident, event="export")
                        last_sent = ident
                    if payload["status"] not in ACTIVE:
                        break
                state = await subscription.next(within=KEEPALIVE_SECONDS)
                if state is None and subscription.closed:
                    break
    return stream
