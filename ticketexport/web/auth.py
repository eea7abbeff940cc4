"""Staff sign-in: Postgres-backed sessions, login and logout, CSRF tokens, audit rows."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import math
import re
import secrets
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from ticketexport import audit as audit_log
from ticketexport import db
from ticketexport.accounts import verify_password
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission
from ticketexport.web.keys import (
    LOGIN_GATE,
    LOGIN_KEY,
    PASSWORD_EXECUTOR,
    SESSION,
    USER,
    Session,
    pool_of,
    settings_of,
)
from ticketexport.web.render import render
from ticketexport.web.security import client_ip, queue_cookie, safe_next, storable

log = logging.getLogger(__name__)

SESSION_COOKIE = "te_session"
LOGIN_COOKIE = "te_login"
# A session ends after 12 hours without a request, and 7 days after sign-in regardless.
IDLE_SECONDS = 12 * 3600
ABSOLUTE_SECONDS = 7 * 24 * 3600
# Writing last_seen_at on every request would turn each page view into a write.
TOUCH_AFTER_SECONDS = 60

MAX_EMAIL = 254
MAX_PASSWORD = 1024

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
GENERIC_FAILURE = "Email or password is incorrect."

# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$LLsamOi+gf0LDFjOmwU6iA$"
    "BpORrNdctK8Kwrr0rrSvDxAueRgw4Wb5YfpOXx6Gh+4"
)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


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
    async with pool_of(request).connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(db.q("web_session_load"), {"id": sid})
        row = await cur.fetchone()
        if row is None:
            queue_cookie(request, SESSION_COOKIE, None)
            return None
        idle = (row["db_now"] - row["last_seen_at"]).total_seconds()
        if not session_alive(row):
            # Inactive users are signed out on their next request, not just refused.
            await conn.execute(db.q("web_session_delete"), {"id": sid})
            queue_cookie(request, SESSION_COOKIE, None)
            return None
        if idle >= TOUCH_AFTER_SECONDS:
            await conn.execute(db.q("web_session_touch"), {"id": sid})
    user = Actor(
        id=int(row["id"]),
        email=row["email"],
        name=f"{row['first_name']} {row['last_name']}".strip(),
        is_admin=bool(row["is_admin"]),
        permissions=Permission(int(row["permissions"]) & ALL_PERMISSIONS.value),
    )
    return user, Session(id=sid, csrf_token=row["csrf_token"])


def session_alive(row: Mapping[str, Any]) -> bool:
    """Whether a session (expires_at, last_seen_at, db_now) of a user (is_active) is live:
    not past its absolute lifetime, not idle too long, and its user still active."""
    idle = (row["db_now"] - row["last_seen_at"]).total_seconds()
    return bool(row["expires_at"] > row["db_now"] and idle < IDLE_SECONDS and row["is_active"])


def current_actor(user: Actor, viewer: Mapping[str, Any]) -> Actor | None:
    """`user` as a fresh read of their session says they are now; None once it ended."""
    if not session_alive(viewer) or int(viewer["user_id"]) != user.id:
        return None
    return dataclasses.replace(
        user,
        is_admin=bool(viewer["is_admin"]),
        permissions=Permission(int(viewer["permissions"]) & ALL_PERMISSIONS.value),
    )


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


# Failed sign-ins allowed within the window, per address and per client, before further
# attempts are refused (brief: login throttling).
EMAIL_ATTEMPTS = 10
CLIENT_ATTEMPTS = 100
THROTTLED = "Too many failed sign-in attempts. Try again in {wait}."


@dataclasses.dataclass(frozen=True)
class _Throttle:
    """Seconds until each limit lets this attempt through (None: it does now)."""

    email_wait: float | None
    client_wait: float | None

    @property
    def retry_after(self) -> int | None:
        waits = [w for w in (self.email_wait, self.client_wait) if w is not None]
        return max(1, math.ceil(max(waits))) if waits else None


async def _reserve_attempt(
    request: web.Request, email: str, address: str | None
) -> tuple[_Throttle, int | None]:
    """Check the throttle and, if the attempt may go ahead, record it as a failure-to-be.

    The attempt is written before its password is checked, under a lock on the address and
    the client, so guesses racing each other (in this process or another) are counted
    before any of them is verified. The row goes again when the password was right.
    """
    window = settings_of(request).login_window_seconds
    async with pool_of(request).connection() as conn, conn.transaction():
        await conn.execute(
            db.q("login_throttle_lock"), {"email": email, "client_ip": address or ""}
        )
        cur = await conn.execute(
            db.q("login_throttle_check"),
            {
                "email": email,
                "client_ip": address,
                "window": window,
                "email_limit": EMAIL_ATTEMPTS,
                "client_limit": CLIENT_ATTEMPTS,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        throttle = _Throttle(
            email_wait=None if row[0] is None else float(row[0]),
            client_wait=None if row[1] is None else float(row[1]),
        )
        if throttle.retry_after is not None:
            return throttle, None
        cur = await conn.execute(
            db.q("login_attempt_insert"), {"email": email, "client_ip": address}
        )
        inserted = await cur.fetchone()
        assert inserted is not None
        await conn.execute(db.q("login_attempts_prune"), {"window": window})
    return throttle, int(inserted[0])


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


async def _throttled(
    request: web.Request, throttle: _Throttle, shown_email: str
) -> web.StreamResponse:
    retry_after = throttle.retry_after
    assert retry_after is not None
    await audit(
        request,
        "login.throttled",
        actor_id=None,
        actor_email=shown_email or None,
        details={
            "limit": "email" if throttle.email_wait is not None else "client",
            "retry_after": retry_after,
        },
    )
    response = await login_form(
        request,
        error=THROTTLED.format(wait=_wait_text(retry_after)),
        email=shown_email,
        status=429,
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


async def _verify(request: web.Request, hashed: str, password: str) -> bool:
    # argon2 is deliberately slow: off the event loop, on the threads kept for it.
    loop = asyncio.get_running_loop()
    executor = request.app[PASSWORD_EXECUTOR]
    return await loop.run_in_executor(executor, verify_password, hashed, password)


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    async with request.app[LOGIN_GATE]:
        return await _sign_in(request, form)


async def _sign_in(request: web.Request, form: Mapping[str, Any]) -> web.StreamResponse:
    email = _field(form, "email").strip().lower()
    password = _field(form, "password")
    target = safe_next(_field(form, "next")) or "/staff/tickets"
    shown_email = storable(email[:MAX_EMAIL])

    # Checked first, whatever the password: a right one does not get through meanwhile.
    throttle, attempt_id = await _reserve_attempt(request, shown_email, client_ip(request))
    if attempt_id is None:
        return await _throttled(request, throttle, shown_email)

    user: dict[str, Any] | None = None
    reason = "unknown_email"
    plausible = (
        0 < len(email) <= MAX_EMAIL
        and storable(email) == email
        and 0 < len(password) <= MAX_PASSWORD
    )
    if plausible:
        async with pool_of(request).connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(db.q("user_by_email"), {"email": email})
            user = await cur.fetchone()
    hashed = user["password_hash"] if user else _DUMMY_HASH
    verified = plausible and await _verify(request, hashed, password)
    if user is not None:
        reason = "bad_password"
        if verified:
            reason = "inactive" if not user["is_active"] else ""
    if not plausible:
        reason = "malformed"
    if user is None or not verified or not user["is_active"]:
        # The attempt's row stays: it is one of the failures the throttle counts.
        await audit(
            request,
            "login.failed",
            actor_id=user["id"] if user else None,
            actor_email=shown_email or None,
            details={"reason": reason},
        )
        return await login_form(request, error=GENERIC_FAILURE, email=shown_email, status=400)

    token = new_token()
    sid = session_id(token)
    async with pool_of(request).connection() as conn:
        # The right password: this attempt is not a failure.
        await conn.execute(db.q("login_attempt_delete"), {"id": attempt_id})
        old = request.cookies.get(SESSION_COOKIE)
        if old and _TOKEN.match(old):
            # A fresh id at every sign-in: a planted cookie never becomes a live session.
            await conn.execute(db.q("web_session_delete"), {"id": session_id(old)})
        await conn.execute(
            db.q("web_sessions_purge_expired"), {"user_id": user["id"], "idle": IDLE_SECONDS}
        )
        await conn.execute(
            db.q("web_session_insert"),
            {
                "id": sid,
                "user_id": user["id"],
                "csrf_token": new_token(),
                "lifetime": ABSOLUTE_SECONDS,
                "client_ip": client_ip(request),
                "user_agent": storable(request.headers.get("User-Agent", "")[:500]),
            },
        )
    await audit(request, "login.succeeded", actor_id=user["id"], actor_email=user["email"])
    queue_cookie(request, SESSION_COOKIE, token, max_age=ABSOLUTE_SECONDS)
    raise web.HTTPSeeOther(target)


async def logout_post(request: web.Request) -> web.StreamResponse:
    user = request[USER]
    async with pool_of(request).connection() as conn:
        await conn.execute(db.q("web_session_delete"), {"id": request[SESSION].id})
    await audit(request, "logout", actor_id=user.id, actor_email=user.email)
    queue_cookie(request, SESSION_COOKIE, None)
    raise web.HTTPSeeOther("/login")
