"""The JSON API under /api/v1/: bearer tokens only, the pages' use cases, JSON errors."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ticketexport import audit, logs, tokens
from ticketexport.domain.errors import (
    Conflict,
    Denied,
    DomainError,
    Gone,
    Invalid,
    NotFound,
    TooMany,
    TooSlow,
    Unavailable,
)
from ticketexport.domain.exports import Status
from ticketexport.exports import formats, service
from ticketexport.exports.store import Export
from ticketexport.schedules import service as schedules
from ticketexport.views import registry, saved
from ticketexport.views import service as view_service
from ticketexport.web import downloads, export_events, openapi
from ticketexport.web.keys import (
    API_CALLER,
    REQUEST_ID,
    SERVER_ERRORS,
    USER,
    pool_of,
    services_of,
)
from ticketexport.web.security import client_ip

log = logging.getLogger("ticketexport.web")

PREFIX = "/api/v1"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_OPEN = frozenset({f"{PREFIX}/openapi.json"})
_FILTERS = registry.FILTER_PARAMS
_MAX_BIGINT = 2**63 - 1
_EXPORT_FIELDS = frozenset({"view", "q", "sort", "filters", "format"})


class ApiError(Exception):
    """An answer of the API's own (not a use case's): status, code and safe message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def is_api(request: web.Request) -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# A use case's refusal as the API says it: the pages' statuses, a code for scripts.
_DOMAIN: tuple[tuple[type[DomainError], int, str], ...] = (
    (Invalid, 400, "invalid_request"),
    (Denied, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (Gone, 410, "gone"),
    (TooMany, 429, "too_many"),
    (TooSlow, 503, "too_slow"),
    (Unavailable, 503, "unavailable"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many",
    431: "headers_too_large",
}


def _domain_error(exc: DomainError) -> web.Response:
    for kind, status, code in _DOMAIN:
        if isinstance(exc, kind):
            return error_response(status, code, exc.message)
    return error_response(400, "invalid_request", exc.message)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="api"'})


async def _authenticate(request: web.Request) -> tokens.Caller:
    """The caller named by the Authorization header; cookies are never looked at."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("This API needs an API token: Authorization: Bearer tex_…")
    async with pool_of(request).connection() as conn:
        caller = await tokens.authenticate(
            conn,
            secret.strip(),
            per_minute=services_of(request).settings.api_requests_per_minute,
        )
    if caller is None:
        raise _unauthorized("The token is unknown, expired or revoked, or its owner is inactive.")
    if caller.retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            "This token made too many requests this minute; wait and try again.",
            {"Retry-After": str(caller.retry_after)},
        )
    return caller


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /api/ request: a bearer token (except the description), JSON errors, and audit
    rows that name the token. The pages' session, CSRF and error middlewares step aside for
    these paths, so a session cookie never counts here."""
    if not is_api(request):
        return await handler(request)
    try:
        if request.path in _OPEN:
            return await handler(request)
        caller = await _authenticate(request)
        request[API_CALLER] = caller
        # The access log line names the token's owner, as it names a session's user.
        request[USER] = caller.actor
        bound = logs.bind(token_id=caller.token_id)
        try:
            with audit.via_token(caller.token_id):
                return await handler(request)
        finally:
            logs.unbind(bound)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except DomainError as exc:
        return _domain_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            name: value
            for name, value in exc.headers.items()
            if name.lower() not in {"content-type", "content-length"}
        }
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason or code, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        request.app[SERVER_ERRORS].record(request.get(REQUEST_ID, ""))
        return error_response(500, "internal", "Something went wrong on our side.")


# --- helpers ---------------------------------------------------------------------------


def _caller(request: web.Request, scope: str) -> tokens.Caller:
    caller = request[API_CALLER]
    if scope not in caller.scopes:
        raise ApiError(403, "insufficient_scope", f"This token lacks the scope {scope}.")
    return caller


def file_url(export_id: str) -> str:
    return f"{PREFIX}/exports/{export_id}/file"


def _not_found() -> ApiError:
    return ApiError(404, "not_found", NotFound.default_message)


def _export_id(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise _not_found() from None


def _instant(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_object(export: Export, *, may_download: bool) -> dict[str, Any]:
    """The API's export object, from the typed Export."""
    payload = export_events.event_payload(
        export, can_download=may_download, now=export_events.now(), download_url=file_url
    )
    frozen = export.frozen
    return {
        **{key: value for key, value in payload.items() if key != "download_url"},
        "format": formats.recorded(export.format).key,
        "view": frozen.view.key if frozen else None,
        "requested_at": _instant(export.requested_at),
        "as_of": _instant(export.as_of),
        "completed_at": _instant(export.finished_at)
        if export.status in (Status.COMPLETED, Status.EXPIRED)
        else None,
        "expires_at": _instant(export.expires_at),
        # The earlier export a file of changes is measured from.
        "since": frozen.since.export_id if frozen and frozen.since else None,
        # The schedule this export is a run of (None: not a run, or its schedule is gone).
        "schedule_id": export.schedule_id,
        "download_url": payload["download_url"],
    }


async def _json_body(request: web.Request, *, required: bool) -> Any:
    """The request's JSON body (413 over the size limit, 400 when it is not JSON)."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "malformed_json", "The request body must be a JSON object.")
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.") from None


async def _no_body(request: web.Request) -> None:
    """An action's body: nothing, or an empty JSON object."""
    body = await _json_body(request, required=False)
    if body != {} or not isinstance(body, dict):
        raise ApiError(400, "invalid_field", "This action takes no fields.")


def _text(value: Any, what: str) -> str:
    """A JSON string that PostgreSQL text can hold (JSON can spell a NUL or a lone
    surrogate, which no form field can)."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"The {what} must be a string.")
    if "\x00" in value or (not value.isascii() and not _encodable(value)):
        raise ApiError(
            400, "invalid_field", f"The {what} holds a NUL character or a lone surrogate."
        )
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_field(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    return _text(value, f"field {key!r}")


def _list_params(body: Any) -> tuple[dict[str, str], str | None]:
    """POST exports' body as the list page's parameters, and its format."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_field", "The request body must be a JSON object.")
    unknown = sorted(set(body) - _EXPORT_FIELDS)
    if unknown:
        raise ApiError(400, "invalid_field", f"Unknown field {str(unknown[0])[:40]!r}.")
    params: dict[str, str] = {}
    for key in ("view", "q", "sort"):
        value = _text_field(body, key)
        if value:
            params[key] = value
    filters = body.get("filters")
    if filters is not None:
        if not isinstance(filters, dict):
            raise ApiError(400, "invalid_field", "The field 'filters' must be an object.")
        for key, value in filters.items():
            if key not in _FILTERS:
                raise ApiError(400, "invalid_field", f"Unknown filter {str(key)[:40]!r}.")
            if value is None:
                continue
            value = _text(value, f"filter {key!r}")
            if value:
                params[key] = value
    return params, _text_field(body, "format")


def _cursor(export_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(export_id).bytes).decode().rstrip("=")


def _after(cursor: str) -> str:
    """The export a cursor names; 400 for anything this API did not hand out."""
    bad = ApiError(400, "invalid_cursor", "The cursor is not valid; start again without one.")
    if len(cursor) != 22 or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "==")
    except (binascii.Error, ValueError):
        raise bad from None
    if len(raw) != 16 or _cursor(str(uuid.UUID(bytes=raw))) != cursor:
        raise bad
    return str(uuid.UUID(bytes=raw))


def _json(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = web.json_response(data, status=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _no_query(request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(400, "invalid_parameter", f"Unknown parameter {unknown[0][:40]!r}.")


# --- routes ----------------------------------------------------------------------------


async def views(request: web.Request) -> web.StreamResponse:
    """GET views: the views the owner's list page offers."""
    caller = _caller(request, "views:read")
    _no_query(request)
    async with pool_of(request).connection() as conn:
        mine = await saved.list_saved_views(conn, caller.actor)
    found = [{"key": key, "label": label} for key, label in registry.BUILTIN_VIEWS.items()]
    found += [{"key": str(view.id), "label": view.name} for view in mine]
    return _json(found)


async def _export_response(
    request: web.Request, export_id: str, *, status: int = 200, location: bool = False
) -> web.Response:
    caller = request[API_CALLER]
    async with pool_of(request).connection() as conn:
        export = await service.visible_export(conn, caller.actor, export_id)
    headers = {"Location": f"{PREFIX}/exports/{export_id}"} if location else None
    return _json(
        export_object(export, may_download=caller.actor.may_download),
        status=status,
        headers=headers,
    )


async def export_create(request: web.Request) -> web.StreamResponse:
    """POST exports: the Export click's use case (validation, double submit, limit, audit),
    or with `since` alone the changes since that earlier export."""
    caller = _caller(request, "exports:write")
    _no_query(request)
    body = await _json_body(request, required=True)
    if isinstance(body, dict) and "since" in body:
        if set(body) != {"since"}:
            raise ApiError(400, "invalid_field", "The field 'since' comes alone.")
        since = _text(body["since"], "field 'since'")
        try:
            since = str(uuid.UUID(since))
        except ValueError:
            raise _not_found() from None
        requested = await service.request_changes(
            services_of(request), caller.actor, since, client_ip=client_ip(request)
        )
        return await _export_response(request, requested.export_id, status=202, location=True)
    params, format_key = _list_params(body)
    export_format = formats.get(format_key)
    list_request = view_service.parse_list_request(params)
    requested = await service.request_export(
        services_of(request),
        caller.actor,
        list_request,
        export_format=export_format,
        client_ip=client_ip(request),
    )
    return await _export_response(request, requested.export_id, status=202, location=True)


async def export_list(request: web.Request) -> web.StreamResponse:
    """GET exports: the owner's, newest first, `limit` at a time after `cursor`."""
    caller = _caller(request, "exports:read")
    _no_query(request, frozenset({"cursor", "limit"}))
    after = _after(request.query["cursor"]) if "cursor" in request.query else None
    limit = PAGE_SIZE
    if "limit" in request.query:
        raw = request.query["limit"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
            raise ApiError(400, "invalid_parameter", "limit must be a whole number from 1 to 100.")
        limit = int(raw)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ApiError(400, "invalid_parameter", "limit must be a whole number from 1 to 100.")
    async with pool_of(request).connection() as conn:
        try:
            rows = await service.list_own_exports(conn, caller.actor, after=after, limit=limit + 1)
        except service.ExportNotFound:
            raise ApiError(
                400, "invalid_cursor", "The cursor is not valid; start again without one."
            ) from None
    more = len(rows) > limit
    rows = rows[:limit]
    may_download = caller.actor.may_download
    return _json(
        {
            "items": [export_object(row, may_download=may_download) for row in rows],
            "next": _cursor(rows[-1].id) if more and rows else None,
        }
    )


async def export_get(request: web.Request) -> web.StreamResponse:
    _caller(request, "exports:read")
    _no_query(request)
    return await _export_response(request, _export_id(request))


async def export_file(request: web.Request) -> web.StreamResponse:
    """GET exports/{id}/file: the browser download's checks, headers and byte ranges."""
    caller = _caller(request, "exports:read")
    _no_query(request)
    export_id = _export_id(request)
    try:
        return await downloads.send_file(request, caller.actor, export_id)
    except Denied:
        # What the owner may not download now is not there for a token (404, where the
        # pages say 403); the refusal is audited as on the pages.
        raise _not_found() from None


async def export_manifest(request: web.Request) -> web.StreamResponse:
    caller = _caller(request, "exports:read")
    _no_query(request)
    export_id = _export_id(request)
    try:
        found = await service.export_manifest(
            services_of(request), caller.actor, export_id, client_ip=client_ip(request)
        )
    except Denied:
        raise _not_found() from None
    return _json(found)


async def export_events_stream(request: web.Request) -> web.StreamResponse:
    """GET exports/{id}/events: the status page's stream, counted per token."""
    caller = _caller(request, "exports:read")
    _no_query(request)
    return await export_events.stream_events(
        request,
        caller.actor,
        _export_id(request),
        watcher=caller.watcher_id,
        download_url=file_url,
    )


async def export_cancel(request: web.Request) -> web.StreamResponse:
    caller = _caller(request, "exports:write")
    _no_query(request)
    export_id = _export_id(request)
    await _no_body(request)
    await service.cancel_export(
        services_of(request), caller.actor, export_id, client_ip=client_ip(request)
    )
    return await _export_response(request, export_id)


async def export_retry(request: web.Request) -> web.StreamResponse:
    caller = _caller(request, "exports:write")
    _no_query(request)
    export_id = _export_id(request)
    await _no_body(request)
    retried = await service.retry_export(
        services_of(request), caller.actor, export_id, client_ip=client_ip(request)
    )
    return await _export_response(request, retried.export_id, status=202, location=True)


async def export_changes(request: web.Request) -> web.StreamResponse:
    """POST exports/{id}/changes: a new export of the changes since that one (its requester
    only; 409 unless it completed and has not expired)."""
    caller = _caller(request, "exports:write")
    _no_query(request)
    export_id = _export_id(request)
    await _no_body(request)
    requested = await service.request_changes(
        services_of(request), caller.actor, export_id, client_ip=client_ip(request)
    )
    return await _export_response(request, requested.export_id, status=202, location=True)


def _schedule_id(request: web.Request) -> int:
    """The schedule id in the path; anything but a positive bigint is simply not found."""
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise _not_found()
    value = int(raw)
    if not 0 < value <= _MAX_BIGINT:
        raise _not_found()
    return value


async def schedule_latest(request: web.Request) -> web.StreamResponse:
    """GET schedules/{id}/latest: the latest completed run's file, served and checked as
    GET exports/{id}/file, with Content-Location naming that export."""
    caller = _caller(request, "exports:read")
    _no_query(request)
    schedule_id = _schedule_id(request)
    try:
        export_id = await schedules.latest_file(
            services_of(request), caller.actor, schedule_id, client_ip=client_ip(request)
        )
    except schedules.NoCompletedRun as exc:
        raise ApiError(404, "no_completed_run", exc.message) from None
    try:
        return await downloads.send_file(
            request,
            caller.actor,
            export_id,
            headers={"Content-Location": f"{PREFIX}/exports/{export_id}"},
        )
    except Denied:
        # As for exports/{id}/file: what the owner may not download now is not there.
        raise _not_found() from None


async def openapi_document(request: web.Request) -> web.StreamResponse:
    _no_query(request)
    return web.json_response(openapi.DOCUMENT)


def add_routes(app: web.Application) -> None:
    uid = r"{id:[^/]{1,64}}"
    router = app.router
    router.add_get(f"{PREFIX}/openapi.json", openapi_document)
    router.add_get(f"{PREFIX}/views", views)
    router.add_post(f"{PREFIX}/exports", export_create)
    router.add_get(f"{PREFIX}/exports", export_list)
    router.add_get(f"{PREFIX}/exports/{uid}", export_get)
    router.add_get(f"{PREFIX}/exports/{uid}/file", export_file)
    router.add_get(f"{PREFIX}/exports/{uid}/manifest", export_manifest)
    router.add_get(f"{PREFIX}/exports/{uid}/events", export_events_stream)
    router.add_post(f"{PREFIX}/exports/{uid}/cancel", export_cancel)
    router.add_post(f"{PREFIX}/exports/{uid}/retry", export_retry)
    router.add_post(f"{PREFIX}/exports/{uid}/changes", export_changes)
    router.add_get(f"{PREFIX}/schedules/{uid}/latest", schedule_latest)
