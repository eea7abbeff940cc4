"""Acceptance helpers: a real worker process, seeded databases, exports through the web app."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import html.parser
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

from tests.support import reference_views
from tests.support.databases import scratch_database
from ticketexport import seed
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.exports import formats
from ticketexport.exports.frozen import FrozenRequest
from ticketexport.exports.worker import plan_export
from ticketexport.views import service as view_service
from ticketexport.views.model import ListRequest

BOM = b"\xef\xbb\xbf"
ADMIN = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export)
# A zone with a half-hour offset: timestamps in the file and on the page must agree on it.
TIMEZONE = "Asia/Kolkata"
EXPORT_TIMEOUT = 120.0


def guard(value: str) -> str:
    """What the file holds for a value the list shows (the brief's formula guard)."""
    return reference_views.csv_guard(value)


def unguard(value: str) -> str:
    """The value the list shows for a cell the file holds."""
    return reference_views.csv_unguard(value)


def parse_csv(data: bytes) -> list[list[str]]:
    """The file as Python's csv module reads it (after checking and dropping the BOM)."""
    assert data.startswith(BOM), data[:10]
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline="")))


@contextlib.contextmanager
def seeded_database(
    server_url: str, template_db: str, tickets: int, *, seed_value: int = 11
) -> Iterator[str]:
    """A fresh migrated database holding `tickets` seeded tickets (and the demo users)."""
    with scratch_database(server_url, template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=tickets, seed=seed_value)
        yield url


@contextlib.contextmanager
def worker_process(
    db_url: str, home: Path, *, concurrency: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m ticketexport worker` as its own OS process, stopped (SIGTERM) at the end."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")}
    env.update(
        {
            "DATABASE_URL": db_url,
            "TICKETEXPORT_HOME": str(home),
            "TICKETEXPORT_HEARTBEAT_SECONDS": "1",
        }
    )
    log_path = home / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ticketexport", "worker", "--concurrency", str(concurrency)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def worker_log(home: Path) -> str:
    path = home / "worker.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def admin_actor(db_url: str) -> Actor:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT u.id, u.is_admin, COALESCE(bit_or(r.permissions), 0) "
            "FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id "
            "LEFT JOIN roles r ON r.id = ur.role_id WHERE u.email = %s GROUP BY u.id",
            (ADMIN.email,),
        ).fetchone()
    assert row is not None
    assert Permission(row[2]) & Permission.IMPORT_EXPORT_TICKETS
    return Actor(id=row[0], is_admin=row[1], permissions=int(row[2]))


@dataclasses.dataclass
class Exported:
    export_id: str
    params: dict[str, str]
    data: bytes
    headers: Mapping[str, str]
    row: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def rows(self) -> list[list[str]]:
        return parse_csv(self.data)


_LOCATION = re.compile(r"/staff/exports/([0-9a-f-]{36})")


def sse_events(text: str) -> list[dict[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                found.append(json.loads(line[len("data: ") :]))
    return found


class Exporter:
    """Drives the web app like the browser does: Export click, status page, events, file."""

    def __init__(self, web: Any) -> None:
        self.web = web
        self._token: str | None = None

    async def token(self) -> str:
        if self._token is None:
            self._token = await self.web.csrf("/staff/exports")
        return self._token

    async def request(self, params: Mapping[str, str]) -> str:
        response = await self.web.client.post(
            "/staff/tickets/export",
            data={"csrf_token": await self.token(), **params},
            allow_redirects=False,
        )
        assert response.status == 303, (params, response.status, await response.text())
        match = _LOCATION.fullmatch(response.headers["Location"])
        assert match, response.headers["Location"]
        return match.group(1)

    async def finish(self, export_id: str, params: Mapping[str, str]) -> Exported:
        status_page = await self.web.client.get(f"/staff/exports/{export_id}")
        assert status_page.status == 200
        assert f"/staff/exports/{export_id}/events" in await status_page.text()
        # The stream ends by itself once the export reaches a terminal state.
        async with asyncio.timeout(EXPORT_TIMEOUT):
            stream = await self.web.client.get(f"/staff/exports/{export_id}/events")
            events = sse_events(await stream.text())
        assert events, "the event stream sent nothing"
        final = events[-1]
        assert final["status"] == "completed", final
        assert final["rows"] == final["total"]
        assert final["percent"] == 100
        download = await self.web.client.get(final["download_url"])
        assert download.status == 200
        data = await download.read()
        async with self.web.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT e.as_of, e.rows_done, e.rows_total, m.size_bytes, m.sha256, e.request "
                "FROM export_jobs e LEFT JOIN media_items m ON m.id = e.media_item_id "
                "WHERE e.id = %s",
                (export_id,),
            )
            found = await cur.fetchone()
        assert found is not None
        row = dict(
            zip(
                ("as_of", "rows_done", "rows_total", "size_bytes", "sha256", "request"),
                found,
                strict=True,
            )
        )
        return Exported(export_id, dict(params), data, dict(download.headers), row, events)

    async def export_many(self, requests: list[dict[str, str]]) -> list[Exported]:
        """Clicks every Export first (the worker runs them two at a time), then collects."""
        ids = [await self.request(params) for params in requests]
        return list(
            await asyncio.gather(*(self.finish(i, p) for i, p in zip(ids, requests, strict=True)))
        )


def list_request(params: Mapping[str, str]) -> ListRequest:
    return view_service.parse_list_request(dict(params))


async def list_everything(
    pool: psycopg_pool.AsyncConnectionPool[Any],
    params: Mapping[str, str],
    actor: Actor,
    *,
    now: dt.datetime,
    tz: str = TIMEZONE,
) -> tuple[list[str], list[list[str]]]:
    """The list service's pages, cursor after cursor, evaluated at `now`: labels and rows."""
    request = list_request(params)
    rows: list[list[str]] = []
    page: str | None = None
    seen = 0
    async with pool.connection() as conn:
        while True:
            current = dataclasses.replace(request, page=page)
            result = await view_service.list_page(conn, current, actor, now=now, tz=tz)
            assert len(result.rows) <= 50
            rows.extend(result.rows)
            seen += 1
            if result.next_cursor is None:
                return [c.label for c in result.columns], rows
            assert len(result.rows) == 50
            page = result.next_cursor


class _ListPageParser(html.parser.HTMLParser):
    """The column labels, the ticket rows' cells and the Next link of one list page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.labels: list[str] = []
        self.rows: list[list[str]] = []
        self.next_url: str | None = None
        self._in_th = False
        self._in_row = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "th" and "data-column" in attributes:
            self._in_th = True
            self.labels.append("")
        elif tag == "tr" and "data-ticket" in attributes:
            self._in_row = True
            self.rows.append([])
        elif tag == "td" and self._in_row:
            self._cell = []
        elif tag == "a" and attributes.get("id") == "next-page":
            self.next_url = attributes.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._in_th = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._in_row = False

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.labels[-1] += data
        elif self._cell is not None:
            self._cell.append(data)


async def walk_list_pages(web: Any, query: str) -> tuple[list[str], list[list[str]], int]:
    """GET /staff/tickets and every Next page after it: labels, rows, number of pages."""
    url: str | None = "/staff/tickets?" + query
    labels: list[str] = []
    rows: list[list[str]] = []
    pages = 0
    while url is not None:
        response = await web.client.get(url)
        assert response.status == 200, (url, response.status)
        parser = _ListPageParser()
        parser.feed(await response.text())
        parser.close()
        labels = parser.labels
        rows.extend(parser.rows)
        url = html.unescape(parser.next_url) if parser.next_url else None
        pages += 1
    return labels, rows, pages


@contextlib.asynccontextmanager
async def timed(label: str, sink: list[str]) -> AsyncIterator[None]:
    started = time.monotonic()
    yield
    sink.append(f"{label}: {time.monotonic() - started:.2f}s")


def csv_in_transaction(
    conn: psycopg.Connection[Any],
    frozen: Mapping[str, Any],
    as_of: dt.datetime,
    *,
    snapshot: str | None = None,
) -> tuple[bytes, int]:
    """The CSV file (BOM included) and row count an export of `frozen` has, read on `conn`.

    Without `snapshot`, by plain statements: inside a REPEATABLE READ transaction opened at
    the click this is what the export must contain, decided by PostgreSQL's own MVCC rather
    than by versions. With it, by the export's own as-of statements."""
    plan = plan_export(FrozenRequest.from_json(frozen), as_of, snapshot)
    with conn.cursor() as cur:
        counted = cur.execute(plan.count).fetchone()
        assert counted is not None
        buffer = bytearray(formats.BOM)
        with cur.copy(plan.format.copy_statement(plan.select)) as copy:
            for block in copy:
                buffer += block
    return bytes(buffer), int(counted[0])
