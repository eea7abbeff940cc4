"""Export events over Postgres NOTIFY: a publisher, and one LISTEN connection per process
fanned out to any number of subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ticketexport.db import q

log = logging.getLogger(__name__)

CHANNEL = "ticketexport_export"
APPLICATION_NAME = "ticketexport-events"

State = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One read of what subscribers watch: the exports' states by export id, and by session
    id who is watching (the session's user as they are now; absent when it has ended)."""

    states: Mapping[str, State]
    viewers: Mapping[str, State] = dataclasses.field(default_factory=dict)


# Given export ids and the session ids watching them, read both with one query.
FetchStates = Callable[[Sequence[str], Sequence[str]], Awaitable[Snapshot]]


async def publish(conn: psycopg.AsyncConnection[Any], export_id: str) -> None:
    """Announce a change; delivered when the caller's transaction commits.

    The payload is only the id: the row is the truth, and NOTIFY payloads are capped.
    """
    await conn.execute(q("event_publish"), {"channel": CHANNEL, "export_id": export_id})


class Subscription:
    """One watcher of one export. Holds only the latest state: a slow reader skips
    intermediate progress but always sees the newest (and so the terminal) state.

    A watcher may name the session it belongs to; `viewer` is then that session's user as
    read with the latest state (None until the first read)."""

    def __init__(self, hub: EventHub, export_id: str, session_id: str | None = None) -> None:
        self.export_id = export_id
        self.session_id = session_id
        self.viewer: State | None = None
        self._hub = hub
        self._latest: State | None = None
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, state: State, viewer: State | None = None) -> None:
        self._latest = state
        if viewer is not None:
            self.viewer = viewer
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def end(self) -> None:
        """Its session is over: nothing more for this watcher, not even a pending state."""
        self._latest = None
        self.close()

    async def next(self, within: float | None = None) -> State | None:
        """The newest state not yet taken, or None on timeout or when the hub stops."""
        if self._latest is None and not self.closed:
            # asyncio.timeout, not wait_for: wait_for makes a task per call, and with 300
            # streams waiting that was a tenth of a web process's time (bench/README.md).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._ready.wait()
        state, self._latest = self._latest, None
        self._ready.clear()
        return state

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self._hub._unsubscribe(self)


class EventHub:
    """Owns the process's single LISTEN connection and fans notifications out.

    On a notification the hub fetches the export's state once, for all its watchers;
    a waiting subscriber costs no connection and no query.
    """

    def __init__(
        self,
        database_url: str,
        fetch_states: FetchStates,
        *,
        max_backoff: float = 5.0,
        recheck_seconds: float | None = None,
    ) -> None:
        self._url = database_url
        self._fetch = fetch_states
        self._max_backoff = max_backoff
        self._recheck_seconds = recheck_seconds
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._recheck_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        # One read at a time, offered in the order read: a slower, older read (a recheck,
        # say) never lands after a newer one.
        self._reading = asyncio.Lock()
        self.reconnects = 0
        self.notifications = 0
        self.rechecks = 0
        self._rechecked = asyncio.Event()

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="export-event-hub")
        if self._recheck_seconds is not None:
            self._recheck_task = asyncio.create_task(
                self._recheck_every(self._recheck_seconds), name="export-event-recheck"
            )
        # Wait briefly so the first page's stream does not race the LISTEN.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 10)

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._recheck_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._recheck_task = None
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # subscriptions -------------------------------------------------------------------

    def subscribe(self, export_id: str, session_id: str | None = None) -> Subscription:
        sub = Subscription(self, export_id, session_id)
        if self._stopping:
            sub.close()
        else:
            self._subscribers.setdefault(export_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.export_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.export_id]

    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    def session_streams(self, session_id: str) -> int:
        """How many subscriptions of this process belong to one session."""
        return sum(
            1 for subs in self._subscribers.values() for sub in subs if sub.session_id == session_id
        )

    # the listener --------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._connected.set()
                    if not first:
                        self.reconnects += 1
                        # Anything may have changed while we were deaf.
                        await self._resync(list(self._subscribers))
                    first = False
                    backoff = 0.1
                    async for notify in conn.notifies():
                        self.notifications += 1
                        await self._deliver(notify.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self._connected.clear()
                log.warning(
                    "event listener connection lost; reconnecting",
                    extra={"error": type(exc).__name__, "retry_in": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                self._connected.clear()

    async def _deliver(self, payload: str) -> None:
        try:
            export_id = str(uuid.UUID(payload))
        except ValueError:
            log.warning("ignoring malformed export notification", extra={"payload": payload[:80]})
            return
        if export_id in self._subscribers:
            await self._resync([export_id])

    async def _recheck_every(self, seconds: float) -> None:
        """Every open subscription's export, session and user, read again in one query.

        Sessions end and users lose access without any notification; this is how a stream
        learns of it, within one interval, at one query per interval whatever the number
        of streams (promise 4)."""
        while True:
            await asyncio.sleep(seconds)
            if self._subscribers:
                await self._resync(list(self._subscribers))
            # Counted once done, with or without anyone to recheck (then no query).
            self.rechecks += 1
            self._rechecked.set()
            self._rechecked = asyncio.Event()

    async def wait_rechecks(self, count: int) -> None:
        """Until `count` rechecks in all have finished."""
        while self.rechecks < count:
            await self._rechecked.wait()

    async def _resync(self, export_ids: list[str]) -> None:
        if not export_ids:
            return
        # The subscriptions this read answers for, taken with their sessions before it: one
        # that arrives while the query runs has no session row in its answer, and must not
        # be ended for that (it read its own state after subscribing; the next recheck or
        # notification covers it).
        watching = {
            export_id: list(self._subscribers.get(export_id, ())) for export_id in export_ids
        }
        sessions = sorted(
            {
                sub.session_id
                for subs in watching.values()
                for sub in subs
                if sub.session_id is not None
            }
        )
        async with self._reading:
            try:
                snapshot = await self._fetch(export_ids, sessions)
            except (psycopg.Error, OSError):
                log.exception("could not read export states for subscribers")
                return
            for export_id, subs in watching.items():
                state = snapshot.states.get(export_id)
                current = self._subscribers.get(export_id, set())
                for sub in subs:
                    if sub not in current:
                        continue  # its stream ended meanwhile
                    viewer = None
                    if sub.session_id is not None:
                        # No row: signed out, expired, or the user is gone.
                        viewer = snapshot.viewers.get(sub.session_id)
                    if state is None or (sub.session_id is not None and viewer is None):
                        sub.end()
                        continue
                    sub.offer(state, viewer)


def pool_fetcher(pool: AsyncConnectionPool[Any]) -> FetchStates:
    """States and viewers read with one query from the shared pool, whatever the number of
    ids."""

    async def fetch(export_ids: Sequence[str], session_ids: Sequence[str]) -> Snapshot:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                q("stream_states"), {"ids": list(export_ids), "sessions": list(session_ids)}
            )
            rows = await cur.fetchall()
        states: dict[str, State] = {}
        viewers: dict[str, State] = {}
        for row in rows:
            (viewers if row["kind"] == "session" else states)[row["id"]] = row
        return Snapshot(states=states, viewers=viewers)

    return fetch
