"""Staff sign-in: Postgres-backed sessions, login and logout, CSRF tokens, audit rows."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import urllib.parse
from typing import Any

from aiohttp import web
from psycopg.rows import dict_row

from ticketexport import audit as audit_log
from ticketexport import db
from ticketexport.accounts import verify_password
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission
from ticketexport.web.keys import LOGIN_KEY, SESSION, USER, Session, pool_of
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
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


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
        if row["expires_at"] <= row["db_now"] or idle >= IDLE_SECONDS or not row["is_active"]:
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


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email = _field(form, "email").strip().lower()
    password = _field(form, "password")
    target = safe_next(_field(form, "next")) or "/staff/tickets"
    shown_email = storable(email[:MAX_EMAIL])

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
    # argon2 is deliberately slow: keep it off the event loop.
    hashed = user["password_hash"] if user else _DUMMY_HASH
    verified = plausible and await asyncio.to_thread(verify_password, hashed, password)
    if user is not None:
        reason = "bad_password"
        if verified:
            reason = "inactive" if not user["is_active"] else ""
    if not plausible:
        reason = "malformed"
    if user is None or not verified or not user["is_active"]:
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
