"""Middlewares: request id and access log, error pages, sign-in, CSRF; response headers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from ticketexport import logs
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
from ticketexport.exports import service
from ticketexport.web import api, auth
from ticketexport.web.keys import (
    REQUEST_ID,
    RUNNING_EXPORTS,
    SERVER_ERRORS,
    SESSION,
    USER,
    pool_of,
)
from ticketexport.web.render import PageError, error_page
from ticketexport.web.security import SECURITY_HEADERS, apply_cookies, client_ip

log = logging.getLogger("ticketexport.web")
access_log = logging.getLogger("ticketexport.web.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take a well-formed X-Request-ID or make one; log one JSON access line per request."""
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    token = logs.bind(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Redirects travel as exceptions; they carry the queued cookies too (login sets
        # its session cookie on a 303).
        status = exc.status
        apply_cookies(request, exc)
        raise
    else:
        status = response.status
        # Cookies go on before prepare(): aiohttp writes Set-Cookie ahead of its signals.
        apply_cookies(request, response)
        return response
    finally:
        user = request.get(USER)
        access_log.info(
            "request",
            extra={
                # Also bound in the context; repeated so the record stands on its own.
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client_ip": client_ip(request),
                "user_id": user.id if user else None,
            },
        )
        logs.unbind(token)


# The one mapping from a use case's refusal to an HTTP status.
_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (Invalid, 400),
    (Denied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Gone, 410),
    (TooMany, 429),
    (TooSlow, 503),
    (Unavailable, 503),
)


def status_for(error: DomainError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Expected failures become 4xx pages; anything unexpected stays a logged 500."""
    if api.is_api(request):
        return await handler(request)  # api_middleware answers in JSON
    try:
        response = await handler(request)
    except PageError as exc:
        return error_page(request, exc.status, exc.message)
    except DomainError as exc:
        return error_page(request, status_for(exc), exc.message, link=exc.link)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        page = error_page(request, exc.status)
        # Keep protocol headers such as Allow on 405, but not the exception's content type.
        for name, value in exc.headers.items():
            if name.lower() not in {"content-type", "content-length"}:
                page.headers[name] = value
        return page
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        request.app[SERVER_ERRORS].record(request.get(REQUEST_ID, ""))
        return error_page(request, 500)
    # 503 from /healthz or /metrics is a deliberate answer, not a failure to count.
    if response.status == 500:
        request.app[SERVER_ERRORS].record(request.get(REQUEST_ID, ""))
    return response


def _is_stream_or_download(path: str) -> bool:
    return path.endswith(("/download", "/events", "/manifest"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the signed-in user; keep anonymous requests out of staff pages and POSTs.

    Never for the API: it authenticates by bearer token alone, so a session cookie that a
    browser attaches by itself can never act there."""
    if api.is_api(request):
        return await handler(request)
    signed_in = await auth.load_user(request)
    if signed_in is not None:
        request[USER], request[SESSION] = signed_in
    if signed_in is None and _needs_user(request):
        if request.method in ("GET", "HEAD") and not _is_stream_or_download(request.path):
            raise web.HTTPSeeOther(auth.login_url(request))
        raise PageError(401)
    return await handler(request)


def _needs_user(request: web.Request) -> bool:
    if request.path in ("/staff", "/admin") or request.path.startswith(("/staff/", "/admin/")):
        return True
    return request.method not in _SAFE_METHODS and request.path != "/login"


_UNREADABLE_FORM = "The form could not be read: its encoding or format is not valid."


async def _read_form(request: web.Request) -> Any:
    """The posted form, parsed once here for every handler after (aiohttp keeps it).

    A body that is not valid in its declared charset, names a charset Python does not know,
    claims multipart without a usable boundary, or has a part the parser cannot take is the
    client's mistake: 400, not a 500. Too large stays aiohttp's 413.
    """
    try:
        return await request.post()
    # The parser raises RuntimeError for a part's unknown transfer encoding and for an
    # over-long `_charset_` part, and its header parser's own errors for a part's headers.
    except (UnicodeError, LookupError, ValueError, RuntimeError, HttpProcessingError):
        raise PageError(400, _UNREADABLE_FORM) from None


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every state-changing request carries the session's (or login form's) token.

    The API's requests carry a bearer token instead, which no other site can make a
    browser send; they never act as a session (auth_middleware), so they need none."""
    if request.method not in _SAFE_METHODS and not api.is_api(request):
        form = await _read_form(request)
        sent = form.get("csrf_token")
        if not isinstance(sent, str):
            sent = request.headers.get("X-CSRF-Token", "")
        session = request.get(SESSION)
        if session is not None:
            ok = auth.tokens_equal(sent, session.csrf_token)
        else:
            ok = auth.login_token_valid(request, sent)
        if not ok:
            if session is None and request.path == "/login":
                return await auth.login_form(
                    request,
                    error="Your sign-in form expired. Please try again.",
                    status=403,
                )
            raise PageError(403, "The form's security token is missing or wrong. Reload the page.")
    return await handler(request)


def _renders_page(request: web.Request) -> bool:
    """Whether a request may end in an HTML page with the layout (and so the nav count)."""
    if request.method != "GET":
        return False
    path = request.path
    return (path == "/" or path.startswith(("/staff", "/admin"))) and not path.endswith(
        ("/events", "/download", "/manifest", ".csv")
    )


@web.middleware
async def running_exports_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the signed-in user's queued and running exports for the navigation.

    One indexed query per page, none for event streams, downloads, static files or
    anonymous requests; the layout reads it through render.page_context."""
    user = request.get(USER)
    if user is not None and _renders_page(request):
        async with pool_of(request).connection() as conn:
            request[RUNNING_EXPORTS] = await service.running_count(conn, user.id)
    return await handler(request)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response, error pages and static files included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-ID"] = request_id


def all_middlewares() -> list[Any]:
    # Outermost first; the navigation count runs once the user is known and the form checked.
    return [
        request_id_middleware,
        api.api_middleware,
        error_middleware,
        auth_middleware,
        csrf_middleware,
        running_exports_middleware,
    ]
