"""COPY … TO STDOUT read on a blocking connection in a thread of its own, handed to asyncio.

psycopg's blocking COPY loop runs at psql's speed; its asyncio loop pays a scheduler round
trip per row, about a fifth more on a million rows. The thread gathers rows into blocks and
hands them over through a small bounded queue, so memory stays at a few blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql

# Rows are gathered into blocks of about this size before they are handed over.
BLOCK_BYTES = 1024 * 1024
# A block is also handed over after this long, so progress moves on slow or throttled exports.
FLUSH_SECONDS = 0.25
# Blocks waiting between the thread and the event loop.
QUEUE_BLOCKS = 4


class _Stopped(Exception):
    """The reading side went away; the thread ends quietly."""


class CopyReader:
    """Reads one COPY on `conn` (a blocking connection it then owns) in a dedicated thread.

    Iterate `blocks()` for (bytes, rows so far); the first `header_lines` lines are not
    counted as rows. `max_rows_per_s` > 0 throttles the read.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        statement: sql.Composed,
        *,
        header_lines: int = 0,
        max_rows_per_s: int = 0,
    ) -> None:
        self._conn = conn
        self._statement = statement
        self._header_lines = header_lines
        self._rate = max_rows_per_s
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[bytes, int] | BaseException | None] | None = None
        self._done: asyncio.Future[None] | None = None

    # --- the thread -------------------------------------------------------------------

    def _hand_over(self, item: tuple[bytes, int] | BaseException | None) -> None:
        assert self._loop is not None
        assert self._queue is not None
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            try:
                future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if self._stop.is_set():
                    future.cancel()
                    raise _Stopped from None
            else:
                return

    def _read(self) -> None:
        rows = -self._header_lines
        block = bytearray()
        started = last = time.monotonic()
        with self._conn.cursor().copy(self._statement) as copy:
            # libpq hands COPY data over one row per message: one chunk is one row.
            for chunk in copy:
                block += chunk
                rows += 1
                if len(block) >= BLOCK_BYTES or (
                    rows & 1023 == 0 and time.monotonic() - last >= FLUSH_SECONDS
                ):
                    self._hand_over((bytes(block), rows))
                    block.clear()
                    last = time.monotonic()
                if self._rate > 0:
                    ahead = rows / self._rate - (time.monotonic() - started)
                    if ahead > 0.05:
                        if block:
                            self._hand_over((bytes(block), rows))
                            block.clear()
                            last = time.monotonic()
                        if self._stop.wait(ahead):
                            raise _Stopped
                if self._stop.is_set():
                    raise _Stopped
        self._hand_over((bytes(block), max(rows, 0)))
        self._hand_over(None)

    def _run(self) -> None:
        assert self._loop is not None
        assert self._done is not None
        error: BaseException | None = None
        try:
            self._read()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the reading side, which re-raises it
            error = exc
        if error is not None:
            with contextlib.suppress(_Stopped, RuntimeError):
                self._hand_over(error)
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # --- the event loop side ----------------------------------------------------------

    async def blocks(self) -> AsyncIterator[tuple[bytes, int]]:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=QUEUE_BLOCKS)
        self._done = self._loop.create_future()
        # A thread of its own, not the default executor: storage writes use that one, and
        # a long export must never starve them.
        threading.Thread(target=self._run, name="copy-reader", daemon=True).start()
        finished = False
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not finished:
                await asyncio.shield(self._abandon())
            await asyncio.shield(self._done)

    async def _abandon(self) -> None:
        """Stop the thread and the statement on the server (a cancel, a failure upstream)."""
        self._stop.set()
        with contextlib.suppress(psycopg.Error, OSError):
            await asyncio.to_thread(self._conn.cancel_safe, timeout=5.0)
        assert self._queue is not None
        while not self._queue.empty():  # unblock a hand-over in progress
            self._queue.get_nowait()
