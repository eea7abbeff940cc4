"""Export events over Postgres NOTIFY: a publisher, and one LISTEN connection per process
fanned out to any number of subscribers."""

from __future__ import annotations

import asyncio
import contextlib
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
# Given export ids, return the current state of each one that exists.
FetchStates = Callable[[Sequence[str]], Awaitable[Mapping[str, State]]]


async def publish(conn: psycopg.AsyncConnection[Any], export_id: str) -> None:
    """Announce a change; delivered when the caller's transaction commits.

    The payload is only the id: the row is the truth, and NOTIFY payloads are capped.
    """
    await conn.execute(q("event_publish"), {"channel": CHANNEL, "export_id": export_id})


class Subscription:
    """One watcher of one export. Holds only the latest state: a slow reader skips
    intermediate progress but always sees the newest (and so the terminal) state."""

    def __init__(self, hub: EventHub, export_id: str) -> None:
        self.export_id = export_id
        self._hub = hub
        self._latest: State | None = None
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, state: State) -> None:
        self._latest = state
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, within: float | None = None) -> State | None:
        """The newest state not yet taken, or None on timeout or when the hub stops."""
        if self._latest is None and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), within)
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
    ) -> None:
        self._url = database_url
        self._fetch = fetch_states
        self._max_backoff = max_backoff
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self.reconnects = 0
        self.notifications = 0

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="export-event-hub")
        # Wait briefly so the first page's stream does not race the LISTEN.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 10)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # subscriptions -------------------------------------------------------------------

    def subscribe(self, export_id: str) -> Subscription:
        sub = Subscription(self, export_id)
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

    async def _resync(self, export_ids: list[str]) -> None:
        if not export_ids:
            return
        try:
            states = await self._fetch(export_ids)
        except (psycopg.Error, OSError):
            log.exception("could not read export states for subscribers")
            return
        for export_id in export_ids:
            state = states.get(export_id)
            if state is None:
                continue
            for sub in list(self._subscribers.get(export_id, ())):
                sub.offer(state)


def pool_fetcher(pool: AsyncConnectionPool[Any]) -> FetchStates:
    """States read with one query from the shared pool, whatever the number of ids."""

    async def fetch(export_ids: Sequence[str]) -> Mapping[str, State]:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(q("export_states"), {"ids": list(export_ids)})
            rows = await cur.fetchall()
        return {row["id"]: row for row in rows}

    return fetch
