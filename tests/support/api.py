"""Helpers for the API tests: tokens made by the use case, bearer requests, JSON errors."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from tests.support.services import actor_for, services_for
from tests.support.web import Web
from ticketexport import tokens
from ticketexport.exports.worker import ExportRun
from ticketexport.schedules.ticker import run_due
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


async def make_schedule(web: Web, email: str) -> tuple[int, dt.datetime]:
    """A schedule of `email` (every five minutes, the view "all"), made on the schedules page
    with that user logged in; its id and first tick."""
    assert (await web.login(email)).status == 303
    token = await web.csrf("/staff/tickets")
    response = await web.client.post(
        "/staff/schedules",
        data={
            "csrf_token": token,
            "view": "all",
            "name": "Nightly for BI",
            "cadence": "every",
            "every_minutes": "5",
        },
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    match = re.fullmatch(r"/staff/schedules/([0-9]+)", response.headers["Location"])
    assert match, response.headers["Location"]
    schedule_id = int(match.group(1))
    async with web.pool.connection() as conn:
        cur = await conn.execute("SELECT next_tick FROM schedules WHERE id = %s", (schedule_id,))
        row = await cur.fetchone()
    assert row is not None
    return schedule_id, row[0]


async def run_schedules(web: Web, tick: dt.datetime, *, finish: bool = True) -> dict[int, str]:
    """The ticker at `tick`: each schedule's run made then (by schedule id), run to its end
    by a worker unless `finish` is false."""
    runs: dict[int, str] = {}
    for taken in await run_due(web.services, tick):
        assert taken.outcome == "run", taken
        assert taken.export_id is not None
        runs[taken.schedule_id] = taken.export_id
        if finish:
            await ExportRun(web.services, taken.export_id, None).run()
    return runs
