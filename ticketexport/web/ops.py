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
from ticketexport.config import Settings
from ticketexport.db import q
from ticketexport.domain.exports import Status
from ticketexport.services import Services
from ticketexport.standby import StandbyStatus, standby_status
from ticketexport.storage import StorageError
from ticketexport.web.health import CachedCheck, CheckState, HealthChecks
from ticketexport.web.keys import HEALTH, LOGIN_GATE, SERVICES, pool_of, services_of, settings_of
from ticketexport.web.signin_gate import SignInGate

log = logging.getLogger(__name__)

# A health check must answer quickly even when the database hangs.
CHECK_TIMEOUT = 3.0
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400)


async def _migrations_state(conn: psycopg.AsyncConnection[Any]) -> CheckState:
    """ok when every migration is applied unchanged; pending or changed otherwise (503)."""
    cur = await conn.execute(q("migrations_table_exists"))
    exists = await cur.fetchone()
    applied: dict[str, str] = {}
    if exists and exists[0]:
        cur = await conn.execute(q("migrations_applied"))
        applied = {row[0]: row[1] for row in await cur.fetchall()}
    try:
        pending = db.unapplied(applied)
    except db.MigrationError as exc:
        return CheckState("changed", {"problem": str(exc)}, failing=True)
    if pending:
        return CheckState("pending", {"pending": [m.name for m in pending]}, failing=True)
    return CheckState("ok")


async def _database_states(services: Services) -> Mapping[str, CheckState]:
    """The database, its migrations and the workers it has seen, over one connection and
    probed for every request: /healthz must follow the database at once."""
    seconds = services.settings.worker_seen_seconds
    ok, unknown = CheckState("ok"), CheckState("unknown")
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with services.pool.connection(timeout=CHECK_TIMEOUT) as conn:
                migrations = await _migrations_state(conn)
                if migrations.failing:
                    return {
                        "database": CheckState("ok"),
                        "migrations": migrations,
                        "worker": unknown,
                    }
                cur = await conn.execute(q("live_workers"), {"seconds": seconds})
                row = await cur.fetchone()
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning("health check: database unavailable (%s)", type(exc).__name__)
        return {
            "database": CheckState("unavailable", failing=True),
            "migrations": unknown,
            "worker": unknown,
        }
    live = int(row[0]) if row else 0
    details = {"live": live, "seen_within_seconds": seconds}
    worker = CheckState("ok", details) if live else CheckState("missing", details, failing=True)
    return {"database": ok, "migrations": migrations, "worker": worker}


async def _standby_state(services: Services) -> Mapping[str, CheckState]:
    """The export standby, when one is configured: reported, never a reason for 503, since
    exports fall back to the primary."""
    standby = await standby_status(services)
    if standby is None:
        return {}
    details = {
        key: value
        for key, value in (("lag_seconds", standby.lag_seconds), ("lag_bytes", standby.lag_bytes))
        if value is not None
    }
    return {"standby": CheckState(standby.state, details)}


async def _storage_state(services: Services) -> Mapping[str, CheckState]:
    """ok when the configured store answers a read-only check, else unavailable. Reported,
    not a reason for 503: pages and event streams work without the store, and a load
    balancer taking every web process out for it would make that worse."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await services.storage.check()
    except (StorageError, OSError, TimeoutError) as exc:
        log.warning("health check: storage unavailable (%s)", type(exc).__name__)
        return {"storage": CheckState("unavailable")}
    return {"storage": CheckState("ok")}


def health_checks(settings: Settings) -> HealthChecks:
    """The checks of /healthz. A load balancer may ask several times a second: the storage
    and standby probes (a call to the store, queries on two servers) are kept for
    `health_cache_seconds`; the database's own are made for every request."""
    cached = settings.health_cache_seconds
    return HealthChecks(
        [
            CachedCheck(_database_states, 0),
            CachedCheck(_standby_state, cached),
            CachedCheck(_storage_state, cached),
        ]
    )


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, no migration is pending and a worker was seen.

    Anyone gets the status and a word per check; the details need the metrics token when
    one is set (they tell an outsider about lags and the schema)."""
    report = await request.app[HEALTH].report(services_of(request))
    body = report.detailed() if _metrics_allowed(request) else report.public()
    return web.json_response(
        body, status=200 if report.healthy else 503, headers={"Cache-Control": "no-store"}
    )


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
    history_rows: Sequence[Mapping[str, Any]] = ()
    kept_clicks: Mapping[str, Any] | None = None


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
        history = GaugeMetricFamily(
            "ticketexport_history_rows",
            "Row versions kept for as-of reads, by versioned table (the statistics' estimate).",
            labels=["table"],
        )
        for row in reading.history_rows:
            history.add_metric([row["history"].removesuffix("_history")], row["n"])
        yield history
        if reading.kept_clicks is not None:
            kept = GaugeMetricFamily(
                "ticketexport_history_kept_clicks",
                "Export clicks whose row versions history pruning keeps: of unfinished exports "
                "(and the bases of unfinished files of changes), and of completed, unexpired "
                "exports kept only as possible bases of changes since them.",
                labels=["reason"],
            )
            kept.add_metric(["unfinished"], reading.kept_clicks["unfinished"])
            kept.add_metric(["possible_base"], reading.kept_clicks["possible_base"])
            yield kept
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


class _SignInCollector(Collector):
    """This process's sign-in gate: how many sign-ins run and wait, and how many it refused."""

    def __init__(self, gate: SignInGate) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ticketexport_sign_ins_running",
            "Sign-ins this web process is checking now.",
            value=self._gate.running,
        )
        yield GaugeMetricFamily(
            "ticketexport_sign_ins_waiting",
            "Sign-ins waiting for a turn in this web process.",
            value=self._gate.waiting,
        )
        yield GaugeMetricFamily(
            "ticketexport_sign_ins_queued",
            "Of the waiting sign-ins, those past the throttle's check and waiting for a turn.",
            value=self._gate.queued,
        )
        yield CounterMetricFamily(
            "ticketexport_sign_ins_refused",
            "Sign-ins this web process refused (503) because too many were waiting.",
            value=self._gate.refused,
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
        await cur.execute(
            q("metrics_history_rows"), {"tables": [f"{t}_history" for t in db.VERSIONED_TABLES]}
        )
        history_rows = await cur.fetchall()
        await cur.execute(q("metrics_history_kept_clicks"))
        kept_clicks = await cur.fetchone()
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
        history_rows=history_rows,
        kept_clicks=kept_clicks,
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
    registry.register(_SignInCollector(request.app[LOGIN_GATE]))
    ProcessCollector(registry=registry)
    return web.Response(
        body=generate_latest(registry),
        status=503 if reading is None else 200,
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app[HEALTH] = health_checks(app[SERVICES].settings)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
