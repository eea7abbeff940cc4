"""Long-running processes: `serve` (web), `worker` (jobs) and `demo` (both, zero-config)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg
from procrastinate.worker import Worker

from ticketexport import db, health, jobqueue
from ticketexport.bootstrap import open_services
from ticketexport.config import Settings
from ticketexport.services import Services
from ticketexport.storage import Storage, StorageError, marker, probe
from ticketexport.storage.backends import from_url

log = logging.getLogger(__name__)

DEMO_TICKETS = 20_000
# How long the start-up storage check may take (an endpoint that drops packets, not one
# that refuses, would otherwise hold the start for the SDK's retries).
STORAGE_CHECK_SECONDS = 30.0


class StartupError(Exception):
    """A start-up problem reported to the operator as one line."""


def _check_migrated(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        pending = db.pending_migrations(conn)
    if pending:
        raise StartupError(
            f"the database has {len(pending)} pending migration(s); "
            "run `ticketexport migrate` first"
        )


def _where(url: str) -> str:
    """The storage URL without its query (which may carry an endpoint's details)."""
    return url.split("?", 1)[0]


def _reason(exc: BaseException) -> str:
    """A storage error on one line, short enough for a start-up message."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


async def _checked_storage(settings: Settings, url: str) -> Storage:
    """The configured storage, once a probe object was written, read back and deleted, and
    the store found to be this database's (or claimed for it)."""
    try:
        storage = from_url(settings.storage_url)
    except StorageError as exc:
        raise StartupError(f"TICKETEXPORT_STORAGE_URL: {exc}") from None
    try:
        try:
            async with asyncio.timeout(STORAGE_CHECK_SECONDS):
                await probe(storage)
        except (StorageError, OSError, TimeoutError) as exc:
            raise StartupError(
                f"TICKETEXPORT_STORAGE_URL ({_where(settings.storage_url)}) is not reachable "
                f"and writable: {_reason(exc)}"
            ) from None
        await _claim_storage(storage, settings, url)
    except BaseException:
        with contextlib.suppress(Exception):
            await storage.close()
        raise
    return storage


async def _claim_storage(storage: Storage, settings: Settings, url: str) -> None:
    """The store is this database's from now on, unless its marker names another: then
    nothing starts (two deployments on one store would delete each other's files)."""
    where = _where(settings.storage_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        ours = await marker.installation_of(conn)
    try:
        async with asyncio.timeout(STORAGE_CHECK_SECONDS):
            await marker.claim(storage, ours)
    except marker.StoreTaken as exc:
        raise StartupError(
            f"TICKETEXPORT_STORAGE_URL ({where}) {exc}; give each installation a prefix of "
            "its own, or run `ticketexport storage adopt` if this one takes the store over"
        ) from None
    except (StorageError, OSError, TimeoutError) as exc:
        raise StartupError(
            f"TICKETEXPORT_STORAGE_URL ({where}): cannot read or write its installation "
            f"marker: {_reason(exc)}"
        ) from None


@contextlib.asynccontextmanager
async def _services(
    settings: Settings, url: str, *, web: bool = False, worker_concurrency: int = 0
) -> AsyncIterator[Services]:
    storage = await _checked_storage(settings, url)
    try:
        async with open_services(
            settings, url, web=web, worker_concurrency=worker_concurrency, storage=storage
        ) as services:
            yield services
    finally:
        with contextlib.suppress(Exception):
            await storage.close()


def _demo_secret(home: Path) -> str:
    """The demo keeps one generated key under its home so sessions survive restarts."""
    path = home / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def _seed_if_empty(url: str) -> None:
    from ticketexport import seed

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(db.q("tickets_exist")).fetchone()
        if row is not None and not row[0]:
            print(f"seeding {DEMO_TICKETS:,} demo tickets…", flush=True)
            seed.seed(conn, tickets=DEMO_TICKETS, seed=1, anchor=None)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


# Pause before starting the workers again after they lost the database, at most this long.
_RESTART_BACKOFF_MAX = 10.0


async def _supervise_workers(services: Services, concurrency: int, stop: asyncio.Event) -> None:
    """Run the export and maintenance workers until stopped; restart them if they fail.

    Maintenance has a worker of its own so a process whose export slots are all busy (or
    stuck) still rescues stalled exports. procrastinate stops a worker whose database
    connection fails (its heartbeat or job fetch raises); a database restart must not end
    the process, so the workers are started again once the database answers.
    """
    app = services.jobs
    settings = services.settings
    common: dict[str, Any] = {
        "install_signal_handlers": False,
        "additional_context": {"services": services},
        "update_heartbeat_interval": settings.heartbeat_seconds,
        "stalled_worker_timeout": max(settings.worker_seen_seconds, settings.heartbeat_seconds * 3),
    }
    backoff = 0.5
    try:
        while not stop.is_set():
            started = asyncio.get_running_loop().time()
            # The same as app.run_worker_async, keeping the Worker objects: their ids in
            # procrastinate_workers are what `ticketexport healthcheck worker` asks about.
            workers = [
                Worker(
                    app=app,
                    queues=[jobqueue.EXPORT_QUEUE],
                    concurrency=concurrency,
                    name="exports",
                    **common,
                ),
                Worker(
                    app=app,
                    queues=[jobqueue.MAINTENANCE_QUEUE],
                    concurrency=1,
                    name="maintenance",
                    **common,
                ),
            ]
            runs = [asyncio.create_task(_run(worker)) for worker in workers]
            recorder = asyncio.create_task(_record_when_registered(workers, settings.home))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Cancelling Worker.run is procrastinate's graceful stop: running jobs
                # finish (or are aborted on a second cancel) before it returns.
                for task in (*runs, stopper, recorder):
                    task.cancel()
                results = await asyncio.gather(*runs, stopper, recorder, return_exceptions=True)
                # These ids are gone; the next workers register new ones.
                health.forget_workers(settings.home)
            if stop.is_set():
                return
            if asyncio.get_running_loop().time() - started > 60:
                # It ran fine for a while: this is a new outage, not the same one continuing.
                backoff = 0.5
            errors = [r for r in results[:2] if isinstance(r, Exception)]
            log.warning(
                "worker stopped unexpectedly; starting again in %.1fs",
                backoff,
                extra={"error": "; ".join(f"{type(e).__name__}: {e}" for e in errors)[:500]},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, _RESTART_BACKOFF_MAX)
    finally:
        health.forget_workers(settings.home)


def _run(worker: Worker) -> Coroutine[Any, Any, None]:
    # procrastinate's Worker.run carries no annotations.
    run: Callable[[], Coroutine[Any, Any, None]] = worker.run
    return run()


# How often a starting worker process looks whether its workers have registered yet: each
# registration is one INSERT right after start, so this is only the first moments.
_REGISTRATION_POLL_SECONDS = 0.1


async def _record_when_registered(workers: list[Worker], home: Path) -> None:
    """Once every worker has its id in procrastinate_workers, record them for the health check.

    procrastinate offers no signal for the moment a worker registers, hence the short poll.
    """
    while any(worker.worker_id is None for worker in workers):  # noqa: ASYNC110 - no event exists
        await asyncio.sleep(_REGISTRATION_POLL_SECONDS)
    ids = [worker.worker_id for worker in workers if worker.worker_id is not None]
    try:
        health.record_workers(home, ids)
    except OSError as exc:
        # The process works without it; only its health check will say it is unhealthy.
        log.warning("cannot record the worker ids for the health check: %s", exc)


async def _worker_process(settings: Settings, url: str, concurrency: int) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with _services(settings, url, worker_concurrency=concurrency) as services:
        await _supervise_workers(services, concurrency, stop)


async def _run_web(services: Services, stop: asyncio.Event) -> None:
    from ticketexport.web.app import run_web

    settings = services.settings
    try:
        await run_web(services, stop=stop)
    except OSError as exc:
        # Binding the socket is the only I/O of run_web's own (handlers' errors stay in
        # aiohttp): a port in use, an address this host does not have.
        # asyncio's own wording repeats the address; the system's message alone is enough.
        reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None


async def _serve(settings: Settings, url: str) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with _services(settings, url, web=True) as services:
        await _run_web(services, stop)


async def _demo(settings: Settings, url: str, concurrency: int) -> None:
    """Web and worker in one process, on one pool."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with _services(settings, url, web=True, worker_concurrency=concurrency) as services:
        web = asyncio.create_task(_run_web(services, stop))
        worker = asyncio.create_task(_supervise_workers(services, concurrency, stop))
        stopper = asyncio.create_task(stop.wait())
        tasks: list[asyncio.Task[Any]] = [web, worker, stopper]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error


def run(command: str, settings: Settings, *, concurrency: int = 2) -> int:
    """Run one of the long-running commands until it is stopped."""
    from ticketexport.logs import configure_logging

    configure_logging()
    try:
        if command == "worker":
            with db.database_url(settings) as url:
                _check_migrated(url)
                asyncio.run(_worker_process(settings, url, concurrency))
            return 0
        if command == "serve":
            if not settings.secret_key:
                raise StartupError("TICKETEXPORT_SECRET_KEY must be set for `serve`")
            with db.database_url(settings) as url:
                _check_migrated(url)
                asyncio.run(_serve(settings, url))
            return 0
        if command == "demo":
            return _run_demo(settings, concurrency)
    except StartupError as exc:
        sys.stderr.write(f"ticketexport: error: {exc}\n")
        return 2
    raise ValueError(f"unknown command {command!r}")


def _run_demo(settings: Settings, concurrency: int) -> int:
    import dataclasses

    if not settings.secret_key:
        settings = dataclasses.replace(settings, secret_key=_demo_secret(settings.home))
    with db.database_url(settings) as url:
        applied = db.migrate(url)
        if applied:
            print("migrated: " + ", ".join(applied), flush=True)
        _seed_if_empty(url)
        from ticketexport.seed import DEMO_LOGINS

        wildcard = {"127.0.0.1", "0.0.0.0", "::"}  # noqa: S104 - only compared, never bound
        shown_host = "localhost" if settings.host in wildcard else settings.host
        print(f"\nticketexport demo: http://{shown_host}:{settings.port}/staff/tickets", flush=True)
        print("demo logins (email / password):", flush=True)
        for login in DEMO_LOGINS:
            print(f"  {login.email:<28} {login.password:<20} {login.can}", flush=True)
        print("press Ctrl+C to stop\n", flush=True)
        asyncio.run(_demo(settings, url, concurrency))
    return 0
