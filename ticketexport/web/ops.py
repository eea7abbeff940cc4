"""Operations endpoints: /healthz for load balancers, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from ticketexport import db
from ticketexport.db import q
from ticketexport.web.state import SETTINGS, pool_of

log = logging.getLogger(__name__)

# A health check must answer quickly even when the database hangs.
CHECK_TIMEOUT = 3.0
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400)


async def _migration_problem(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """None when every migration is applied unchanged, else what is wrong."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    exists = await cur.fetchone()
    applied: dict[str, str] = {}
    if exists and exists[0]:
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
        applied = {row[0]: row[1] for row in await cur.fetchall()}
    try:
        pending = db.unapplied(applied)
    except db.MigrationError:
        return "an applied migration was changed"
    return f"{len(pending)} pending" if pending else None


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, no migration is pending and a worker was seen."""
    settings = request.app[SETTINGS]
    checks: dict[str, Any] = {"database": "ok", "migrations": "ok", "worker": "ok"}
    healthy = True
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with pool_of(request).connection(timeout=CHECK_TIMEOUT) as conn:
                problem = await _migration_problem(conn)
                if problem:
                    checks["migrations"] = problem
                    healthy = False
                else:
                    cur = await conn.execute(
                        q("live_workers"), {"seconds": settings.worker_seen_seconds}
                    )
                    row = await cur.fetchone()
                    if not row or row[0] == 0:
                        checks["worker"] = "none seen recently"
                        healthy = False
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("health check: database unavailable (%s)", type(exc).__name__)
        checks = {"database": "unavailable", "migrations": "unknown", "worker": "unknown"}
        healthy = False
    checks["status"] = "ok" if healthy else "unhealthy"
    return web.json_response(
        checks, status=200 if healthy else 503, headers={"Cache-Control": "no-store"}
    )


def _line(name: str, value: float | int, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, read from the database so every web process agrees."""
    settings = request.app[SETTINGS]
    try:
        async with pool_of(request).connection(timeout=CHECK_TIMEOUT) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("metrics_exports_by_status"))
            by_status = await cur.fetchall()
            await cur.execute(q("metrics_export_totals"), {"buckets": list(DURATION_BUCKETS)})
            totals = await cur.fetchone()
            await cur.execute(q("metrics_queue"), {"seconds": settings.worker_seen_seconds})
            queue = await cur.fetchone()
    except (psycopg.Error, OSError, TimeoutError):
        log.warning("metrics: database unavailable")
        return web.Response(
            status=503,
            text="# database unavailable\nticketexport_up 0\n",
            content_type="text/plain",
        )
    assert totals is not None
    assert queue is not None
    out = [
        "# HELP ticketexport_up Whether this process reached the database.",
        "# TYPE ticketexport_up gauge",
        _line("ticketexport_up", 1),
        "# HELP ticketexport_exports Exports by status.",
        "# TYPE ticketexport_exports gauge",
    ]
    seen = {row["status"]: row["n"] for row in by_status}
    for status in ("queued", "running", "completed", "failed", "cancelled", "expired"):
        out.append(_line("ticketexport_exports", seen.get(status, 0), {"status": status}))
    out += [
        "# HELP ticketexport_export_rows_total Rows written by completed exports.",
        "# TYPE ticketexport_export_rows_total counter",
        _line("ticketexport_export_rows_total", totals["rows"]),
        "# HELP ticketexport_export_bytes_total Bytes stored by completed exports.",
        "# TYPE ticketexport_export_bytes_total counter",
        _line("ticketexport_export_bytes_total", totals["bytes"]),
        "# HELP ticketexport_export_duration_seconds Start to completion of exports.",
        "# TYPE ticketexport_export_duration_seconds histogram",
    ]
    for le, count in zip(DURATION_BUCKETS, totals["bucket_counts"], strict=True):
        out.append(_line("ticketexport_export_duration_seconds_bucket", count, {"le": str(le)}))
    out += [
        _line("ticketexport_export_duration_seconds_bucket", totals["completed"], {"le": "+Inf"}),
        _line("ticketexport_export_duration_seconds_sum", round(totals["duration_sum"], 3)),
        _line("ticketexport_export_duration_seconds_count", totals["completed"]),
        "# HELP ticketexport_queue_depth Jobs waiting to run, by queue.",
        "# TYPE ticketexport_queue_depth gauge",
        _line("ticketexport_queue_depth", queue["exports_waiting"], {"queue": "exports"}),
        "# HELP ticketexport_live_workers Workers with a recent heartbeat.",
        "# TYPE ticketexport_live_workers gauge",
        _line("ticketexport_live_workers", queue["live_workers"]),
    ]
    return web.Response(
        text="\n".join(out) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
