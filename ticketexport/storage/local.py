"""Local-filesystem storage for a single host: temp file, fsync, atomic rename."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from ticketexport.storage import (
    ObjectMissing,
    StorageError,
    StorageLimitExceeded,
    StoredObject,
    Tally,
    check_key,
)

_PART_SUFFIX = ".part"
# Exports hold other people's data: only the account running the service may read them.
FILE_MODE = 0o600
DIR_MODE = 0o700


class LocalStorage:
    """Objects are files under `root`; unfinished uploads are `<key>.<uuid>.part` beside them."""

    backend = "local"
    # Only the file system limits a file (its maximum file size and free space).
    max_object_size: int | None = None

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # A symbolic link inside the root may still lead out of it.
        if self.root not in path.parents:
            raise StorageError(f"object key {key!r} escapes the storage root")
        return path

    def _under(self, prefix: str) -> Path:
        """The folder a listing of `prefix` needs to walk: the prefix's own folder, never
        more of the tree than it can hold."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return self.root / folder if folder else self.root

    def _make_dirs(self, folder: Path) -> None:
        """Create `folder` and its missing parents, each 0700 (mkdir's parents= would use
        the umask's mode for the parents)."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            path.chmod(DIR_MODE)  # the umask may have taken more than 0700 leaves

    def _open_temp(self, temp: Path) -> int:
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str
    ) -> StoredObject:
        final = self._path(key)
        temp = final.with_name(f"{final.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
        taken = Tally()
        try:
            await asyncio.to_thread(self._make_dirs, final.parent)
            fd = await asyncio.to_thread(self._open_temp, temp)
            try:
                # A file needs no parts: each block the caller hands over is written as it
                # comes, so this backend holds nothing beyond the block in hand.
                async for chunk in chunks:
                    taken.add(chunk)
                    await asyncio.to_thread(_write_all, fd, chunk)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                await asyncio.to_thread(os.close, fd)
            # In the loop's own thread, not a worker thread: a rename is one metadata
            # operation, and a cancelled await could not stop a thread that renames after
            # the clean-up below has run.
            temp.replace(final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if exc.errno == errno.EFBIG:
                raise StorageLimitExceeded(f"{key}: {exc}") from exc
            raise
        except BaseException:
            # Cancelled or failed: never leave a partial file behind.
            temp.unlink(missing_ok=True)
            raise
        return taken.stored(key)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"object {key!r} is missing") from None
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
            raise ObjectMissing(f"object {key!r} is missing") from None

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

    async def list_keys(self, prefix: str = "") -> list[str]:
        def scan() -> list[str]:
            top = self._under(prefix)
            if not top.is_dir():
                return []
            found = []
            for path in top.rglob("*"):
                if path.name.endswith(_PART_SUFFIX) or not path.is_file():
                    continue
                relative = path.relative_to(self.root).as_posix()
                if relative.startswith(prefix):
                    found.append(relative)
            return sorted(found)

        return await asyncio.to_thread(scan)

    async def pending_uploads(self, prefix: str = "") -> list[str]:
        def scan() -> list[str]:
            top = self._under(prefix)
            if not top.is_dir():
                return []
            found = []
            for temp in top.rglob(f"*{_PART_SUFFIX}"):
                relative = temp.relative_to(self.root).as_posix()
                # strip ".<uuid>.part" to get the key the upload was for
                key = relative[: -len(_PART_SUFFIX)].rsplit(".", 1)[0]
                if key.startswith(prefix):
                    found.append(key)
            return sorted(set(found))

        return await asyncio.to_thread(scan)

    async def check(self) -> None:
        def writable() -> None:
            if not self.root.exists():
                self._make_dirs(self.root)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageError(f"{self.root} is not writable")

        try:
            await asyncio.to_thread(writable)
        except OSError as exc:
            raise StorageError(f"{self.root}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
