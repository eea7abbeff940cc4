"""Signing in: the throttle on failed attempts, the password check and the new session."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ticketexport import audit as audit_log
from ticketexport import db
from ticketexport.config import Network
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission
from ticketexport.services import Services

# Failed sign-ins allowed within the window for one e-mail address from one client network,
# and from one client network for any addresses, before further attempts that match are
# refused (brief: login throttling).
EMAIL_ATTEMPTS = 10
NETWORK_ATTEMPTS = 100
# An IPv6 client is counted by its /64, which one host or site holds whole: counted by
# address, it could make each guess from a new one.
IPV6_PREFIX = 64

MAX_EMAIL = 254
MAX_PASSWORD = 1024
# A session ends after 12 hours without a request, and 7 days after sign-in regardless.
IDLE_SECONDS = 12 * 3600
ABSOLUTE_SECONDS = 7 * 24 * 3600
# Writing last_seen_at on every request would turn each page view into a write.
TOUCH_AFTER_SECONDS = 60

# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$LLsamOi+gf0LDFjOmwU6iA$"
    "BpORrNdctK8Kwrr0rrSvDxAueRgw4Wb5YfpOXx6Gh+4"
)

Verify = Callable[[str, str], Awaitable[bool]]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def client_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network:
    """The network the throttle counts a client by: its IPv4 address, or its IPv6 /64."""
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv4Network(address)
    return ipaddress.IPv6Network(f"{address}/{IPV6_PREFIX}", strict=False)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One sign-in as the form sent it, and where from."""

    email: str  # trimmed and lower-cased, as typed
    password: str
    network: Network
    client_ip: str
    user_agent: str = ""
    # The session cookie the browser still holds, if any: replaced, never reused.
    old_session: str | None = None

    @property
    def shown_email(self) -> str:
        """The address as the form shows it again and audit rows record it."""
        return storable(self.email[:MAX_EMAIL])

    @property
    def plausible(self) -> bool:
        """Whether the fields could be a user's at all (else no hash is looked up)."""
        return (
            0 < len(self.email) <= MAX_EMAIL
            and storable(self.email) == self.email
            and 0 < len(self.password) <= MAX_PASSWORD
        )


def storable(text: str) -> str:
    """`text` without what PostgreSQL text cannot hold (NUL, lone surrogates)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


@dataclasses.dataclass(frozen=True)
class Throttle:
    """Seconds until each limit lets an attempt through (None: it does now)."""

    email_wait: float | None
    network_wait: float | None

    @property
    def retry_after(self) -> int | None:
        waits = [w for w in (self.email_wait, self.network_wait) if w is not None]
        return max(1, math.ceil(max(waits))) if waits else None

    @property
    def limit(self) -> str:
        """Which limit refuses: "email" (the address from this network) or "network"."""
        return "email" if self.email_wait is not None else "network"


def _throttle(row: tuple[Any, ...] | None) -> Throttle:
    assert row is not None
    return Throttle(
        email_wait=None if row[0] is None else float(row[0]),
        network_wait=None if row[1] is None else float(row[1]),
    )


def _check_params(services: Services, attempt: Attempt) -> dict[str, Any]:
    return {
        "email": attempt.shown_email,
        "network": str(attempt.network),
        "window": services.settings.login_window_seconds,
        "email_limit": EMAIL_ATTEMPTS,
        "network_limit": NETWORK_ATTEMPTS,
    }


async def throttle_now(services: Services, attempt: Attempt) -> Throttle:
    """Whether the throttle refuses this attempt now: a look without locks or writes, made
    before the attempt waits for its turn, so a refused one never takes a place."""
    async with services.pool.connection() as conn:
        cur = await conn.execute(db.q("login_throttle_check"), _check_params(services, attempt))
        return _throttle(await cur.fetchone())


async def _reserve(services: Services, attempt: Attempt) -> tuple[Throttle, int | None]:
    """Check the throttle and, if the attempt may go ahead, record it as a failure-to-be.

    The attempt is written before its password is checked, under a lock on the address
    from the network and on the network, so guesses racing each other (in this process or
    another) are counted before any of them is verified. The row goes again when the
    password was right.
    """
    params = _check_params(services, attempt)
    async with services.pool.connection() as conn, conn.transaction():
        await conn.execute(db.q("login_throttle_lock"), params)
        cur = await conn.execute(db.q("login_throttle_check"), params)
        throttle = _throttle(await cur.fetchone())
        if throttle.retry_after is not None:
            return throttle, None
        cur = await conn.execute(db.q("login_attempt_insert"), params)
        inserted = await cur.fetchone()
        assert inserted is not None
        await conn.execute(db.q("login_attempts_prune"), params)
    return throttle, int(inserted[0])


async def record_refusal(services: Services, attempt: Attempt, throttle: Throttle) -> None:
    """Audit a refused attempt once per throttled key and window: a flood of refusals is one
    row, not one per request."""
    retry_after = throttle.retry_after
    assert retry_after is not None
    network = str(attempt.network)
    if throttle.limit == "email":
        key = f"email {attempt.shown_email} from {network}"
    else:
        key = f"network {network}"
    async with services.pool.connection() as conn:
        cur = await conn.execute(
            db.q("login_throttle_audit_claim"), {"key": key, "seconds": retry_after}
        )
        if await cur.fetchone() is None:
            return
        await conn.execute(db.q("login_throttle_audits_prune"))
        await audit_log.record(
            conn,
            "login.throttled",
            actor_id=None,
            actor_email=attempt.shown_email or None,
            client_ip=attempt.client_ip,
            details={"limit": throttle.limit, "network": network, "retry_after": retry_after},
        )


@dataclasses.dataclass(frozen=True)
class Throttled:
    throttle: Throttle


@dataclasses.dataclass(frozen=True)
class Failed:
    """Wrong address or password, an inactive user or a malformed form (audited)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class SignedIn:
    """A new session: its cookie token."""

    token: str


async def sign_in(
    services: Services, attempt: Attempt, verify: Verify
) -> Throttled | Failed | SignedIn:
    """Check the throttle, then the password (with `verify`, off the event loop); a right
    one for an active user starts a session. Refusals and failures are audited."""
    # Checked first, whatever the password: a right one does not get through meanwhile.
    throttle, attempt_id = await _reserve(services, attempt)
    if attempt_id is None:
        await record_refusal(services, attempt, throttle)
        return Throttled(throttle)

    user: dict[str, Any] | None = None
    if attempt.plausible:
        async with services.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(db.q("user_by_email"), {"email": attempt.email})
            user = await cur.fetchone()
    hashed = user["password_hash"] if user else _DUMMY_HASH
    verified = attempt.plausible and await verify(hashed, attempt.password)
    if not attempt.plausible:
        reason = "malformed"
    elif user is None:
        reason = "unknown_email"
    elif not verified:
        reason = "bad_password"
    else:
        reason = "" if user["is_active"] else "inactive"
    if user is None or reason:
        # The attempt's row stays: it is one of the failures the throttle counts.
        async with services.pool.connection() as conn:
            await audit_log.record(
                conn,
                "login.failed",
                actor_id=user["id"] if user else None,
                actor_email=attempt.shown_email or None,
                client_ip=attempt.client_ip,
                details={"reason": reason},
            )
        return Failed(reason)

    token = new_token()
    async with services.pool.connection() as conn:
        # The right password: this attempt is not a failure.
        await conn.execute(db.q("login_attempt_delete"), {"id": attempt_id})
        if attempt.old_session is not None:
            # A fresh id at every sign-in: a planted cookie never becomes a live session.
            await conn.execute(db.q("web_session_delete"), {"id": session_id(attempt.old_session)})
        await conn.execute(
            db.q("web_sessions_purge_expired"), {"user_id": user["id"], "idle": IDLE_SECONDS}
        )
        await conn.execute(
            db.q("web_session_insert"),
            {
                "id": session_id(token),
                "user_id": user["id"],
                "csrf_token": new_token(),
                "lifetime": ABSOLUTE_SECONDS,
                "client_ip": attempt.client_ip,
                "user_agent": storable(attempt.user_agent[:500]),
            },
        )
        await audit_log.record(
            conn,
            "login.succeeded",
            actor_id=user["id"],
            actor_email=user["email"],
            client_ip=attempt.client_ip,
        )
    return SignedIn(token)


# Sessions ------------------------------------------------------------------------------


async def session_user(pool: AsyncConnectionPool[Any], sid: str) -> tuple[Actor, str] | None:
    """The session's user with their permissions as they are now, and its CSRF token; None
    when there is no live session (a dead one is ended). A session seen again after
    TOUCH_AFTER_SECONDS counts as active from now."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(db.q("web_session_load"), {"id": sid})
        row = await cur.fetchone()
        if row is None:
            return None
        idle = (row["db_now"] - row["last_seen_at"]).total_seconds()
        if not session_alive(row):
            # Inactive users are signed out on their next request, not just refused.
            await conn.execute(db.q("web_session_delete"), {"id": sid})
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
    return user, str(row["csrf_token"])


async def end_session(pool: AsyncConnectionPool[Any], sid: str) -> None:
    """Sign out: the session row goes, so its cookie no longer names anything."""
    async with pool.connection() as conn:
        await conn.execute(db.q("web_session_delete"), {"id": sid})


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
