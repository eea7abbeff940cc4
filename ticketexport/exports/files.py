"""A completed export's file on its way to a download: checked before the status line,
verified while it streams, and never served once it is known to be wrong.

A download answers with the recorded size and an ETag of the recorded SHA-256 before any
byte. So the object is looked at first: missing, it is a 410 page (the file is gone, for
good: deleted outside the product, or by a sweep that should not have); unreachable, a
503; a different size, a 410 too, recorded on the media item so that it stays one. A full
download hashes what it sends and holds back the last block until the hash is the
recorded one; a mismatch ends the response before that block, short of its length, so no
client ever holds the wrong bytes as the whole file, and from then on the export answers as
one whose file is gone. A byte range is served as stored (it cannot be checked on its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import psycopg

from ticketexport import audit, events
from ticketexport.domain.actor import Actor
from ticketexport.domain.errors import Unavailable
from ticketexport.exports import store
from ticketexport.exports.service import FileGone
from ticketexport.exports.store import Export, ExportFile
from ticketexport.storage import ObjectMissing, StorageError

if TYPE_CHECKING:
    from ticketexport.services import Services

log = logging.getLogger(__name__)

# Why a download did not deliver the file (audit `export.download_failed`, and the label
# of ticketexport_download_failures_total).
MISSING = "missing"
UNAVAILABLE = "unavailable"
SIZE_MISMATCH = "size_mismatch"
DIGEST_MISMATCH = "digest_mismatch"
INTERRUPTED = "interrupted"
# How long a download waits for the store to answer before the status line (a store that
# drops packets must become a 503, not a hanging request).
CHECK_SECONDS = 15.0


class StoreUnavailable(Unavailable):
    """The file store does not answer (HTTP 503)."""

    default_message = (
        "The file store cannot be reached right now, so the file cannot be sent. "
        "Please try again in a few minutes."
    )


class Interrupted(Exception):
    """The response was started and cannot be finished: the connection must be dropped,
    so the client sees a short body, never a complete-looking one."""


@dataclasses.dataclass(frozen=True)
class Download:
    """Who asks for which export's file, and which bytes of it."""

    user: Actor
    export: Export
    start: int
    end: int
    client_ip: str | None
    # A Range request: served as stored (a part cannot be checked against the whole's hash).
    ranged: bool = False

    @property
    def length(self) -> int:
        return max(0, self.end - self.start + 1)

    @property
    def file(self) -> ExportFile:
        """The completed export's file (a Download is made only for one that has it)."""
        file = self.export.file
        assert file is not None
        return file

    @property
    def key(self) -> str:
        return self.file.object_key


async def check(services: Services, download: Download, *, record: bool = True) -> None:
    """Before the status line: the object is there, with the recorded size. FileGone or
    StoreUnavailable otherwise, each audited (and a wrong size recorded on the media item)
    unless `record` is false: a HEAD request changes nothing."""
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            stored = await services.storage.size(download.key)
    except ObjectMissing:
        await _failed(services, download, MISSING, record=record)
        raise FileGone() from None
    except (StorageError, OSError, TimeoutError) as exc:
        log.warning("file store unreachable for a download (%s)", exc)
        await _failed(services, download, UNAVAILABLE, record=record)
        raise StoreUnavailable() from None
    recorded = download.file.size_bytes
    if stored != recorded:
        if record:
            await _lost(services, download, SIZE_MISMATCH, {"stored_size": stored})
        raise FileGone()
    if recorded == 0 and hashlib.sha256().hexdigest() != download.file.sha256:
        # Nothing to stream, so the hash is checked here, before the status line.
        if record:
            await _lost(services, download, DIGEST_MISMATCH, {})
        raise FileGone()


async def open_body(services: Services, download: Download) -> AsyncGenerator[bytes, None]:
    """The bytes to send, once check() passed. The first block is read here, before the
    status line (FileGone or StoreUnavailable as in check()); the iterator's own failures
    are Interrupted."""
    if download.file.size_bytes == 0:
        return _empty()
    reader = services.storage.read(download.key, download.start, download.end)
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            first = await anext(reader, b"")
    except ObjectMissing:
        await _close(reader)
        await _failed(services, download, MISSING)
        raise FileGone() from None
    except (StorageError, OSError, TimeoutError) as exc:
        await _close(reader)
        log.warning("file store unreachable for a download (%s)", exc)
        await _failed(services, download, UNAVAILABLE)
        raise StoreUnavailable() from None
    return _body(services, download, first, reader)


async def _empty() -> AsyncGenerator[bytes, None]:
    nothing: tuple[bytes, ...] = ()
    for block in nothing:
        yield block


async def _close(reader: AsyncIterator[bytes]) -> None:
    close = getattr(reader, "aclose", None)
    if close is not None:
        await close()


async def _body(
    services: Services, download: Download, first: bytes, reader: AsyncIterator[bytes]
) -> AsyncGenerator[bytes, None]:
    """One block behind the store: the last block goes out only once a full download's
    hash is known to be the recorded one, and any download's length the one announced."""
    digest = hashlib.sha256()
    verify = not download.ranged
    sent = 0
    held = first
    try:
        if verify:
            await _hash(digest, first)
        async for block in reader:
            if verify:
                await _hash(digest, block)
            if held:
                yield held
                sent += len(held)
            held = block
    except (StorageError, OSError, TimeoutError) as exc:
        log.warning(
            "the file store failed during a download (%s)",
            exc,
            extra={"export_id": download.export.id, "bytes_sent": sent},
        )
        await _failed(services, download, INTERRUPTED, {"bytes_sent": sent})
        raise Interrupted from exc
    finally:
        await _close(reader)
    complete = sent + len(held) == download.length
    if verify and (not complete or digest.hexdigest() != download.file.sha256):
        await _lost(services, download, DIGEST_MISMATCH, {"bytes_sent": sent})
        raise Interrupted
    if not complete:
        # The object shrank after check(): ending here would leave the client waiting for
        # the rest of its Content-Length.
        await _failed(services, download, INTERRUPTED, {"bytes_sent": sent})
        raise Interrupted
    if held:
        yield held


async def _hash(digest: Any, block: bytes) -> None:
    """Off the event loop: SHA-256 runs at some 150-500 MiB/s here, milliseconds per block
    that every other request of this process would wait (hashlib lets go of the GIL)."""
    await asyncio.to_thread(digest.update, block)


async def _failed(
    services: Services,
    download: Download,
    reason: str,
    details: Mapping[str, Any] | None = None,
    *,
    record: bool = True,
) -> None:
    """One audit row for a download that did not deliver the file (counted on /metrics)."""
    if not record:
        return
    async with services.pool.connection() as conn:
        await _audit(conn, download, reason, details)


async def _lost(
    services: Services, download: Download, reason: str, details: Mapping[str, Any]
) -> None:
    """The stored object is not the recorded file: marked on its media item, so every later
    download answers 410, announced to open status pages, and audited."""
    export_id = download.export.id
    log.error(
        "an export's stored file differs from its record (%s); it is never served again",
        reason,
        extra={"export_id": export_id, "object_key": download.key, **details},
    )
    async with services.pool.connection() as conn, conn.transaction():
        await store.file_lost(conn, download.file.media_item_id, reason)
        await _audit(conn, download, reason, details)
        await events.publish(conn, export_id)


async def _audit(
    conn: psycopg.AsyncConnection[Any],
    download: Download,
    reason: str,
    details: Mapping[str, Any] | None,
) -> None:
    await audit.record(
        conn,
        "export.download_failed",
        actor_id=download.user.id,
        actor_email=download.user.email,
        client_ip=download.client_ip,
        export_id=download.export.id,
        details={
            "reason": reason,
            "range": f"{download.start}-{download.end}" if download.ranged else None,
            **(details or {}),
        },
    )
