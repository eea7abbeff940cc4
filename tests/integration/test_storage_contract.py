"""One contract, three backends: local files, S3 (SeaweedFS) and Azure Blob (Azurite)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.limits import file_size_limit
from tests.support.objectstores import Azurite, SeaweedFS
from ticketexport.storage import (
    PART_SIZE,
    Storage,
    StorageError,
    StorageLimitExceeded,
    probe,
    probe_is_stale,
    probe_key,
)
from ticketexport.storage.backends import from_url

BACKENDS = [
    "local",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("azure", marks=pytest.mark.azure),
]
MB = 1024 * 1024

# Builds a fresh, empty store of one backend; keyword arguments shrink its limits.
StoreFactory = Callable[..., Storage]


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreFactory]:
    backend = request.param
    made: list[Storage] = []
    if backend == "s3":
        seaweed: SeaweedFS = request.getfixturevalue("seaweed")
        for name, value in seaweed.env.items():
            monkeypatch.setenv(name, value)
        bucket = seaweed.create_bucket()
        prefix = f"contract/{uuid.uuid4().hex}"

        def factory(**limits: int) -> Storage:
            from ticketexport.storage.s3 import S3Storage

            if not limits:
                store = from_url(seaweed.url(bucket, prefix))
            else:
                store = S3Storage(bucket, prefix, endpoint_url=seaweed.endpoint, **limits)
            made.append(store)
            return store

    elif backend == "azure":
        server: Azurite = request.getfixturevalue("azurite_server")
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        container = server.create_container()

        def factory(**limits: int) -> Storage:
            from ticketexport.storage.azure import AzureStorage

            store = (
                from_url(server.url(container, "tenant/a"))
                if not limits
                else AzureStorage(container, "tenant/a", **_azure_limits(limits))
            )
            made.append(store)
            return store

    else:

        def factory(**limits: int) -> Storage:
            store = from_url((tmp_path / "store").as_uri())
            made.append(store)
            return store

    yield factory
    for store in made:
        asyncio.run(store.close())


def _azure_limits(limits: dict[str, int]) -> dict[str, int]:
    return {
        "part_size": limits["part_size"],
        "max_blocks": limits["max_parts"],
    }


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read(store: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def _nothing_left(store: Storage) -> None:
    assert await store.list_keys() == []
    assert await store.pending_uploads() == []


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_write_read_range_delete(make_store: StoreFactory) -> None:
    store = make_store()
    data = os.urandom(PART_SIZE + 12345)  # more than one part: a multipart upload

    async def scenario() -> None:
        stored = await store.put_stream("exports/x/1/f.csv", _chunks(data), content_type="text/csv")
        assert stored.size == len(data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert await store.exists("exports/x/1/f.csv")
        assert await store.size("exports/x/1/f.csv") == len(data)
        assert await _read(store, "exports/x/1/f.csv") == data
        assert await _read(store, "exports/x/1/f.csv", 10, 19) == data[10:20]
        assert await _read(store, "exports/x/1/f.csv", len(data) - 3) == data[-3:]
        assert (
            await _read(store, "exports/x/1/f.csv", PART_SIZE - 5, PART_SIZE + 5)
            == (data[PART_SIZE - 5 : PART_SIZE + 6])
        )
        small = b"a,b\n1,2\n"
        await store.put_stream("exports/y/1/s.csv", _chunks(small), content_type="text/csv")
        empty = await store.put_stream("exports/z/1/e.csv", _chunks(b""), content_type="text/csv")
        assert empty.size == 0
        assert await store.size("exports/z/1/e.csv") == 0
        assert await store.list_keys("exports/") == [
            "exports/x/1/f.csv",
            "exports/y/1/s.csv",
            "exports/z/1/e.csv",
        ]
        assert await store.list_keys("exports/y/") == ["exports/y/1/s.csv"]
        assert await store.pending_uploads() == []
        for key in ("exports/x/1/f.csv", "exports/y/1/s.csv", "exports/z/1/e.csv"):
            await store.delete(key)
        assert not await store.exists("exports/x/1/f.csv")
        with pytest.raises(StorageError):
            await store.size("exports/x/1/f.csv")
        with pytest.raises(StorageError):
            await _read(store, "exports/x/1/f.csv")
        await _nothing_left(store)
        # Deleting what is not there succeeds, twice over.
        await store.delete("exports/x/1/f.csv")
        await store.delete("exports/never/1/written.csv")

    _run(scenario())


class _PeakRss:
    """The process's peak resident memory while it runs, above where it started."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(0.005)

    def __enter__(self) -> _PeakRss:
        self.start = self.current()
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def growth(self) -> int:
        return self.peak - self.start


@pytest.mark.slow
def test_a_200_mb_stream_stays_within_bounded_memory(make_store: StoreFactory) -> None:
    store = make_store()
    block = os.urandom(MB)
    total = 200 * MB
    expected = hashlib.sha256()
    for n in range(200):
        expected.update(block[n:] + block[:n])

    async def stream() -> AsyncIterator[bytes]:
        for n in range(200):
            rotated = block[n:] + block[:n]
            for start in range(0, MB, 256 * 1024):
                yield rotated[start : start + 256 * 1024]

    async def scenario() -> None:
        # Connections and their buffers are set up before measuring.
        await store.put_stream("warm/1/w.bin", _chunks(block), content_type="text/csv")
        with _PeakRss() as rss:
            stored = await store.put_stream("big/1/b.bin", stream(), content_type="text/csv")
        assert stored.size == total
        assert stored.sha256 == expected.hexdigest()
        assert await store.size("big/1/b.bin") == total
        assert rss.growth < 64 * MB, f"peak RSS grew by {rss.growth / MB:.1f} MB"
        digest = hashlib.sha256()
        async for chunk in store.read("big/1/b.bin"):
            digest.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()
        await store.delete("big/1/b.bin")
        await store.delete("warm/1/w.bin")
        await _nothing_left(store)

    _run(scenario())


def test_a_failed_write_leaves_nothing(make_store: StoreFactory) -> None:
    store = make_store()

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(5 * PART_SIZE // (2 * MB)):  # two and a half parts, then the failure
            yield os.urandom(2 * MB)
        raise OSError("the export's source went away")

    async def scenario() -> None:
        with pytest.raises((OSError, StorageError)):
            await store.put_stream("exports/f/1/f.csv", failing(), content_type="text/csv")
        await _nothing_left(store)

    _run(scenario())


def test_a_cancelled_write_leaves_nothing(make_store: StoreFactory) -> None:
    store = make_store()

    async def scenario() -> None:
        sent_enough = asyncio.Event()

        async def stalling() -> AsyncIterator[bytes]:
            for _ in range(3 * PART_SIZE // MB):  # three parts: some are already uploaded
                yield os.urandom(MB)
            sent_enough.set()
            await asyncio.Event().wait()  # the COPY stalls; the export is cancelled
            yield b""

        write = asyncio.create_task(
            store.put_stream("exports/c/1/c.csv", stalling(), content_type="text/csv")
        )
        await asyncio.wait_for(sent_enough.wait(), timeout=60)
        # What the test is about: there is something to clean up at this point.
        assert await store.pending_uploads() != [] or store.backend == "local"
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        await _nothing_left(store)

    _run(scenario())


def test_the_largest_object_fails_with_a_limit_and_leaves_nothing(
    make_store: StoreFactory,
) -> None:
    if make_store().backend == "local":
        # Only the file system limits a local file: reach its limit for real.
        store = make_store()
        assert store.max_object_size is None
        limited = file_size_limit(10 * MB)
    else:
        store = make_store(part_size=5 * MB, max_parts=2)
        assert store.max_object_size == 10 * MB
        limited = contextlib.nullcontext()

    async def scenario() -> None:
        with pytest.raises(StorageLimitExceeded):
            await store.put_stream(
                "exports/l/1/l.csv", _chunks(os.urandom(11 * MB)), content_type="text/csv"
            )
        await _nothing_left(store)
        # Just under the limit still fits.
        data = os.urandom(10 * MB - 1)
        stored = await store.put_stream("exports/l/1/l.csv", _chunks(data), content_type="text/csv")
        assert stored.size == len(data)
        await store.delete("exports/l/1/l.csv")
        await _nothing_left(store)

    with limited:
        _run(scenario())


def test_the_probe_leaves_nothing_and_stale_probes_are_recognised(
    make_store: StoreFactory,
) -> None:
    store = make_store()

    async def scenario() -> None:
        await probe(store)
        await _nothing_left(store)

    _run(scenario())
    assert probe_is_stale(probe_key(now=1_000.0), now=1_000.0 + 301)
    assert not probe_is_stale(probe_key(now=1_000.0), now=1_000.0 + 10)
    assert not probe_is_stale("exports/x/1/f.csv")


def test_check_answers_for_a_reachable_store(make_store: StoreFactory) -> None:
    store = make_store()
    _run(store.check())


def test_keys_stay_inside_the_store(make_store: StoreFactory) -> None:
    store = make_store()

    async def scenario() -> None:
        with pytest.raises(StorageError):
            await store.put_stream("/abs", _chunks(b"x"), content_type="text/csv")

        # Deleting a key that was never written is not an error, and leaves nothing.
        await store.delete(f"exports/{uuid.uuid4()}/1/none.csv")
        await _nothing_left(store)

    _run(scenario())
