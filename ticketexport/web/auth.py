"""Staff sign-in on the web: Postgres-backed sessions, the login and logout handlers, CSRF
tokens (the sign-in itself, with its throttle, is ticketexport.signin)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import urllib.parse
from typing import Any

from aiohttp import web

from ticketexport import audit as audit_log
from ticketexport import signin
from ticketexport.accounts import verify_password
from ticketexport.domain.actor import Actor
from ticketexport.signin import new_token, session_id
from ticketexport.web.keys import (
    LOGIN_GATE,
    LOGIN_KEY,
    PASSWORD_EXECUTOR,
    SESSION,
    USER,
    Session,
    pool_of,
    services_of,
)
from ticketexport.web.render import CLIENT_GONE, render
from ticketexport.web.security import client_ip, client_of, queue_cookie, safe_next
from ticketexport.web.signin_gate import Refused

log = logging.getLogger(__name__)

SESSION_COOKIE = "te_session"
LOGIN_COOKIE = "te_login"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
GENERIC_FAILURE = "Email or password is incorrect."
THROTTLED = "Too many failed sign-in attempts. Try again in {wait}."
BUSY = "Too many people are signing in right now. Try again in a few seconds."
# How long a sign-in refused for a full gate is asked to wait: about how long the waiting
# ones take to drain (three at a time, a fraction of a second each).
BUSY_RETRY_AFTER = 5


def tokens_equal(sent: str, expected: str) -> bool:
    # A header's undecodable bytes arrive as lone surrogates, which do not encode: a token
    # that is not ASCII can only be wrong.
    if not sent or not sent.isascii():
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


def login_url(request: web.Request) -> str:
    target = request.rel_url.raw_path_qs
    if not safe_next(target):
        target = "/staff/tickets"
    return "/login?" + urllib.parse.urlencode({"next": target})


# Sessions -----------------------------------------------------------------------------


async def load_user(request: web.Request) -> tuple[Actor, Session] | None:
    """The session's user with current permissions, or None (ending a dead session)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is None:
        return None
    if not _TOKEN.match(token):
        queue_cookie(request, SESSION_COOKIE, None)
        return None
    sid = session_id(token)
    found = await signin.session_user(pool_of(request), sid)
    if found is None:
        queue_cookie(request, SESSION_COOKIE, None)
        return None
    user, csrf_token = found
    return user, Session(id=sid, csrf_token=csrf_token)


async def audit(
    request: web.Request,
    action: str,
    *,
    actor_id: int | None,
    actor_email: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    async with pool_of(request).connection() as conn:
        await audit_log.record(
            conn,
            action,
            actor_id=actor_id,
            actor_email=actor_email,
            client_ip=client_ip(request),
            details=details,
        )


# The anonymous login form's CSRF token -----------------------------------------------


def _login_token_for(request: web.Request, cookie: str) -> str:
    return hmac.new(request.app[LOGIN_KEY], b"login:" + cookie.encode(), "sha256").hexdigest()


def login_token_valid(request: web.Request, sent: str) -> bool:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not _TOKEN.match(cookie):
        return False
    return tokens_equal(sent, _login_token_for(request, cookie))


def _login_csrf(request: web.Request) -> str:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not _TOKEN.match(cookie):
        cookie = new_token()
        queue_cookie(request, LOGIN_COOKIE, cookie)
    return _login_token_for(request, cookie)


# Handlers -----------------------------------------------------------------------------


async def login_form(
    request: web.Request, *, error: str | None = None, email: str = "", status: int = 200
) -> web.Response:
    target = safe_next(request.query.get("next"))
    if request.method == "POST":
        form = await request.post()
        posted = form.get("next")
        target = safe_next(posted) if isinstance(posted, str) else None
    return render(
        request,
        "login.html",
        {
            "login_csrf": _login_csrf(request),
            "next": target or "",
            "error": error,
            "email": email,
        },
        status=status,
    )


async def login_get(request: web.Request) -> web.StreamResponse:
    if request.get(USER) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")) or "/staff/tickets")
    return await login_form(request)


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


async def _throttled(
    request: web.Request, throttle: signin.Throttle, attempt: signin.Attempt
) -> web.StreamResponse:
    retry_after = throttle.retry_after
    assert retry_after is not None
    response = await login_form(
        request,
        error=THROTTLED.format(wait=_wait_text(retry_after)),
        email=attempt.shown_email,
        status=429,
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


async def _busy(request: web.Request, attempt: signin.Attempt) -> web.StreamResponse:
    response = await login_form(request, error=BUSY, email=attempt.shown_email, status=503)
    response.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def login_post(request: web.Request) -> web.StreamResponse:
    """POST /login: a place at the gate, the throttle, a turn, then the sign-in itself."""
    form = await request.post()
    address = client_of(request)
    old = request.cookies.get(SESSION_COOKIE)
    attempt = signin.Attempt(
        email=_field(form, "email").strip().lower(),
        password=_field(form, "password"),
        network=signin.client_network(address),
        client_ip=str(address),
        user_agent=request.headers.get("User-Agent", ""),
        old_session=old if old and _TOKEN.match(old) else None,
    )
    services = services_of(request)
    try:
        place = request.app[LOGIN_GATE].enter(attempt.network)
    except Refused:
        return await _busy(request, attempt)
    with place:
        # Before it waits: a refused attempt never takes a turn from anyone.
        throttle = await signin.throttle_now(services, attempt)
        if throttle.retry_after is not None:
            await signin.record_refusal(services, attempt, throttle)
            return await _throttled(request, throttle, attempt)
        try:
            await place.turn()
        except Refused:
            return await _busy(request, attempt)
        if _client_gone(request):
            # Nobody is there to be told: no password is checked for it.
            log.info("sign-in dropped: its client went away while it waited")
            return web.Response(status=CLIENT_GONE)
        outcome = await signin.sign_in(services, attempt, _verifier(request))
    if isinstance(outcome, signin.Throttled):
        return await _throttled(request, outcome.throttle, attempt)
    if isinstance(outcome, signin.Failed):
        return await login_form(
            request, error=GENERIC_FAILURE, email=attempt.shown_email, status=400
        )
    queue_cookie(request, SESSION_COOKIE, outcome.token, max_age=signin.ABSOLUTE_SECONDS)
    raise web.HTTPSeeOther(safe_next(_field(form, "next")) or "/staff/tickets")


def _verifier(request: web.Request) -> signin.Verify:
    """Password checks on the threads kept for them: argon2 is deliberately slow, and a
    flood of sign-ins must not stall the event loop or the file threads."""
    executor = request.app[PASSWORD_EXECUTOR]

    async def verify(hashed: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, verify_password, hashed, password)

    return verify


async def logout_post(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    await signin.end_session(pool_of(request), request[SESSION].id)
    await audit(request, "logout", actor_id=user.id, actor_email=user.email)
    queue_cookie(request, SESSION_COOKIE, None)
    raise web.HTTPSeeOther("/login")
