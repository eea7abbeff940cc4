"""Where export files live: one Storage protocol, a backend per URL scheme."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

# One part is the most any backend holds in memory while writing (a part is sent once it
# reaches this size, so it is at most this plus one block of the stream).
PART_SIZE = 8 * 1024 * 1024

# Every probe object lives under this prefix, its creation time in its name: a probe whose
# process died before deleting it is recognised and swept by maintenance.
PROBE_PREFIX = "probe/"
# A probe older than this belongs to a process that died during its start-up check.
PROBE_MAX_AGE_SECONDS = 300.0


class StorageError(Exception):
    """The storage backend failed; the message is for logs, never for users."""


class StorageLimitExceeded(StorageError):
    """The object would be larger than this backend can store."""


class StorageConfigError(StorageError):
    """TICKETEXPORT_STORAGE_URL or the credentials it needs are unusable."""


@dataclasses.dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


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
        """Bytes start..end (inclusive, None = to the end) of a stored object."""
        ...

    async def size(self, key: str) -> int:
        """Size of a stored object; StorageError if it is missing."""
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
    """Whether `key` is a probe object older than PROBE_MAX_AGE_SECONDS."""
    if not key.startswith(PROBE_PREFIX):
        return False
    stamp = key[len(PROBE_PREFIX) :].split("-", 1)[0]
    if not stamp.isdigit():
        # Not one of ours in form, but under our prefix: nothing else writes there.
        return True
    age = (time.time() if now is None else now) - int(stamp) / 1000
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


def prefixed_key(prefix: str, key: str) -> str:
    """An object store's name for `key` under the configured prefix; refuses empty and
    absolute keys, which would escape the prefix."""
    if not key or key.startswith("/"):
        raise StorageError(f"invalid object key {key!r}")
    return prefix + key


def from_url(url: str) -> Storage:
    """The backend named by TICKETEXPORT_STORAGE_URL's scheme.

    `file:///path`, `s3://bucket/prefix?endpoint_url=…&region=…`, `azure://container/prefix`.
    Each SDK is imported only when its scheme is configured; credentials come from the SDK's
    standard environment variables."""
    parts = urlsplit(url)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        from ticketexport.storage.local import LocalStorage

        if parts.netloc not in ("", "localhost"):
            raise StorageConfigError("a file:// URL names no host (file:///path)")
        return LocalStorage(unquote(parts.path))
    if parts.scheme in ("s3", "azure"):
        container = parts.netloc
        prefix = unquote(parts.path).strip("/")
        if not container:
            raise StorageConfigError(f"a {parts.scheme}:// URL needs a bucket or container name")
        if parts.scheme == "s3":
            try:
                from ticketexport.storage.s3 import S3Storage
            except ImportError:
                raise StorageConfigError(
                    "s3:// needs the s3 extra (pip install 'ticketexport[s3]')"
                ) from None
            unknown = set(query) - {"endpoint_url", "region", "addressing_style"}
            if unknown:
                raise StorageConfigError(f"unknown s3:// option(s): {', '.join(sorted(unknown))}")
            return S3Storage(
                container,
                prefix,
                endpoint_url=query.get("endpoint_url"),
                region=query.get("region"),
                addressing_style=query.get("addressing_style"),
            )
        try:
            from ticketexport.storage.azure import AzureStorage
        except ImportError:
            raise StorageConfigError(
                "azure:// needs the azure extra (pip install 'ticketexport[azure]')"
            ) from None
        if query:
            raise StorageConfigError(f"unknown azure:// option(s): {', '.join(sorted(query))}")
        return AzureStorage(container, prefix)
    raise StorageConfigError(f"storage scheme {parts.scheme!r} is not supported")
