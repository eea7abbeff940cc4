"""The audit log: one row per request, outcome, download and denial."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from ticketexport.db import q

if TYPE_CHECKING:
    from ticketexport.domain.actor import Actor

# The API token a request authenticated with: every row written while it is set names the
# token (details.token_id), whatever use case writes it.
_TOKEN: contextvars.ContextVar[int | None] = contextvars.ContextVar("audit_token", default=None)


@contextlib.contextmanager
def via_token(token_id: int) -> Iterator[None]:
    """Within this block, audit rows say they were done with this API token."""
    reset = _TOKEN.set(token_id)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


def _details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    found = dict(details or {})
    token_id = _TOKEN.get()
    if token_id is not None:
        found.setdefault("token_id", token_id)
    return found


async def record(
    conn: psycopg.AsyncConnection[Any],
    action: str,
    *,
    actor_id: int | None,
    actor_email: str | None,
    client_ip: str | None = None,
    export_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Write one audit row on the caller's connection (and so in its transaction)."""
    await conn.execute(
        q("audit_insert"),
        {
            "actor_id": actor_id,
            "actor_email": actor_email,
            "action": action,
            "client_ip": client_ip,
            "export_id": export_id,
            "details": Jsonb(_details(details)),
        },
    )


async def record_by(
    conn: psycopg.AsyncConnection[Any],
    action: str,
    user: Actor,
    *,
    client_ip: str | None,
    export_id: str | None = None,
    details: Mapping[str, Any],
) -> None:
    """An audit row for something this user did, on the caller's connection."""
    await record(
        conn,
        action,
        actor_id=user.id,
        actor_email=user.email,
        client_ip=client_ip,
        export_id=export_id,
        details=details,
    )


async def record_for_requester(
    conn: psycopg.AsyncConnection[Any],
    action: str,
    *,
    export_id: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """An audit row for what a worker or maintenance did to an export, in its requester's
    name (id and e-mail as they are now): whose export it was is what the row is about."""
    await conn.execute(
        q("audit_insert_for_requester"),
        {"action": action, "export_id": export_id, "details": Jsonb(dict(details or {}))},
    )
