"""The live status stream: server-sent events for one export, fed by the process's hub."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ticketexport import signin
from ticketexport.domain import exports as rules
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import TooMany
from ticketexport.domain.exports import Status
from ticketexport.exports import service
from ticketexport.exports.store import ExportState
from ticketexport.web.downloads import export_id_of
from ticketexport.web.keys import SESSION, USER, pool_of, services_of

# How often a waiting stream looks whether its client is still there (no query).
GONE_CHECK_SECONDS = 1.0
ACTIVE = (Status.QUEUED, Status.RUNNING)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def page_download_url(export_id: str) -> str:
    return f"/staff/exports/{export_id}/download"


# Where an export's file is downloaded, given its id: the pages' URL or the API's.
DownloadUrl = Callable[[str], str]


def event_payload(
    export: ExportState,
    *,
    can_download: bool,
    now: dt.datetime,
    download_url: DownloadUrl = page_download_url,
) -> dict[str, Any]:
    """The brief's event JSON: {id, status, stage, attempt, rows, total, percent, error,
    download_url}."""
    status = export.status.value
    if export.status == Status.COMPLETED and service.expired(export, now):
        status = Status.EXPIRED.value
    error = None
    if export.error_code:
        error = {
            "code": export.error_code,
            "message": export.error_message or rules.safe_message(export.error_code),
        }
    url = None
    # A file found missing or changed is never offered again (the download answers 410).
    if status == Status.COMPLETED and can_download and export.file_lost_at is None:
        url = download_url(export.id)
    return {
        "id": export.id,
        "status": status,
        "stage": None if export.stage is None else export.stage.value,
        "attempt": export.attempt,
        "rows": export.rows_done,
        "total": export.rows_total,
        "percent": rules.percent(export.rows_done, export.rows_total),
        "error": error,
        "download_url": url,
    }


def event_id(payload: Mapping[str, Any]) -> str:
    """Identifies a state, so a reconnecting client that saw it is not sent it again."""
    return f"{payload['attempt']}-{payload['status']}-{payload['stage'] or ''}-{payload['rows']}"


class TooManyStreams(TooMany):
    """The session already holds as many event streams in this process as allowed (429)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This session (or API token) already has {limit} live status streams open; "
            "close some and try again."
        )


async def export_events(request: web.Request) -> web.StreamResponse:
    """GET /staff/exports/{id}/events: the stream of the signed-in session."""
    return await stream_events(
        request, request[USER], export_id_of(request), watcher=request[SESSION].id
    )


async def stream_events(
    request: web.Request,
    user: Actor,
    export_id: str,
    *,
    watcher: str,
    download_url: DownloadUrl = page_download_url,
) -> web.StreamResponse:
    """Server-sent events: the current state, then every change, until a terminal state.

    A waiting stream holds no database connection: the hub's one LISTEN connection wakes
    it, and the hub's single fetch per notification hands it the new state. The stream
    follows its session: the hub reads the session and its user with every state (and all
    of them once per keep-alive interval), and the stream ends, with nothing more sent,
    once the session is over, the user inactive or the export no longer theirs to see.
    `download_url` is decided by the user's permission as read with each state.
    `watcher` names the session (or API token) the stream belongs to: its streams are
    counted against the limit, and it is what the hub reads again with every state.
    """
    services = services_of(request)
    hub = services.hub
    assert hub is not None  # a web process always has its hub
    settings = services.settings
    limit = settings.max_streams_per_session
    # Counted and taken with no await in between: two racing requests cannot both pass.
    if limit and hub.session_streams(watcher) >= limit:
        raise TooManyStreams(limit)
    # Subscribe before reading, so a change between the two is not missed.
    with hub.subscribe(export_id, watcher) as subscription:
        async with pool_of(request).connection() as conn:
            export = await service.visible_export(conn, user, export_id)
        stream = EventSourceResponse(sep="\n", ping_interval=settings.keepalive_seconds)
        # Per-user state in every event: never cached by anything between us and the browser.
        stream.headers["Cache-Control"] = "no-store"
        stream.headers["Content-Type"] = "text/event-stream; charset=utf-8"
        await stream.prepare(request)
        async with stream:
            last_sent = stream.last_event_id
            last_payload: dict[str, Any] | None = None
            viewer: Actor | None = user
            state: ExportState | None = export
            while True:
                if state is not None:
                    if subscription.viewer is not None:
                        viewer = signin.current_actor(user, subscription.viewer)
                    if viewer is None or not service.may_see(viewer, state):
                        break
                    payload = event_payload(
                        state,
                        can_download=viewer.may_download,
                        now=now(),
                        download_url=download_url,
                    )
                    ident = event_id(payload)
                    # A reconnecting client that saw this state is not sent it again; a
                    # change of permission alone (download_url) is sent.
                    fresh = ident != last_sent if last_payload is None else payload != last_payload
                    if fresh:
                        await stream.send(json.dumps(payload), id=ident, event="export")
                        last_sent = ident
                    last_payload = payload
                    if payload["status"] not in ACTIVE:
                        break
                row = await subscription.next(within=GONE_CHECK_SECONDS)
                state = None if row is None else ExportState.from_row(row)
                if subscription.closed or _client_gone(request, stream):
                    break
    return stream


def _client_gone(request: web.Request, stream: EventSourceResponse) -> bool:
    # The client's leaving frees its place among the session's streams at once, not
    # only when the next event fails to send.
    transport = request.transport
    return transport is None or transport.is_closing() or not stream.is_connected()
