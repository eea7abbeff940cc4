"""Local storage on a real filesystem: atomic streamed writes, ranges, cleanup."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ticketexport.storage import PART_SIZE, StorageError
from ticketexport.storage.backends import from_url
from ticketexport.storage.local import LocalStorage


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read_all(
    storage: LocalStorage, key: str, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, start, end)])


async def test_streamed_write_round_trips_with_hash(tmp_path: Path) -> None:
    storage = from_url(tmp_path.as_uri())
    data = bytes(range(256)) * (PART_SIZE // 256 * 2 + 7)  # a bit over two parts
    stored = await storage.put_stream("exports/a/file.csv", _chunks(data), content_type="text/csv")
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await storage.size("exports/a/file.csv") == len(data)
    assert await storage.exists("exports/a/file.csv")
    assert isinstance(storage, LocalStorage)
    assert await _read_all(storage, "exports/a/file.csv") == data
    assert await _read_all(storage, "exports/a/file.csv", 10, 19) == data[10:20]
    assert await _read_all(storage, "exports/a/file.csv", len(data) - 3) == data[-3:]
    assert await storage.pending_uploads() == []


async def test_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise ConnectionError("database went away")

    with pytest.raises(ConnectionError):
        await storage.put_stream("exports/b.csv", broken(), content_type="text/csv")
    assert not await storage.exists("exports/b.csv")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_cancelled_stream_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 10
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(storage.put_stream("c.csv", slow(), content_type="text/csv"))
    await started.wait()
    assert await storage.pending_uploads() == ["c.csv"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_delete_removes_object_and_unfinished_uploads(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put_stream("d/e.csv", _chunks(b"hello"), content_type="text/csv")
    (tmp_path / "d" / "e.csv.0123abcd.part").write_bytes(b"half")
    assert await storage.pending_uploads("d/") == ["d/e.csv"]
    await storage.delete("d/e.csv")
    await storage.delete("d/e.csv")  # missing is not an error
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../../b", "a\\b"])
async def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError):
        await storage.put_stream(key, _chunks(b"x"), content_type="text/csv")


async def test_missing_object_is_a_storage_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageError):
        await storage.size("nope.csv")
    with pytest.raises(StorageError):
        await _read_all(storage, "nope.csv")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(StorageError):
        from_url("ftp://example/x")


async def test_abort_uploads_keeps_the_complete_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put_stream("f/g.csv", _chunks(b"done"), content_type="text/csv")
    (tmp_path / "f" / "g.csv.0badc0de.part").write_bytes(b"half")
    await storage.abort_uploads("f/g.csv")
    assert await storage.pending_uploads() == []
    assert await _read_all(storage, "f/g.csv") == b"done"


async def test_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path: Path) -> None:
    """Exports hold other people's data: only the service's own account may read them,
    even when the process runs with a permissive umask."""
    storage = LocalStorage(tmp_path / "store")
    previous = os.umask(0)
    try:
        await storage.put_stream("exports/m/1/m.csv", _chunks(b"a,b\n"), content_type="text/csv")
    finally:
        os.umask(previous)
    modes = {
        path.relative_to(tmp_path).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in (tmp_path / "store").rglob("*")
    }
    assert modes == {
        "store/exports": 0o700,
        "store/exports/m": 0o700,
        "store/exports/m/1": 0o700,
        "store/exports/m/1/m.csv": 0o600,
    }
