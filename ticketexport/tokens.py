"""API tokens: create, list, revoke, and the check every API request makes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import re
import secrets
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ticketexport import audit
from ticketexport.db import q
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Conflict, Denied, Invalid, NotFound
from ticketexport.domain.permissions import ALL_PERMISSIONS, Permission

SCOPES = ("exports:read", "exports:write", "views:read")
PREFIX = "tex_"
# secrets.token_urlsafe(32): 32 random bytes as 43 URL-safe base64 characters.
SECRET_BYTES = 32
_SECRET = re.compile(r"^tex_[A-Za-z0-9_-]{43}$")
DEFAULT_DAYS = 90
MAX_DAYS = 365
MAX_NAME = 100
# The tokens page lists at most this many; nobody keeps more than a handful.
LIST_LIMIT = 500
WINDOW_SECONDS = 60


class TokenDenied(Denied):
    default_message = "API tokens require the Import / Export Tickets permission."


class TokenNotFound(NotFound):
    default_message = "That token does not exist or you cannot see it."


class TokenInvalid(Invalid):
    """A token form field is missing or malformed (HTTP 400)."""


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    name: str
    scopes: tuple[str, ...]
    days: int


@dataclasses.dataclass(frozen=True)
class Created:
    id: int
    secret: str
    expires_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class TokenLine:
    id: int
    owner_id: int
    owner_email: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    expired: bool

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired else "active"


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who an API request acts as: its token and the token owner as they are now.
    `retry_after` is set (seconds) when the token is past its requests for this minute."""

    token_id: int
    scopes: frozenset[str]
    actor: Actor
    retry_after: int | None

    @property
    def watcher_id(self) -> str:
        """How the event hub names this token's streams (see stream_states)."""
        return f"token:{self.token_id}"


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def well_formed(secret: str) -> bool:
    return bool(_SECRET.fullmatch(secret))


def parse_request(name: str, scopes: Sequence[str], days: str) -> TokenRequest:
    """The tokens form, checked; TokenInvalid names the problem."""
    name = name.strip()
    if not name:
        raise TokenInvalid("Give the token a name.")
    if len(name) > MAX_NAME:
        raise TokenInvalid(f"The name may have at most {MAX_NAME} characters.")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise TokenInvalid("The name may not contain control characters.")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise TokenInvalid(f"Unknown scope {unknown[0][:40]!r}; use {', '.join(SCOPES)}.")
    if not scopes:
        raise TokenInvalid("Choose at least one scope.")
    days = days.strip()
    if not days:
        count = DEFAULT_DAYS
    elif days.isascii() and days.isdigit() and len(days) <= 3:
        count = int(days)
    else:
        count = 0
    if not 1 <= count <= MAX_DAYS:
        raise TokenInvalid(f"The expiry must be a whole number of days from 1 to {MAX_DAYS}.")
    return TokenRequest(name=name, scopes=tuple(s for s in SCOPES if s in scopes), days=count)


def may_create(user: Actor) -> bool:
    return user.may_export


def sees_everyones(user: Actor) -> bool:
    """Administrators with the export permission see and revoke everyone's tokens."""
    return user.may_download


async def create_token(
    conn: psycopg.AsyncConnection[Any],
    user: Actor,
    request: TokenRequest,
    *,
    client_ip: str | None,
) -> Created:
    """A new token of `user`; its secret is returned here once and stored only as a hash."""
    if not may_create(user):
        raise TokenDenied()
    secret = new_secret()
    async with conn.transaction():
        cur = await conn.execute(
            q("token_insert"),
            {
                "owner_id": user.id,
                "name": request.name,
                "scopes": list(request.scopes),
                "digest": digest(secret),
                "days": request.days,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        await audit.record(
            conn,
            "token.created",
            actor_id=user.id,
            actor_email=user.email,
            client_ip=client_ip,
            details={
                "token_id": int(row[0]),
                "name": request.name,
                "scopes": list(request.scopes),
                "expires_days": request.days,
            },
        )
    return Created(id=int(row[0]), secret=secret, expires_at=row[1])


async def list_tokens(conn: psycopg.AsyncConnection[Any], user: Actor) -> list[TokenLine]:
    """The user's tokens, or everyone's for an administrator with the export permission."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        q("token_list"),
        {"owner_id": None if sees_everyones(user) else user.id, "limit": LIST_LIMIT},
    )
    return [
        TokenLine(
            id=int(row["id"]),
            owner_id=int(row["owner_id"]),
            owner_email=row["owner_email"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            last_used_at=row["last_used_at"],
            revoked_at=row["revoked_at"],
            expired=bool(row["expired"]),
        )
        for row in await cur.fetchall()
    ]


async def revoke_token(
    conn: psycopg.AsyncConnection[Any], user: Actor, token_id: int, *, client_ip: str | None
) -> None:
    """Revoke a token: its owner, or an administrator with the export permission."""
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("token_get"), {"id": token_id})
        row = await cur.fetchone()
        if row is None or (row["owner_id"] != user.id and not sees_everyones(user)):
            raise TokenNotFound()
        revoked = await conn.execute(q("token_revoke"), {"id": token_id, "by": user.id})
        if await revoked.fetchone() is None:
            raise Conflict("This token is already revoked.")
        await audit.record(
            conn,
            "token.revoked",
            actor_id=user.id,
            actor_email=user.email,
            client_ip=client_ip,
            details={"token_id": token_id, "name": row["name"], "owner_id": row["owner_id"]},
        )


async def authenticate(
    conn: psycopg.AsyncConnection[Any],
    secret: str,
    *,
    per_minute: int,
    at: dt.datetime | None = None,
) -> Caller | None:
    """The caller behind a bearer secret, or None (unknown, revoked, expired, or its owner
    deactivated). Counts the request in the token's window, shared by every web process
    through its row; `at` is that window's clock (None: the database's)."""
    if not well_formed(secret):
        return None
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q("token_use"), {"digest": digest(secret), "at": at})
    row = await cur.fetchone()
    if row is None:
        return None
    retry_after = None
    if per_minute and row["window_requests"] > per_minute:
        ends = row["window_started_at"] + dt.timedelta(seconds=WINDOW_SECONDS)
        retry_after = max(1, math.ceil((ends - row["at"]).total_seconds()))
    actor = Actor(
        id=int(row["owner_id"]),
        email=row["email"],
        name=f"{row['first_name']} {row['last_name']}".strip(),
        is_admin=bool(row["is_admin"]),
        permissions=Permission(int(row["permissions"]) & ALL_PERMISSIONS.value),
    )
    return Caller(
        token_id=int(row["id"]),
        scopes=frozenset(row["scopes"]),
        actor=actor,
        retry_after=retry_after,
    )
