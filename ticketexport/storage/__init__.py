"""Where export files live: one Storage protocol the backends implement (backends.py picks one)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Protocol

# One part is the most any backend holds in memory while writing (a part is sent once it
# reaches this size, so it is at most this plus one block of the stream).
PART_SIZE = 8 * 1024 * 1024

# Every probe object lives under this prefix, its creation time in its name: a probe whose
# process died before deleting it is recognised and swept by maintenance.
PROBE_PREFIX = "probe/"
# Exactly what probe_key() writes: anything else under probe/ is not ours to delete.
_PROBE_KEY = re.compile(r"probe/([0-9]{15})-[0-9a-f]{32}")
# A probe older than this belongs to a process that died during its start-up check.
PROBE_MAX_AGE_SECONDS = 300.0
# Characters no key may hold: C0 and C1 controls and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class StorageError(Exception):
    """The storage backend failed; the message is for logs, never for users."""


class StorageLimitExceeded(StorageError):
    """The object would be larger than this backend can store."""


class StorageConfigError(StorageError):
    """TICKETEXPORT_STORAGE_URL or the credentials it needs are unusable."""


class ObjectMissing(StorageError):
    """The store answered, and holds no object under the key."""


@dataclasses.dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class Tally:
    """What a write has taken so far: the size and SHA-256 its StoredObject reports."""

    def __init__(self) -> None:
        self.size = 0
        self._digest = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    def stored(self, key: str) -> StoredObject:
        return StoredObject(key=key, size=self.size, sha256=self._digest.hexdigest())


class Storage(Protocol):
    """Backend contract: streamed writes that are all-or-nothing, ranged reads, deletes."""

    backend: str
    # The largest object a write can produce (bytes); None: only the disk limits it.
    max_object_size: int | None

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        """Write the stream under `key`; visible only when complete, removed on failure or
        cancellation (no object, no unfinished upload). StorageLimitExceeded when the stream
        outgrows max_object_size."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive, None = to the end) of a stored object; ObjectMissing
        when there is none."""
        ...

    async def size(self, key: str) -> int:
        """Size of a stored object; ObjectMissing if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove an object and any unfinished upload for it; missing is not an error."""
        ...

    async def abort_uploads(self, key: str) -> None:
        """Remove unfinished uploads for `key`, never the complete object."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether a complete object is stored under `key`."""
        ...

    async def list_keys(self, prefix: str = "") -> list[str]:
        """Keys of the complete objects under `prefix`."""
        ...

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        """Keys with an unfinished upload (for orphan cleanup)."""
        ...

    async def check(self) -> None:
        """A cheap read-only check that the store answers (for /healthz)."""
        ...

    async def close(self) -> None:
        """Release connections; the object is not used afterwards."""
        ...


def probe_key(now: float | None = None) -> str:
    """A new probe object's key: the prefix, the creation time in ms, a random part."""
    stamp = int((time.time() if now is None else now) * 1000)
    return f"{PROBE_PREFIX}{stamp:015d}-{uuid.uuid4().hex}"


def probe_is_stale(key: str, now: float | None = None) -> bool:
    """Whether `key` is a probe object, in exactly the form probe_key() writes, older than
    PROBE_MAX_AGE_SECONDS. Anything else under the prefix (someone's `probe/report.pdf`) is
    not a probe, whatever its age."""
    match = _PROBE_KEY.fullmatch(key)
    if match is None:
        return False
    age = (time.time() if now is None else now) - int(match.group(1)) / 1000
    return age > PROBE_MAX_AGE_SECONDS


async def probe(storage: Storage) -> None:
    """Write, read back and delete one small object: the store is reachable and writable.

    The object is deleted even when the check fails half-way; a process killed during the
    check leaves it under PROBE_PREFIX, where maintenance removes it."""
    key = probe_key()
    payload = b"ticketexport storage probe\n"

    async def one() -> AsyncIterator[bytes]:
        yield payload

    try:
        await storage.put_stream(key, one(), content_type="text/plain")
        data = b"".join([chunk async for chunk in storage.read(key)])
        if data != payload:
            raise StorageError("the probe object read back differs from what was written")
    except BaseException:
        # The first failure is the one to report; the sweep takes what this leaves.
        with contextlib.suppress(StorageError, OSError):
            await storage.delete(key)
        raise
    await storage.delete(key)


def check_key(key: str) -> str:
    """`key` when every backend stores it as the same name under its prefix: "/"-separated
    segments, none empty, "." or ".." (which a file system would resolve elsewhere), no
    backslash (a separator on some systems) and no control characters."""
    if (
        any(segment in ("", ".", "..") for segment in key.split("/"))
        or "\\" in key
        or _CONTROL.search(key)
    ):
        raise StorageError(f"invalid object key {key!r}")
    return key


def prefixed_key(prefix: str, key: str) -> str:
    """An object store's name for `key` under the configured prefix."""
    return prefix + check_key(key)


class RemoteStore:
    """What the S3 and Azure stores share: object names under the configured prefix, one
    client opened on first use, and what a failed write raises."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._lock = asyncio.Lock()

    def _key(self, key: str) -> str:
        return prefixed_key(self.prefix, key)

    async def _open_once(
        self, opened: Callable[[], bool], open_client: Callable[[], Awaitable[None]]
    ) -> None:
        """Open the client unless `opened()`, once however many tasks ask at the same time."""
        if not opened():
            async with self._lock:
                if not opened():
                    await open_client()


def write_failure(
    key: str, exc: BaseException, errors: tuple[type[BaseException], ...]
) -> BaseException | None:
    """What a failed write raises once its upload is discarded: None to raise `exc` itself
    (ours, or not the client library's: a cancellation, say), else a StorageError naming it."""
    if isinstance(exc, StorageError) or not isinstance(exc, errors):
        return None
    return StorageError(f"{key}: {type(exc).__name__}: {exc}")
