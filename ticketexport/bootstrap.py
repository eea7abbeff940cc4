"""The composition root: builds, per process, everything that process runs on."""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import AsyncIterator
from typing import Any

import procrastinate
import psycopg
from psycopg_pool import AsyncConnectionPool

from ticketexport import events, jobs
from ticketexport.config import Settings
from ticketexport.services import Services
from ticketexport.storage import Storage
from ticketexport.storage.backends import from_url as storage_from_url
from ticketexport.storage.marker import installation_of

log = logging.getLogger(__name__)

# Connections a web process uses at once: page queries, event fetches, downloads' checks.
WEB_CONNECTIONS = 10
# Beyond one per export slot: procrastinate's fetch, heartbeat and abort checks, the
# maintenance worker and each running export's heartbeat and progress writes.
WORKER_SPARE_CONNECTIONS = 4
POOL_OPEN_TIMEOUT = 30.0


async def _check_unsolicited(conn: psycopg.AsyncConnection[Any]) -> None:
    """Check a pooled connection before it is handed out, without a round trip when it can.

    After a database restart every idle connection is dead. The server closing a connection
    leaves its goodbye (or EOF) waiting on the socket, while a live idle connection has
    nothing to read: only a connection with something waiting is pinged (and dropped by the
    pool if the ping fails). Pinging every checkout would add a round trip to each query.
    """
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def make_pool(url: str, *, name: str, max_size: int) -> AsyncConnectionPool[Any]:
    """The one way the package builds a connection pool (opened by the caller)."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        check=_check_unsolicited,
    )


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    database_url: str,
    *,
    web: bool = False,
    worker_concurrency: int = 0,
    storage: Storage | None = None,
) -> AsyncIterator[Services]:
    """Open everything a process needs, and close it all again in reverse order.

    `web` adds the event hub and room for page queries; `worker_concurrency` > 0 schedules
    the periodic maintenance and makes room for that many exports at once. `storage`
    replaces the configured backend (tests that break storage on purpose).
    """
    size = (WEB_CONNECTIONS if web else 0) + (
        worker_concurrency + WORKER_SPARE_CONNECTIONS if worker_concurrency else 0
    )
    pool = make_pool(database_url, name="web" if web else "worker", max_size=max(size, 2))
    app = jobs.build_app(procrastinate.PsycopgConnector())
    if worker_concurrency:
        jobs.schedule_maintenance(app, settings)
    hub = (
        events.EventHub(
            database_url,
            events.pool_fetcher(pool),
            recheck_seconds=settings.keepalive_seconds,
        )
        if web
        else None
    )
    owned_storage = storage is None
    backend = storage or storage_from_url(settings.storage_url)
    standby_pool = None
    if settings.export_database_url:
        standby_pool = make_pool(settings.export_database_url, name="standby", max_size=2)
    await pool.open(wait=True, timeout=POOL_OPEN_TIMEOUT)
    if standby_pool is not None:
        # An unreachable standby is not fatal: exports fall back to the primary.
        await standby_pool.open(wait=False)
    try:
        async with pool.connection() as conn:
            installation = await installation_of(conn)
        async with app.open_async(pool=pool):
            services = Services(
                settings=settings,
                database_url=database_url,
                pool=pool,
                storage=backend,
                jobs=app,
                installation=installation,
                hub=hub,
                standby_pool=standby_pool,
            )
            if hub is not None:
                await hub.start()
            try:
                yield services
            finally:
                if hub is not None:
                    await hub.stop()
    finally:
        with contextlib.suppress(Exception):
            await pool.close()
        if standby_pool is not None:
            with contextlib.suppress(Exception):
                await standby_pool.close()
        if owned_storage:
            with contextlib.suppress(Exception):
                await backend.close()
