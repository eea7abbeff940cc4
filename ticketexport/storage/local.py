"""Local-filesystem storage for a single host: temp file, fsync, atomic rename."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from ticketexport.storage import StorageError, StoredObject

_PART_SUFFIX = ".part"


class LocalStorage:
    """Objects are files under `root`; unfinished uploads are `<key>.<uuid>.part` beside them."""

    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"object key {key!r} escapes the storage root")
        return path

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        final = self._path(key)
        temp = final.with_name(f"{final.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
        digest = hashlib.sha256()
        size = 0
        try:
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(temp.open, "wb")
            try:
                # A file needs no parts: each block the caller hands over is written as it
                # comes, so this backend holds nothing beyond the block in hand.
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(handle.write, chunk)
                await asyncio.to_thread(handle.flush)
                await asyncio.to_thread(os.fsync, handle.fileno())
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, temp, final)
        except BaseException:
            # Cancelled or failed: never leave a partial file behind.
            temp.unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StorageError(f"object {key!r} is missing") from None
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                want = 1024 * 1024 if remaining is None else min(1024 * 1024, remaining)
                data = await asyncio.to_thread(handle.read, want)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            await asyncio.to_thread(handle.close)

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            raise StorageError(f"object {key!r} is missing") from None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        await self.abort_uploads(key)

    async def abort_uploads(self, key: str) -> None:
        final = self._path(key)
        if final.parent.exists():
            for temp in final.parent.glob(f"{final.name}.*{_PART_SUFFIX}"):
                temp.unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        found = []
        for temp in self.root.rglob(f"*{_PART_SUFFIX}"):
            relative = temp.relative_to(self.root).as_posix()
            # strip ".<uuid>.part" to get the key the upload was for
            key = relative[: -len(_PART_SUFFIX)].rsplit(".", 1)[0]
            if key.startswith(prefix):
                found.append(key)
        return sorted(set(found))
