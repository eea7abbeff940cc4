"""The event hub against a real server: one LISTEN connection, fan-out, reconnect."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ticketexport import accounts, events


def _export(conn: psycopg.Connection[Any], requester: int) -> str:
    now = dt.datetime.now(dt.UTC)
    row = conn.execute(
        "INSERT INTO export_jobs (requester_id, as_of, request, view_name, "
        "request_fingerprint, expires_at) VALUES (%s, %s, '{}', 'All', 'x', %s) RETURNING id",
        (requester, now, now + dt.timedelta(hours=72)),
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def requester(conn: psycopg.Connection[Any]) -> int:
    return accounts.add_user(conn, "watcher@example.com", name="Wa Tcher", password="pw")


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as p:
        yield p


class CountingFetch:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.inner = events.pool_fetcher(pool)
        self.calls: list[list[str]] = []
        self.sessions: list[list[str]] = []

    async def __call__(self, ids: Sequence[str], sessions: Sequence[str]) -> events.Snapshot:
        self.calls.append(list(ids))
        self.sessions.append(list(sessions))
        return await self.inner(ids, sessions)


async def _progress(db_url: str, export_id: str, rows: int) -> None:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute(
            "UPDATE export_jobs SET rows_done = %s, rows_total = 1000 WHERE id = %s",
            (rows, export_id),
        )
        await events.publish(conn, export_id)
        await conn.commit()


def _listeners(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND datname = current_database()",
        (events.APPLICATION_NAME,),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_fan_out_fetches_once_per_notification(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    watched, other = _export(conn, requester), _export(conn, requester)
    fetch = CountingFetch(pool)
    hub = events.EventHub(db_url, fetch)
    await hub.start()
    try:
        subs = [hub.subscribe(watched) for _ in range(50)]
        assert _listeners(conn) == 1
        await _progress(db_url, other, 5)  # nobody watches it: no query at all
        await _progress(db_url, watched, 10)
        states = await asyncio.gather(*(s.next(within=5) for s in subs))
        assert all(s is not None and s["rows_done"] == 10 for s in states)
        assert fetch.calls == [[watched]]
        assert _listeners(conn) == 1
        for sub in subs:
            sub.__exit__()
        assert hub.subscriber_count() == 0
    finally:
        await hub.stop()


async def test_slow_subscriber_gets_the_latest_state(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    export_id = _export(conn, requester)
    hub = events.EventHub(db_url, events.pool_fetcher(pool))
    await hub.start()
    try:
        with hub.subscribe(export_id) as sub:
            for rows in (100, 200, 300):
                await _progress(db_url, export_id, rows)
            deadline = asyncio.get_running_loop().time() + 5
            seen = []
            while asyncio.get_running_loop().time() < deadline:
                state = await sub.next(within=0.5)
                if state is not None:
                    seen.append(state["rows_done"])
                    if state["rows_done"] == 300:
                        break
            assert seen[-1] == 300
            assert seen == sorted(seen)
    finally:
        await hub.stop()


async def test_reconnects_and_resynchronises_after_termination(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    export_id = _export(conn, requester)
    fetch = CountingFetch(pool)
    hub = events.EventHub(db_url, fetch, max_backoff=0.5)
    await hub.start()
    try:
        with hub.subscribe(export_id) as sub:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (events.APPLICATION_NAME,),
            )
            # Changed while the hub is deaf: no notification reaches it.
            conn.execute(
                "UPDATE export_jobs SET rows_done = 7, rows_total = 10 WHERE id = %s", (export_id,)
            )
            state = await sub.next(within=10)
            assert state is not None
            assert state["rows_done"] == 7
            assert hub.reconnects == 1
            assert _listeners(conn) == 1
            # and live delivery works again on the new connection
            await _progress(db_url, export_id, 9)
            state = await sub.next(within=5)
            assert state is not None
            assert state["rows_done"] == 9
    finally:
        await hub.stop()


async def test_stop_wakes_every_subscriber(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    export_id = _export(conn, requester)
    hub = events.EventHub(db_url, events.pool_fetcher(pool))
    await hub.start()
    sub = hub.subscribe(export_id)
    waiter = asyncio.create_task(sub.next(within=60))
    await asyncio.sleep(0.05)
    await hub.stop()
    assert await asyncio.wait_for(waiter, 2) is None
    assert sub.closed
    assert hub.subscribe(export_id).closed


async def test_malformed_payload_is_ignored(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    export_id = _export(conn, requester)
    fetch = CountingFetch(pool)
    hub = events.EventHub(db_url, fetch)
    await hub.start()
    try:
        with hub.subscribe(export_id) as sub:
            conn.execute("SELECT pg_notify(%s, 'not-a-uuid')", (events.CHANNEL,))
            conn.execute("SELECT pg_notify(%s, %s)", (events.CHANNEL, str(uuid.uuid4())))
            await _progress(db_url, export_id, 3)
            state = await sub.next(within=5)
            assert state is not None
            assert state["rows_done"] == 3
            assert fetch.calls == [[export_id]]
    finally:
        await hub.stop()


def _session(conn: psycopg.Connection[Any], user_id: int) -> str:
    """A live web session of this user; returns its id."""
    session_id = uuid.uuid4().hex * 2
    conn.execute(
        "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) "
        "VALUES (%s, %s, %s, now() + interval '1 hour')",
        (session_id, user_id, "c" * 43),
    )
    return session_id


async def test_recheck_reads_every_session_in_one_query_and_ends_the_dead(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    exports = [_export(conn, requester) for _ in range(3)]
    sessions = [_session(conn, requester) for _ in range(4)]
    fetch = CountingFetch(pool)
    hub = events.EventHub(db_url, fetch, recheck_seconds=0.3)
    await hub.start()
    try:
        subs = [
            hub.subscribe(export_id, session_id)
            for export_id in exports
            for session_id in sessions
            for _ in range(5)
        ]
        assert hub.session_streams(sessions[0]) == 15
        # One recheck: one query for 60 subscriptions, and each learns who watches.
        states = await asyncio.gather(*(s.next(within=5) for s in subs))
        assert all(state is not None for state in states)
        assert len(fetch.calls) >= 1
        assert sorted(fetch.calls[0]) == sorted(exports)
        assert fetch.sessions[0] == sorted(sessions)
        assert all(s.viewer is not None and s.viewer["user_id"] == requester for s in subs)

        # A session that ends (logout) ends its subscriptions, and only those, with no
        # state left for them to read.
        conn.execute("DELETE FROM web_sessions WHERE id = %s", (sessions[1],))
        await _progress(db_url, exports[0], 1)  # pending state for everyone on export 0
        ended = [s for s in subs if s.session_id == sessions[1]]
        for sub in ended:
            # States read before the logout may still be taken; then it ends, for good.
            for _ in range(20):
                if sub.closed:
                    break
                await sub.next(within=0.5)
            assert sub.closed
            assert await sub.next(within=0) is None
        alive = [s for s in subs if s.session_id != sessions[1]]
        assert not any(s.closed for s in alive)
        for sub in ended:
            sub.__exit__()
        assert hub.session_streams(sessions[1]) == 0
        assert hub.subscriber_count() == len(alive)
    finally:
        await hub.stop()


async def test_no_query_without_subscribers(db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    fetch = CountingFetch(pool)
    hub = events.EventHub(db_url, fetch, recheck_seconds=0.1)
    await hub.start()
    try:
        await asyncio.wait_for(hub.wait_rechecks(3), 5)
        assert fetch.calls == []
    finally:
        await hub.stop()


async def test_a_subscription_made_while_a_recheck_reads_is_not_ended(
    db_url: str, conn: psycopg.Connection[Any], requester: int, pool: AsyncConnectionPool[Any]
) -> None:
    """A stream opened while a recheck's query runs has no session row in that answer (its
    session was not asked about): it is left for the next read, not ended."""
    export_id = _export(conn, requester)
    first, second = _session(conn, requester), _session(conn, requester)
    inner = events.pool_fetcher(pool)
    late: list[events.Subscription] = []
    hub: events.EventHub

    async def fetch(ids: Sequence[str], sessions: Sequence[str]) -> events.Snapshot:
        if not late:
            # The second session's stream subscribes while this read is under way.
            late.append(hub.subscribe(export_id, second))
        return await inner(ids, sessions)

    hub = events.EventHub(db_url, fetch)
    await hub.start()
    try:
        early = hub.subscribe(export_id, first)
        await _progress(db_url, export_id, 7)
        state = await early.next(within=5)
        assert state is not None
        assert state["rows_done"] == 7
        assert len(late) == 1
        assert not late[0].closed, "a stream that subscribed during the read was ended"
        # The next read asks about its session too, and it gets the state.
        await _progress(db_url, export_id, 8)
        state = await late[0].next(within=5)
        assert state is not None
        assert state["rows_done"] == 8
        assert late[0].viewer is not None
        assert late[0].viewer["user_id"] == requester
    finally:
        for sub in (early, *late):
            sub.__exit__()
        await hub.stop()
