"""Operations endpoints: /healthz for load balancers, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

from ticketexport import db
from ticketexport.db import q
from ticketexport.domain.exports import Status
from ticketexport.standby import StandbyStatus, standby_status
from ticketexport.storage import StorageError
from ticketexport.web.keys import pool_of, services_of, settings_of

log = logging.getLogger(__name__)

# A health check must answer quickly even when the database hangs.
CHECK_TIMEOUT = 3.0
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400)


async def _migration_problem(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """None when every migration is applied unchanged, else what is wrong."""
    cur = await conn.execute(q("migrations_table_exists"))
    exists = await cur.fetchone()
    applied: dict[str, str] = {}
    if exists and exists[0]:
        cur = await conn.execute(q("migrations_applied"))
        applied = {row[0]: row[1] for row in await cur.fetchall()}
    try:
        pending = db.unapplied(applied)
    except db.MigrationError:
        return "an applied migration was changed"
    return f"{len(pending)} pending" if pending else None


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, no migration is pending and a worker was seen."""
    settings = settings_of(request)
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
    standby = await standby_status(services_of(request))
    if standby is not None:
        # Reported, never a reason for 503: exports fall back to the primary.
        checks["standby"] = dataclasses.asdict(standby)
    # Reported, not a reason for 503: pages and event streams work without the store, and
    # a load balancer taking every web process out for it would make that worse.
    checks["storage"] = await _storage_state(request)
    checks["status"] = "ok" if healthy else "unhealthy"
    return web.json_response(
        checks, status=200 if healthy else 503, headers={"Cache-Control": "no-store"}
    )


async def _storage_state(request: web.Request) -> str:
    """ "ok" when the configured store answers a read-only check, else "unavailable"."""
    storage = services_of(request).storage
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await storage.check()
    except (StorageError, OSError, TimeoutError) as exc:
        log.warning("health check: storage unavailable (%s)", type(exc).__name__)
        return "unavailable"
    return "ok"


@dataclasses.dataclass(frozen=True)
class _Reading:
    """One scrape's figures, read from the database so every web process agrees."""

    by_status: Mapping[str, int]
    totals: Mapping[str, Any]
    queue: Mapping[str, Any]
    reads: Sequence[Mapping[str, Any]] = ()
    standby: StandbyStatus | None = None
    cleanup: Mapping[str, Any] | None = None
    download_failures: Sequence[Mapping[str, Any]] = ()


class _ExportCollector(Collector):
    """Turns one reading into metric families (prometheus_client's collector protocol)."""

    def __init__(self, reading: _Reading | None) -> None:
        self._reading = reading

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ticketexport_up", "Whether this process reached the database.")
        up.add_metric([], 0 if self._reading is None else 1)
        yield up
        reading = self._reading
        if reading is None:
            return
        exports = GaugeMetricFamily("ticketexport_exports", "Exports by status.", labels=["status"])
        for status in Status:
            exports.add_metric([status.value], reading.by_status.get(status.value, 0))
        yield exports
        totals = reading.totals
        yield CounterMetricFamily(
            "ticketexport_export_rows", "Rows written by completed exports.", value=totals["rows"]
        )
        yield CounterMetricFamily(
            "ticketexport_export_bytes",
            "Bytes stored by completed exports.",
            value=totals["bytes"],
        )
        buckets: Sequence[tuple[str, float]] = [
            (str(le), count)
            for le, count in zip(DURATION_BUCKETS, totals["bucket_counts"], strict=True)
        ]
        yield HistogramMetricFamily(
            "ticketexport_export_duration_seconds",
            "Start to completion of exports.",
            buckets=[*buckets, ("+Inf", totals["completed"])],
            sum_value=round(totals["duration_sum"], 3),
        )
        depth = GaugeMetricFamily(
            "ticketexport_queue_depth", "Jobs waiting to run, by queue.", labels=["queue"]
        )
        depth.add_metric(["exports"], reading.queue["exports_waiting"])
        yield depth
        yield GaugeMetricFamily(
            "ticketexport_live_workers",
            "Workers with a recent heartbeat.",
            value=reading.queue["live_workers"],
        )
        reads = CounterMetricFamily(
            "ticketexport_export_reads",
            "Export attempts by the server they read (the latest attempt of each export), "
            "and why the primary when a standby is configured.",
            labels=["source", "fallback"],
        )
        for row in reading.reads:
            reads.add_metric([row["read_from"], row["fallback"]], row["n"])
        yield reads
        if reading.cleanup is not None:
            yield GaugeMetricFamily(
                "ticketexport_expired_files_pending",
                "Exports past their expiry whose file is not deleted yet.",
                value=reading.cleanup["awaiting"],
            )
            yield CounterMetricFamily(
                "ticketexport_file_cleanup_failures",
                "Deletions of expired exports' files that failed (each is retried).",
                value=reading.cleanup["failures"],
            )
        failures = CounterMetricFamily(
            "ticketexport_download_failures",
            "Downloads that did not deliver the file, by reason: missing, unavailable (the "
            "store did not answer), size_mismatch, digest_mismatch, interrupted.",
            labels=["reason"],
        )
        for row in reading.download_failures:
            failures.add_metric([row["reason"]], row["n"])
        yield failures
        standby = reading.standby
        if standby is not None:
            up = GaugeMetricFamily(
                "ticketexport_standby_up", "Whether the export standby answers as a standby."
            )
            up.add_metric([], 1 if standby.state in ("ok", "lagging") else 0)
            yield up
            if standby.lag_seconds is not None:
                yield GaugeMetricFamily(
                    "ticketexport_standby_replay_lag_seconds",
                    "How far the export standby's replay is behind the primary.",
                    value=standby.lag_seconds,
                )
                yield GaugeMetricFamily(
                    "ticketexport_standby_replay_lag_bytes",
                    "WAL the export standby has yet to replay.",
                    value=standby.lag_bytes or 0,
                )


async def _read(request: web.Request) -> _Reading:
    async with pool_of(request).connection(timeout=CHECK_TIMEOUT) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(q("metrics_exports_by_status"))
        by_status = {row["status"]: row["n"] for row in await cur.fetchall()}
        await cur.execute(q("metrics_export_totals"), {"buckets": list(DURATION_BUCKETS)})
        totals = await cur.fetchone()
        await cur.execute(q("metrics_queue"), {"seconds": settings_of(request).worker_seen_seconds})
        queue = await cur.fetchone()
        await cur.execute(q("metrics_export_reads"))
        reads = await cur.fetchall()
        await cur.execute(q("metrics_cleanup"))
        cleanup = await cur.fetchone()
        await cur.execute(q("metrics_download_failures"))
        download_failures = await cur.fetchall()
    assert totals is not None
    assert queue is not None
    standby = await standby_status(services_of(request))
    return _Reading(
        by_status=by_status,
        totals=totals,
        queue=queue,
        reads=reads,
        standby=standby,
        cleanup=cleanup,
        download_failures=download_failures,
    )


def _metrics_allowed(request: web.Request) -> bool:
    """With TICKETEXPORT_METRICS_TOKEN set, the scraper must send it as a bearer token."""
    token = settings_of(request).metrics_token
    if token is None:
        return True
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not sent.isascii():
        return False
    # Constant time: how much of a guess was right must not show in how long it took.
    return hmac.compare_digest(sent.strip().encode(), token.encode())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: the exports as the database has them, and this process."""
    if not _metrics_allowed(request):
        return web.Response(
            status=401,
            text="401: a bearer token is required for /metrics\n",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"},
        )
    reading: _Reading | None
    try:
        reading = await _read(request)
    except (psycopg.Error, OSError, TimeoutError):
        log.warning("metrics: database unavailable")
        reading = None
    # A registry per scrape: the database figures are this scrape's own reading.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ExportCollector(reading))
    ProcessCollector(registry=registry)
    return web.Response(
        body=generate_latest(registry),
        status=503 if reading is None else 200,
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
