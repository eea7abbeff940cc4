"""The audit log: one row per request, outcome, download and denial."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ticketexport.db import q


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
            "details": Jsonb(dict(details or {})),
        },
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
