"""A store belongs to one installation: a second one is refused at start and, forced to run
maintenance, deletes nothing of the first's; a restore into a new database takes the store
over only with `ticketexport storage adopt`; a store with no place of its own is refused;
a store that does not answer makes a download a 503."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.components import missing_component
from tests.support.databases import create_database, drop_database, scratch_database
from tests.support.objectstores import SeaweedFS
from tests.support.servers import refused_start
from tests.support.services import services_for
from tests.support.web import running
from tests.support.workers import (
    REPO,
    Workers,
    export_row,
    request_export,
    run_async,
    wait_status,
)
from ticketexport import db, seed
from ticketexport.embedded import package_bin
from ticketexport.exports import maintenance
from ticketexport.storage import probe_key
from ticketexport.storage.local import LocalStorage

pytestmark = pytest.mark.slow

ADMIN = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export)


def _cli(
    db_url: str, home: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TICKETEXPORT_", "DATABASE_URL"))
    }
    environment.update({"DATABASE_URL": db_url, "TICKETEXPORT_HOME": str(home), **env})
    return subprocess.run(
        [sys.executable, "-m", "ticketexport", *args],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _put(storage: LocalStorage, key: str) -> None:
    async def one() -> AsyncIterator[bytes]:
        yield b"kept"

    await storage.put_stream(key, one(), content_type="text/plain")


def _completed_export(url: str, workers: Workers, env: dict[str, str]) -> dict[str, object]:
    """One export run to completion by a real worker of `url` (which claims the store)."""
    export_id = request_export(url)
    workers.start(url, extra_env=env)
    row = wait_status(url, export_id, {"completed", "failed"}, timeout=90, workers=workers)
    workers.stop_all()
    assert row["status"] == "completed", (row["error_code"], workers.outputs())
    return row


@pytest.fixture
def fresh_installation(server_url: str) -> Iterator[str]:
    """A database migrated on its own: another installation, with an id of its own."""
    with scratch_database(server_url) as url:
        db.migrate(url)
        yield url


def test_a_second_installation_on_the_store_is_refused_and_deletes_nothing_of_the_first(
    seeded_url: str, fresh_installation: str, home: Path, workers: Workers, tmp_path: Path
) -> None:
    store = tmp_path / "shared-store"
    env = {"TICKETEXPORT_STORAGE_URL": store.as_uri()}
    first = _completed_export(seeded_url, workers, env)
    storage = LocalStorage(store)
    # The first installation's: an attempt's file its database no longer records (its own
    # sweep's to judge), a probe its crashed start left behind.
    orphan = f"exports/{uuid.uuid4()}/1/tickets-all-tickets-20260601-120000.csv"
    stale = probe_key(now=1.0)
    run_async(_put(storage, orphan))
    run_async(_put(storage, stale))
    before = sorted(run_async(storage.list_keys()))

    for command in ("worker", "serve"):
        line = refused_start(command, fresh_installation, home, env)
        assert "belongs to another installation" in line, line
        assert "storage adopt" in line, line

    # Forced to run anyway (in-process, no start-up check): it deletes nothing.
    async def forced() -> maintenance.Report:
        async with services_for(fresh_installation, tmp_path, storage=storage) as services:
            return await maintenance.run_maintenance(services)

    report = run_async(forced())
    assert (report.orphans_removed, report.probes_removed, report.expired) == (0, 0, 0)
    assert sorted(run_async(storage.list_keys())) == before
    assert first["object_key"] in before


@pytest.fixture
def restored(server_url: str, seeded_url: str) -> Iterator[str]:
    """A new database on the same server, filled from a dump of `seeded_url` (taken when
    the test asks for it)."""
    name = f"te_restored_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        drop_database(server_url, name)


def _client_tools(server_url: str) -> Path:  # noqa: RET503 - missing_component never returns
    """A directory with pg_dump and psql at least as new as the server (pg_dump refuses an
    older one): the system's installations, newest first, then the embedded package's."""
    with psycopg.connect(server_url) as conn:
        server = conn.info.server_version // 10000
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    bundled = package_bin()
    if bundled is not None:
        candidates.append(bundled)
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if not ((directory / "pg_dump").exists() and (directory / "psql").exists()):
            continue
        version = subprocess.run(
            [str(directory / "pg_dump"), "--version"], capture_output=True, text=True, check=False
        ).stdout
        match = re.search(r"(\d+)\.", version)
        if match and int(match.group(1)) >= server:
            return directory
    missing_component(f"pg_dump and psql of PostgreSQL {server} or newer")


def _dump_and_restore(server_url: str, source: str, name: str) -> str:
    tools = _client_tools(server_url)
    pg_dump, psql = str(tools / "pg_dump"), str(tools / "psql")
    target = create_database(server_url, name)
    dump = subprocess.run(
        [pg_dump, "--no-owner", "--dbname", source], capture_output=True, check=True, timeout=120
    )
    subprocess.run(
        [psql, "--quiet", "--set", "ON_ERROR_STOP=1", "--dbname", target],
        input=dump.stdout,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return target


def test_storage_adopt_after_a_dump_and_restore_into_a_new_database(
    server_url: str, seeded_url: str, restored: str, home: Path, workers: Workers, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    env = {"TICKETEXPORT_STORAGE_URL": store.as_uri()}
    before = _completed_export(seeded_url, workers, env)
    copy = _dump_and_restore(server_url, seeded_url, restored)

    # The copy is this installation, but not the database that owns the store: it starts
    # only once told to take the store over.
    line = refused_start("worker", copy, home, env)
    assert "another database of this installation" in line, line
    with psycopg.connect(seeded_url) as a, psycopg.connect(copy) as b:
        query = "SELECT id FROM installation"
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    adopted = _cli(copy, home, env, "storage", "adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert adopted.stderr == ""
    assert "now belongs to installation" in adopted.stdout

    # Nothing lost: the export made before the dump downloads from the restored database,
    # and the restored database's own exports complete in the store.
    async def download() -> bytes:
        async with running(copy, storage_url=store.as_uri()) as web:
            assert (await web.login(ADMIN.email, ADMIN.password)).status == 303
            response = await web.client.get(f"/staff/exports/{before['id']}/download")
            assert response.status == 200
            return await response.read()

    assert hashlib.sha256(run_async(download())).hexdigest() == before["sha256"]
    after = _completed_export(copy, workers, env)

    # The database it was restored from no longer owns the store: refused, and forced to
    # run, it deletes nothing (the copy's new export is unknown to it).
    line = refused_start("worker", seeded_url, home, env)
    assert "another database of this installation" in line, line

    async def forced() -> maintenance.Report:
        async with services_for(seeded_url, tmp_path, storage=LocalStorage(store)) as services:
            return await maintenance.run_maintenance(services)

    report = run_async(forced())
    assert report.orphans_removed == 0
    assert (store / str(after["object_key"])).is_file()
    assert (store / str(before["object_key"])).is_file()


@pytest.mark.parametrize(
    "url",
    ["s3://ticketexport?endpoint_url=http://127.0.0.1:9", "azure://exports/", "file:///"],
)
def test_a_store_with_no_place_of_its_own_is_refused_at_start(
    db_url: str, home: Path, url: str
) -> None:
    env = {
        "TICKETEXPORT_STORAGE_URL": url,
        "AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
    }
    line = refused_start("worker", db_url, home, env)
    assert "not the root" in line or "needs a prefix" in line, line


@pytest.mark.s3
def test_a_store_that_does_not_answer_makes_a_download_a_503(
    seeded_url: str,
    seaweed: SeaweedFS,
    home: Path,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = seaweed.create_bucket()
    env = {
        **seaweed.env,
        "TICKETEXPORT_STORAGE_URL": seaweed.url(bucket, f"t-{uuid.uuid4().hex[:8]}"),
    }
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    export = _completed_export(seeded_url, workers, env)

    async def download() -> tuple[int, str, bytes]:
        async with running(seeded_url, storage_url=env["TICKETEXPORT_STORAGE_URL"]) as web:
            assert (await web.login(ADMIN.email, ADMIN.password)).status == 303
            async with asyncio.timeout(60):
                response = await web.client.get(f"/staff/exports/{export['id']}/download")
                body = await response.read()
            return response.status, response.headers.get("Content-Type", ""), body

    seaweed.stop()
    try:
        status, content_type, page = run_async(download())
    finally:
        seaweed.start()
    assert status == 503, page[:500]
    assert content_type.startswith("text/html")
    assert b"cannot be reached" in page
    status, content_type, body = run_async(download())
    assert (status, len(body)) == (200, export["size_bytes"])
    assert hashlib.sha256(body).hexdigest() == export["sha256"]
    with psycopg.connect(seeded_url) as conn:
        reasons = conn.execute(
            "SELECT details->>'reason' FROM audit_log WHERE action = 'export.download_failed'"
        ).fetchall()
    assert reasons == [("unavailable",)]
    assert export_row(seeded_url, str(export["id"]))["status"] == "completed"
