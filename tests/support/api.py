"""Helpers for the API tests: tokens made by the use case, bearer requests, JSON errors."""

from __future__ import annotations

import re
from typing import Any

from tests.support.services import actor_for, services_for
from tests.support.web import Web
from ticketexport import tokens
from ticketexport.exports.worker import ExportRun
from ticketexport.tokens import TokenRequest

ALL_SCOPES = tokens.SCOPES


async def make_token(
    web: Web, email: str, scopes: tuple[str, ...] = ALL_SCOPES, days: int = 90
) -> tuple[int, str]:
    """A token of `email`, made by the use case the tokens page calls."""
    user = actor_for(web.services.database_url, email)
    async with web.pool.connection() as conn:
        created = await tokens.create_token(
            conn,
            user,
            TokenRequest(name=f"{email} token", scopes=scopes, days=days),
            client_ip=None,
        )
    return created.id, created.secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def api(web: Web, method: str, path: str, secret: str | None, **kwargs: Any) -> Any:
    """One request to /api/v1`path`, with the token when given."""
    headers = {**kwargs.pop("headers", {}), **(bearer(secret) if secret else {})}
    return await web.client.request(
        method, f"/api/v1{path}", headers=headers, allow_redirects=False, **kwargs
    )


async def error_of(response: Any, status: int) -> str:
    """The error code of a JSON error answer with this status (its shape checked)."""
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert re.fullmatch(r"[a-z][a-z_]*", body["error"]["code"])
    assert body["error"]["message"]
    return str(body["error"]["code"])


async def run_worker(db_url: str, export_id: str) -> None:
    """One attempt at the export, in this process, to its end."""
    async with services_for(db_url, env={"TICKETEXPORT_HEARTBEAT_SECONDS": "0.2"}) as services:
        async with services.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT procrastinate_job_id FROM export_jobs WHERE id = %s", (export_id,)
            )
            row = await cur.fetchone()
        assert row is not None
        await ExportRun(services, export_id, row[0]).run()
