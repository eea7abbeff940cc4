"""300 event streams from another process on one web process: all see the end, one LISTEN
connection, and no database work per waiting stream (one batched recheck per keep-alive
interval for all of them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.support import event_clients
from tests.support.sse import (
    add_admin,
    listeners,
    read_report,
    serving,
    session_cookies,
    start_clients,
)
from ticketexport import events
from ticketexport.bootstrap import WEB_CONNECTIONS, open_services
from ticketexport.config import Settings
from ticketexport.services import Services

pytestmark = pytest.mark.slow

CLIENTS = 300
PROGRESS_EVENTS = 5
POOL_SIZE = WEB_CONNECTIONS
# Shorter than the 15 s default, so several rechecks fall in the idle window.
KEEPALIVE = 1.0


class Statements:
    """Every statement the web process runs, whoever runs it."""

    count = 0


@pytest.fixture
async def counting_services(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """The web process's services, with every asynchronous statement in this process
    counted at the one place they all pass: cursor execution. The test's own connections
    are synchronous, so they are not counted."""
    execute = psycopg.AsyncCursor.execute
    executemany = psycopg.AsyncCursor.executemany

    async def counting_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        Statements.count += 1
        return await execute(self, *args, **kwargs)

    async def counting_executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        Statements.count += 1
        return await executemany(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting_execute)
    monkeypatch.setattr(psycopg.AsyncCursor, "executemany", counting_executemany)
    settings = dataclasses.replace(
        Settings.from_env({"DATABASE_URL": db_url}), keepalive_seconds=KEEPALIVE
    )
    async with open_services(settings, db_url, web=True) as services:
        yield services


async def _rechecks_done(hub: events.EventHub, more: int) -> None:
    """Returns just after `more` further rechecks finished (the next is an interval away)."""
    await asyncio.wait_for(hub.wait_rechecks(hub.rechecks + more), 30 * KEEPALIVE)


def _pool_backends(conn: psycopg.Connection[Any]) -> int:
    """Backends of this database other than the listener and this checking connection."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name <> %s "
        "AND backend_type = 'client backend'",
        (events.APPLICATION_NAME,),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_300_streams_share_one_listener_and_wait_without_queries(
    db_url: str,
    conn: psycopg.Connection[Any],
    counting_services: Services,
) -> None:
    admin = add_admin(conn)
    export_id = event_clients.insert_export(conn, admin)
    # A session holds at most 20 streams: 15 sessions of one user.
    limit = counting_services.settings.max_streams_per_session
    cookies = session_cookies(conn, admin, -(-CLIENTS // limit))
    async with serving(counting_services) as (_app, base_url):
        connect_from = Statements.count
        proc = await start_clients(f"{base_url}/staff/exports/{export_id}/events", cookies, CLIENTS)
        try:
            ready = await read_report(proc, 120)
            assert ready == {"ready": CLIENTS, "failed": 0, "errors": []}
            # The hook sees the web process's queries: opening a stream does run some
            # (sign-in, may-see), at least one per stream.
            assert Statements.count - connect_from >= CLIENTS
            hub = counting_services.hub
            assert hub is not None
            assert hub.subscriber_count() == CLIENTS
            assert listeners(conn) == 1
            # 300 open streams, yet the web process holds no more than its pool.
            assert _pool_backends(conn) <= POOL_SIZE

            # Waiting: no statement per stream, however many wait; only the one recheck of
            # every stream's session, user and export per keep-alive interval. Counted
            # from just after one recheck to just after the third one after it.
            await _rechecks_done(hub, 1)
            idle_from, rechecks_from = Statements.count, hub.rechecks
            started = asyncio.get_running_loop().time()
            await _rechecks_done(hub, 3)
            assert asyncio.get_running_loop().time() - started >= 2 * KEEPALIVE
            assert Statements.count - idle_from == 3, "statements ran per waiting stream"

            # Each notification costs one state query for all 300 watchers, not one each.
            with psycopg.connect(db_url) as writer:
                for k in range(1, PROGRESS_EVENTS + 1):
                    writer.execute(
                        "UPDATE export_jobs SET status = 'running', stage = 'exporting', "
                        "rows_total = 1000, rows_done = %s, "
                        "started_at = COALESCE(started_at, now()) WHERE id = %s",
                        (k * 100, export_id),
                    )
                    writer.execute("SELECT pg_notify(%s, %s)", (events.CHANNEL, export_id))
                    writer.commit()
                    await asyncio.sleep(0.3)
            await _rechecks_done(hub, 1)
            progress_cost = Statements.count - idle_from - (hub.rechecks - rechecks_from)
            assert 1 <= progress_cost <= PROGRESS_EVENTS

            before_end, rechecks_before_end = Statements.count, hub.rechecks
            await asyncio.to_thread(event_clients.complete_export, conn, export_id, 1000)
            final = await read_report(proc, 90)
            assert final["statuses"] == {"completed": CLIENTS}, final
            assert final["terminal"] == CLIENTS
            assert final["errors"] == []
            # Every client saw the last state (rows 1000 arrives only with the completion).
            assert len(final["received"]["1000"]) == CLIENTS
            for _ in range(50):
                if hub.subscriber_count() == 0:
                    break
                await asyncio.sleep(0.05)
            assert hub.subscriber_count() == 0, "finished streams unsubscribe"
            # The end cost one state query, besides the rechecks that ran meanwhile.
            await _rechecks_done(hub, 1)
            assert Statements.count - before_end <= 1 + hub.rechecks - rechecks_before_end
            # Once no stream is left, a recheck runs no query at all.
            after_all, rechecks_after = Statements.count, hub.rechecks
            await _rechecks_done(hub, 2)
            assert Statements.count == after_all
            assert hub.rechecks == rechecks_after + 2
            assert listeners(conn) == 1
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
