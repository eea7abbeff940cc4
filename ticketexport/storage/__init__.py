"""Where export files live: one Storage protocol, a backend per URL scheme."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol
from urllib.parse import unquote, urlsplit

# One part is the most any backend holds in memory while writing.
PART_SIZE = 8 * 1024 * 1024


class StorageError(Exception):
    """The storage backend failed; the message is for logs, never for users."""


@dataclasses.dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class Storage(Protocol):
    """Backend contract: streamed writes that are all-or-nothing, ranged reads, deletes."""

    backend: str

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        """Write the stream under `key`; visible only when complete, removed on failure."""
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

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        """Keys with an unfinished upload (for orphan cleanup)."""
        ...


def from_url(url: str) -> Storage:
    """The backend named by TICKETEXPORT_STORAGE_URL's scheme."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from ticketexport.storage.local import LocalStorage

        return LocalStorage(unquote(parts.path))
    raise StorageError(f"storage scheme {parts.scheme!r} is not available in this build")
