"""Exports on S3 (SeaweedFS) and Azure Blob (Azurite) with real serve and worker processes:
the start-up check, byte-identical files, scale-out, a worker killed, a storage outage."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.support.formats import assert_parquet_holds
from tests.support.objectstores import Azurite, SeaweedFS, azurite
from tests.support.servers import Server, Servers, free_port, refused_start
from tests.support.services import actor_for, services_for
from tests.support.web import csrf_in
from tests.support.workers import (
    Reference,
    Workers,
    copy_backends,
    doing_jobs,
    export_row,
    request_export,
    run_async,
    wait_for,
    wait_status,
)
from ticketexport import seed
from ticketexport.exports import maintenance, service
from ticketexport.exports.formats import BOM
from ticketexport.storage import Storage
from ticketexport.storage.backends import from_url
from ticketexport.views import registry
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

ADMIN = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export)
# Tests that queue many exports for one user lift the per-user limit.
FAST = {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0"}
BACKENDS = [
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("azure", marks=pytest.mark.azure),
]


def _s3_env(seaweed: SeaweedFS) -> dict[str, str]:
    """A prefix of its own for each test in the shared bucket."""
    bucket = seaweed.create_bucket()
    return {
        **seaweed.env,
        "TICKETEXPORT_STORAGE_URL": seaweed.url(bucket, f"run-{uuid.uuid4().hex[:10]}"),
    }


def _azure_env(server: Azurite) -> dict[str, str]:
    container = server.create_container()
    return {**server.env, "TICKETEXPORT_STORAGE_URL": server.url(container, "exports-store")}


class _Env:
    """Storage settings applied to this process too, to look into the store directly."""

    def __init__(self, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.env = env
        for name, value in env.items():
            if name != "TICKETEXPORT_STORAGE_URL":
                monkeypatch.setenv(name, value)

    def store(self) -> Storage:
        return from_url(self.env["TICKETEXPORT_STORAGE_URL"])

    def contents(self, prefix: str = "exports/") -> tuple[list[str], list[str]]:
        async def look() -> tuple[list[str], list[str]]:
            store = self.store()
            try:
                return await store.list_keys(prefix), await store.pending_uploads(prefix)
            finally:
                await store.close()

        result: tuple[list[str], list[str]] = run_async(look())
        return result


def _storage_env(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> _Env:
    if backend == "s3":
        return _Env(_s3_env(request.getfixturevalue("seaweed")), monkeypatch)
    return _Env(_azure_env(request.getfixturevalue("azurite_server")), monkeypatch)


# --- the start-up check -------------------------------------------------------------------


@pytest.mark.s3
def test_serve_and_worker_refuse_storage_they_cannot_use(
    db_url: str, home: Path, seaweed: SeaweedFS
) -> None:
    bucket = seaweed.create_bucket()
    closed = f"http://127.0.0.1:{free_port()}"
    cases = {
        "no bucket": {"TICKETEXPORT_STORAGE_URL": "s3:///prefix"},
        "unreachable endpoint": {
            **seaweed.env,
            "TICKETEXPORT_STORAGE_URL": f"s3://{bucket}/x?endpoint_url={closed}",
        },
        "wrong credentials": {
            **seaweed.env,
            "AWS_SECRET_ACCESS_KEY": "not-the-secret",
            "TICKETEXPORT_STORAGE_URL": seaweed.url(bucket, "x"),
        },
        "no Azure credentials": {"TICKETEXPORT_STORAGE_URL": "azure://container/x"},
        "unknown option": {"TICKETEXPORT_STORAGE_URL": f"s3://{bucket}/x?endpoint={closed}"},
    }
    for case, env in cases.items():
        line = refused_start("worker", db_url, home, env)
        assert line.startswith("ticketexport: error: "), (case, line)
    refused_start("serve", db_url, home, cases["unreachable endpoint"])
    # The checks left nothing behind in the store.
    keys, uploads = run_async(_everything(seaweed, bucket))
    assert (keys, uploads) == ([], []), (keys, uploads)


async def _everything(seaweed: SeaweedFS, bucket: str) -> tuple[list[str], list[str]]:
    async with seaweed.client() as s3:
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix="x/")
        uploads = await s3.list_multipart_uploads(Bucket=bucket, Prefix="x/")
    return (
        [item["Key"] for item in listed.get("Contents", [])],
        [item["Key"] for item in uploads.get("Uploads", [])],
    )


# --- byte-identical on every backend ----------------------------------------------------


class _Client:
    """One browser: its cookies, talking to any web process (sessions live in Postgres)."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=120)
        )

    async def login(self, server: Server) -> None:
        async with self.http.get(server.url + "/login") as page:
            token = csrf_in(await page.text())
        form = {"email": ADMIN.email, "password": ADMIN.password, "csrf_token": token}
        async with self.http.post(
            server.url + "/login", data=form, allow_redirects=False
        ) as answer:
            assert answer.status == 303, answer.status

    async def request_export(self, server: Server, export_format: str = "csv") -> str:
        async with self.http.get(server.url + "/staff/exports") as page:
            token = csrf_in(await page.text())
        form = {"csrf_token": token, "view": "all", "format": export_format}
        async with self.http.post(
            server.url + "/staff/tickets/export", data=form, allow_redirects=False
        ) as answer:
            assert answer.status == 303, (answer.status, await answer.text())
            return answer.headers["Location"].rsplit("/", 1)[1]

    async def watch(self, server: Server, export_id: str) -> list[dict[str, Any]]:
        """Event-stream updates until the export is terminal."""
        seen: list[dict[str, Any]] = []
        async with self.http.get(f"{server.url}/staff/exports/{export_id}/events") as stream:
            assert stream.status == 200
            async for raw in stream.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                seen.append(event)
                if event["status"] in ("completed", "failed", "cancelled", "expired"):
                    return seen
        return seen

    async def download(
        self, server: Server, export_id: str, byte_range: str | None = None
    ) -> tuple[int, bytes]:
        headers = {"Range": byte_range} if byte_range else {}
        async with self.http.get(
            f"{server.url}/staff/exports/{export_id}/download", headers=headers
        ) as answer:
            return answer.status, await answer.read()

    async def close(self) -> None:
        await self.http.close()


@contextlib.asynccontextmanager
async def _browser() -> AsyncIterator[_Client]:
    opened = _Client()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_export_on_each_backend_is_the_local_file_byte_for_byte(
    backend: str,
    seeded_url: str,
    workers: Workers,
    servers: Servers,
    reference_export: Reference,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = _storage_env(backend, request, monkeypatch)
    web = servers.start(seeded_url, storage.env)
    workers.start(seeded_url, extra_env=storage.env)

    async def scenario() -> tuple[str, str, bytes, bytes]:
        async with _browser() as client:
            await client.login(web)
            export_id = await client.request_export(web)
            events = await asyncio.wait_for(client.watch(web, export_id), timeout=90)
            assert events[-1]["status"] == "completed", (events[-1], workers.outputs())
            status, body = await client.download(web, export_id)
            assert status == 200
            assert len(body) == reference_export.size
            assert hashlib.sha256(body).hexdigest() == reference_export.sha256
            status, part = await client.download(web, export_id, "bytes=100-199")
            assert (status, part) == (206, body[100:200])
            async with client.http.get(web.url + "/healthz") as health:
                assert (await health.json())["storage"] == "ok"
            # Parquet is stored and served like any other file, its footer by range.
            parquet_id = await client.request_export(web, "parquet")
            events = await asyncio.wait_for(client.watch(web, parquet_id), timeout=90)
            assert events[-1]["status"] == "completed", (events[-1], workers.outputs())
            status, typed = await client.download(web, parquet_id)
            assert status == 200
            status, tail = await client.download(web, parquet_id, "bytes=-8")
            assert (status, tail) == (206, typed[-8:])
            assert tail.endswith(b"PAR1")
        return export_id, parquet_id, body, typed

    export_id, parquet_id, body, typed = run_async(scenario())
    row = export_row(seeded_url, export_id)
    assert row["sha256"] == reference_export.sha256
    parquet_row = export_row(seeded_url, parquet_id)
    assert parquet_row["sha256"] == hashlib.sha256(typed).hexdigest()
    assert parquet_row["size_bytes"] == len(typed)
    columns = parquet_row["request"]["view"]["definition"]["columns"]
    assert_parquet_holds(
        typed,
        list(csv.reader(io.StringIO(body[len(BOM) :].decode(), newline=""))),
        [registry.COLUMNS[key].value_type for key in columns],
        parquet_row["request"]["timezone"],
    )
    keys, uploads = storage.contents()
    assert (sorted(keys), uploads) == (sorted([row["object_key"], parquet_row["object_key"]]), [])


# --- scale-out: two web and two worker processes, one database, one S3 store -----------


def _started_by(workers: Workers, export_id: str) -> list[str]:
    """Which workers logged starting an attempt of this export."""
    return [
        worker.name
        for worker in workers.started
        for line in worker.output().splitlines()
        if export_id in line and '"export started"' in line
    ]


@pytest.mark.s3
def test_scale_out_on_s3(
    seeded_url: str,
    workers: Workers,
    servers: Servers,
    reference_export: Reference,
    seaweed: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = _Env({**_s3_env(seaweed), **FAST}, monkeypatch)
    web_1, web_2 = servers.pair(seeded_url, storage.env)
    workers.start(seeded_url, extra_env=storage.env)
    workers.start(seeded_url, extra_env=storage.env)

    # Requested on web 1, watched live and downloaded on web 2.
    async def scenario() -> None:
        async with _browser() as client:
            await client.login(web_1)
            export_id = await client.request_export(web_1)
            events = await asyncio.wait_for(client.watch(web_2, export_id), timeout=90)
            assert events[-1]["status"] == "completed", workers.outputs()
            status, body = await client.download(web_2, export_id)
            assert status == 200
            assert hashlib.sha256(body).hexdigest() == reference_export.sha256

    run_async(scenario())

    # Fifty at once, spread over both workers, each run exactly once.
    ids = run_async(_fifty(seeded_url))
    for queued in ids:
        row = wait_status(seeded_url, queued, {"completed", "failed"}, timeout=240, workers=workers)
        assert (row["status"], row["attempt"]) == ("completed", 1), row["error_code"]
    runs = {queued: _started_by(workers, queued) for queued in ids}
    assert all(len(names) == 1 for names in runs.values()), runs
    by_worker = {
        name: sum(names == [name] for names in runs.values()) for name in ("worker-1", "worker-2")
    }
    assert all(count > 0 for count in by_worker.values()), by_worker
    keys, uploads = storage.contents()
    assert uploads == []
    assert len(keys) == 51


async def _fifty(url: str) -> list[str]:
    user = actor_for(url)
    ids = []
    async with services_for(url, env=FAST) as services:
        for n in range(50):
            # Distinct searches: no double submit folds two of them into one.
            request = ListRequest(view="all", q=f"{n + 10}", sort=None, filters={}, page=None)
            requested = await service.request_export(services, user, request, client_ip=None)
            ids.append(requested.export_id)
    return ids


def _large_rows(url: str) -> None:
    """Rows of some 8 kB, written before the click (an export reads the data as of it): a
    file takes several parts, and an attempt cut short leaves an unfinished upload."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET description = repeat('x', 8000)")


def _id_and_description(url: str, export_id: str) -> None:
    """The queued export shows the ticket id and the (large) description."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET request = jsonb_set(request, '{view,definition,columns}', "
            '\'["id", "description"]\') WHERE id = %s',
            (export_id,),
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_mid_export_leaves_the_other_to_finish(
    seeded_url: str,
    workers: Workers,
    reference_export: Reference,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = _storage_env(backend, request, monkeypatch)
    storage.env.update(FAST)
    _large_rows(seeded_url)
    ids = [request_export(seeded_url, sort=sort) for sort in ("newest", "oldest", None)]
    for export_id in ids:
        _id_and_description(seeded_url, export_id)
    first = workers.start(seeded_url, max_rows_per_s=4000, extra_env=storage.env)
    workers.start(seeded_url, max_rows_per_s=4000, extra_env=storage.env)

    def both_busy() -> list[str] | None:
        running = [i for i in ids if export_row(seeded_url, i)["status"] == "running"]
        return running if len(running) == 2 else None

    wait_for("both workers running an export", both_busy, timeout=60, workers=workers)
    victim = next(i for i in ids if _started_by(workers, i) == [first.name])
    # Killed with parts of its file already in the store: an unfinished upload to sweep.
    wait_for(
        "the victim's upload in progress",
        lambda: any(victim in key for key in storage.contents()[1]),
        timeout=60,
        workers=workers,
    )
    first.kill()
    for export_id in ids:
        row = wait_status(
            seeded_url, export_id, {"completed", "failed"}, timeout=120, workers=workers
        )
        assert row["status"] == "completed", (row["error_code"], workers.outputs())
        assert row["rows_done"] == reference_export.rows
    assert export_row(seeded_url, victim)["attempt"] == 2
    expected = sorted(export_row(seeded_url, i)["object_key"] for i in ids)
    # The killed attempt's upload goes with the next maintenance pass.
    wait_for(
        "storage to hold exactly the three files",
        lambda: storage.contents() == (expected, []),
        timeout=20,
        workers=workers,
    )


# --- a real outage of the store's server ---------------------------------------------------


@contextlib.contextmanager
def _outage_store(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_Env, SeaweedFS | Azurite]]:
    """A store of `backend` whose server the test may stop and start again: the run's
    SeaweedFS, or an Azurite of this test's own that keeps its blobs on disk."""
    if backend == "s3":
        seaweed: SeaweedFS = request.getfixturevalue("seaweed")
        yield _Env(_s3_env(seaweed), monkeypatch), seaweed
        return
    with azurite(persistent=True) as server:
        yield _Env(_azure_env(server), monkeypatch), server


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_storage_outage_fails_cleanly_and_retry_completes(
    seeded_url: str,
    workers: Workers,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _outage_store(backend, request, monkeypatch) as (storage, server):
        _outage_then_retry(seeded_url, workers, storage, server)


def _outage_then_retry(
    seeded_url: str, workers: Workers, storage: _Env, server: SeaweedFS | Azurite
) -> None:
    # The outage hits a multipart upload.
    _large_rows(seeded_url)
    export_id = request_export(seeded_url)
    _id_and_description(seeded_url, export_id)
    # Waiting on an unreachable store is not a stall: the attempts end by the store's own
    # errors, not by maintenance giving up on them.
    env = {**storage.env, "TICKETEXPORT_STALL_SECONDS": "60"}
    workers.start(seeded_url, max_rows_per_s=2500, extra_env=env)

    def uploading() -> bool:
        return bool(storage.contents()[1])

    wait_for("a multipart upload in progress", uploading, timeout=60, workers=workers)
    server.stop()
    try:
        # Three attempts, each ended by the client's own timeouts (Azure's read timeout is
        # 30 s, with a retry): the bound only stops a run that would never end.
        row = wait_status(
            seeded_url, export_id, {"completed", "failed"}, timeout=300, workers=workers
        )
        assert (row["status"], row["error_code"]) == ("failed", "storage_unavailable"), (
            workers.outputs()
        )
        assert row["attempt"] == 3
        assert row["error_message"]
        assert copy_backends(seeded_url, export_id) == []
        assert doing_jobs(seeded_url, export_id) == []
    finally:
        server.start()
    # Back again: the upload the outage stranded goes with the next maintenance pass.
    wait_for(
        "nothing left in storage",
        lambda: storage.contents() == ([], []),
        timeout=30,
        workers=workers,
    )
    retried = run_async(_retry(seeded_url, export_id))
    row = wait_status(seeded_url, retried, {"completed", "failed"}, timeout=120, workers=workers)
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    assert storage.contents() == ([row["object_key"]], [])


async def _retry(url: str, export_id: str) -> str:
    async with services_for(url) as services:
        retried = await service.retry_export(
            services, actor_for(url), export_id, client_ip="127.0.0.1"
        )
    return retried.export_id


@pytest.mark.s3
def test_maintenance_sweeps_an_object_store(
    seeded_url: str, seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an attempt stored but never recorded goes; nothing else does."""
    storage = _Env(_s3_env(seaweed), monkeypatch)
    stray = f"exports/{uuid.uuid4()}/1/tickets.csv"

    async def scenario() -> None:
        store = storage.store()

        async def one() -> AsyncIterator[bytes]:
            yield b"orphan"

        try:
            await store.put_stream(stray, one(), content_type="text/csv")
            await store.put_stream("exports/notes.txt", one(), content_type="text/plain")
            async with services_for(seeded_url, storage=store, claim=True) as services:
                report = await maintenance.run_maintenance(services)
            assert report.orphans_removed == 1
        finally:
            await store.close()

    run_async(scenario())
    assert storage.contents() == (["exports/notes.txt"], [])
