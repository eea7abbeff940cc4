"""Downloads of a file that is gone, breaks off, or is not the file recorded: a clear answer
before the status line, a connection dropped at once after it, and never the wrong bytes
as the whole file under the recorded ETag."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.services import services_for
from tests.support.web import Web, csrf_in, insert_tickets, make_user, running
from ticketexport.exports.worker import ExportRun
from ticketexport.storage import StorageError
from ticketexport.storage.local import LocalStorage

ADMIN = "downloads.admin@example.com"
# Long titles: the file spans more than one block of the local store's reads (1 MiB), so a
# download that breaks off does so after bytes were sent.
TICKETS = 3000
TITLE = "Printer on the third floor " * 16
# A client that waits this long for a body that never comes has hung.
HANG = 20.0

Conn = psycopg.Connection[Any]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def admin(conn: Conn) -> int:
    insert_tickets(conn, TICKETS, title=TITLE)
    return make_user(conn, ADMIN, permissions=512, admin=True)


async def _completed(db_url: str, store: Path, web: Web) -> dict[str, Any]:
    token = await web.csrf("/staff/tickets")
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": token, "view": "all"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    export_id = response.headers["Location"].rsplit("/", 1)[1]
    async with services_for(db_url, env={"TICKETEXPORT_STORAGE_URL": store.as_uri()}) as deps:
        await ExportRun(deps, export_id, None).run()
    export = _export(db_url, export_id)
    assert export["status"] == "completed", export["error_code"]
    assert export["size_bytes"] > 1024 * 1024
    return export


@contextlib.asynccontextmanager
async def _serving(db_url: str, store: Path) -> AsyncIterator[tuple[Web, dict[str, Any], str]]:
    """The app, signed in as the admin, one export completed in `store`, and its download
    URL."""
    async with running(db_url, storage_url=store.as_uri()) as web:
        assert (await web.login(ADMIN)).status == 303
        export = await _completed(db_url, store, web)
        yield web, export, f"/staff/exports/{export['id']}/download"


def _export(db_url: str, export_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(
            "SELECT e.*, m.object_key, m.size_bytes, m.sha256, to_jsonb(m) AS media "
            "FROM export_jobs e LEFT JOIN media_items m ON m.id = e.media_item_id "
            "WHERE e.id = %s",
            (export_id,),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def _failures(db_url: str, export_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(
            "SELECT actor_email, details FROM audit_log "
            "WHERE action = 'export.download_failed' AND export_id = %s ORDER BY id",
            (export_id,),
        )
        return cur.fetchall()


async def _get(web: Web, path: str, **headers: str) -> tuple[int, Mapping[str, str], bytes, str]:
    """Status, headers, the body as far as it came, and how the body ended ('complete', or
    the client's error): within HANG seconds, or the download hung."""
    async with asyncio.timeout(HANG):
        response = await web.client.get(path, headers=headers)
        received = bytearray()
        ending = "complete"
        try:
            async for chunk in response.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError as exc:
            ending = type(exc).__name__
        return response.status, response.headers, bytes(received), ending


async def _metric(db_url: str, reason: str) -> str | None:
    async with running(db_url) as ops:
        text = await (await ops.client.get("/metrics")).text()
    match = re.search(
        rf'^ticketexport_download_failures_total\{{reason="{reason}"\}} (\S+)$', text, re.M
    )
    return match.group(1) if match else None


async def test_a_missing_file_answers_410_before_any_byte(
    db_url: str, admin: int, store: Path
) -> None:
    async with _serving(db_url, store) as (web, export, url):
        # Removed outside the product (or by a sweep that should not have).
        (store / export["object_key"]).unlink()

        status, headers, body, ending = await _get(web, url)
        assert status == 410, (status, ending)
        assert "ETag" not in headers
        assert "no longer available" in body.decode()
        csrf_in(body.decode())  # the layout's page, with its logout form
        head = await web.client.head(url)
        assert head.status == 410
        ranged = await _get(web, url, Range="bytes=0-99")
        assert ranged[0] == 410

    failures = _failures(db_url, str(export["id"]))
    assert [(f["actor_email"], f["details"]["reason"]) for f in failures] == [
        (ADMIN, "missing"),
        (ADMIN, "missing"),
    ]
    assert await _metric(db_url, "missing") == "2.0"


class _BreaksOff(LocalStorage):
    """Real files, handed over in pieces of 64 KiB; a read fails after the first MiB, as a
    store that goes away in the middle of a download does."""

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        blocks = super().read(key, start, end)
        try:
            first = await anext(blocks)
            for at in range(0, len(first), 64 * 1024):
                yield first[at : at + 64 * 1024]
            raise StorageError("connection reset by the store")
        finally:
            await blocks.aclose()  # type: ignore[attr-defined]


async def test_a_failure_after_the_first_byte_drops_the_connection_at_once(
    db_url: str, admin: int, store: Path
) -> None:
    async with _serving(db_url, store) as (_, export, url):
        pass
    async with running(
        db_url, storage=_BreaksOff(store), expect_500s=False, storage_url=store.as_uri()
    ) as web:
        assert (await web.login(ADMIN)).status == 303
        status, headers, body, ending = await _get(web, url)
    assert status == 200
    assert int(headers["Content-Length"]) == export["size_bytes"]
    # Short of its length, and the client knows it: the connection was closed.
    assert 0 < len(body) < export["size_bytes"]
    assert ending == "ClientPayloadError"
    (failure,) = _failures(db_url, str(export["id"]))
    assert failure["details"]["reason"] == "interrupted"


async def test_a_changed_file_never_reaches_a_client_under_the_old_etag(
    db_url: str, admin: int, store: Path
) -> None:
    async with _serving(db_url, store) as (web, export, url):
        path = store / export["object_key"]
        original = path.read_bytes()
        # The same size, different bytes near the end (in the last block).
        changed = bytearray(original)
        changed[-10:] = b"0123456789"
        path.write_bytes(bytes(changed))
        etag = f'"{export["sha256"]}"'

        # A byte range cannot be checked on its own: it is served as stored.
        status, headers, body, ending = await _get(web, url, Range="bytes=-10")
        assert (status, body, ending) == (206, b"0123456789", "complete")
        status, headers, body, ending = await _get(web, url, Range="bytes=0-")
        assert (status, body, ending) == (206, bytes(changed), "complete")

        status, headers, body, ending = await _get(web, url)
        assert (status, headers["ETag"]) == (200, etag)
        assert ending == "ClientPayloadError"
        # Everything up to the last block, and not one byte of the block that differs.
        assert len(body) < len(original) - 10
        assert body == original[: len(body)]

        # From now on, the export answers as one whose file is gone.
        status, headers, body, ending = await _get(web, url)
        assert status == 410
        assert "no longer available" in body.decode()
        assert (await web.client.head(url)).status == 410
        assert (await _get(web, url, Range="bytes=0-9"))[0] == 410
        page = await (await web.client.get(f"/staff/exports/{export['id']}")).text()
        assert "no longer available" in page
        assert f'href="{url}"' not in page

    row = _export(db_url, str(export["id"]))
    assert row["media"]["lost_reason"] == "digest_mismatch"
    assert row["media"]["lost_at"] is not None
    assert row["status"] == "completed"
    reasons = [f["details"]["reason"] for f in _failures(db_url, str(export["id"]))]
    assert reasons == ["digest_mismatch"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() != export["sha256"]
    assert await _metric(db_url, "digest_mismatch") == "1.0"


async def test_a_file_of_another_size_answers_410_and_stays_gone(
    db_url: str, admin: int, store: Path
) -> None:
    async with _serving(db_url, store) as (web, export, url):
        path = store / export["object_key"]
        original = path.read_bytes()
        path.write_bytes(original[:-1])
        # HEAD answers as GET would, and changes nothing.
        assert (await web.client.head(url)).status == 410
        assert _export(db_url, str(export["id"]))["media"]["lost_at"] is None
        assert _failures(db_url, str(export["id"])) == []
        assert (await _get(web, url))[0] == 410
        # Put back as it was: still not served (the store said otherwise once).
        path.write_bytes(original)
        assert (await _get(web, url))[0] == 410
    row = _export(db_url, str(export["id"]))
    assert row["media"]["lost_reason"] == "size_mismatch"
    reasons = [f["details"]["reason"] for f in _failures(db_url, str(export["id"]))]
    assert reasons == ["size_mismatch"]
