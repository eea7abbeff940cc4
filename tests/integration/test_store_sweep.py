"""The orphan sweep deletes only what is its own to delete: never a file whose completion
commits while it decides, never a key of a form the product does not write, and nothing at
all from a store whose marker names another database."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.databases import Seeding, scratch_database
from tests.support.services import actor_for, services_for
from ticketexport.db import q
from ticketexport.exports import maintenance, service
from ticketexport.services import Services
from ticketexport.storage import probe_key
from ticketexport.storage.local import LocalStorage
from ticketexport.views.model import ListRequest

FILE_NAME = "tickets-all-tickets-20260601-120000.csv"
BODY = b"\xef\xbb\xbfTicket ID\n1\n"


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=40, seed=3, anchor=dt.date(2026, 6, 1))


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with services_for(
        seeded_url, tmp_path, storage=LocalStorage(tmp_path / "store"), claim=True
    ) as services:
        yield services


async def _put(storage: LocalStorage, key: str, body: bytes = BODY) -> None:
    async def one() -> AsyncIterator[bytes]:
        yield body

    await storage.put_stream(key, one(), content_type="text/csv")


async def _running_export(deps: Services, url: str) -> str:
    """An export whose first attempt is running now (claimed, heartbeat fresh)."""
    request = ListRequest(view="all", q="", sort="oldest", filters={}, page=None)
    requested = await service.request_export(deps, actor_for(url), request, client_ip=None)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET status = 'running', started_at = now(), "
            "heartbeat_at = now(), progress_at = now() WHERE id = %s",
            (requested.export_id,),
        )
    return requested.export_id


async def _complete(url: str, export_id: str, key: str) -> None:
    """What the attempt's completion commits: its media item and `completed`, together."""
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        cur = await conn.execute(
            q("media_item_insert"),
            {
                "file_name": FILE_NAME,
                "size": len(BODY),
                "content_type": "text/csv; charset=utf-8",
                "backend": "local",
                "key": key,
                "sha256": hashlib.sha256(BODY).hexdigest(),
            },
        )
        media = await cur.fetchone()
        assert media is not None
        cur = await conn.execute(
            q("export_complete"), {"id": export_id, "attempt": 1, "media_id": media[0]}
        )
        assert await cur.fetchone() is not None


class _Moment:
    """One moment in maintenance, chosen by the test: once armed, the next statement run on
    any of maintenance's connections returns only after `then` has run and committed."""

    def __init__(self, then: Callable[[], Awaitable[None]]) -> None:
        self.then = then
        self.armed = False
        self.happened = 0

    async def after_statement(self) -> None:
        if self.armed:
            self.armed = False
            await self.then()
            self.happened += 1


class _Connection:
    def __init__(self, conn: Any, moment: _Moment) -> None:
        self._conn = conn
        self._moment = moment

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        cursor = await self._conn.execute(*args, **kwargs)
        await self._moment.after_statement()
        return cursor


class _Pool:
    """The process's pool, each connection it hands out watched by `moment`."""

    def __init__(self, pool: Any, moment: _Moment) -> None:
        self._pool = pool
        self._moment = moment

    @contextlib.asynccontextmanager
    async def connection(self, *args: Any, **kwargs: Any) -> AsyncIterator[_Connection]:
        async with self._pool.connection(*args, **kwargs) as conn:
            yield _Connection(conn, self._moment)


class _Listing(LocalStorage):
    """Real files; listing the exports arms the moment (the sweep has seen the store and
    asks the database next)."""

    def __init__(self, root: Path, moment: _Moment) -> None:
        super().__init__(root)
        self.moment = moment

    async def list_keys(self, prefix: str = "") -> list[str]:
        keys = await super().list_keys(prefix)
        if prefix == "exports/":
            self.moment.armed = True
        return keys


async def test_a_completion_committed_while_the_sweep_decides_keeps_its_file(
    deps: Services, seeded_url: str, tmp_path: Path
) -> None:
    export_id = await _running_export(deps, seeded_url)
    key = f"exports/{export_id}/1/{FILE_NAME}"
    # The attempt has stored its file and is about to record it.
    await _put(LocalStorage(tmp_path / "store"), key)
    moment = _Moment(lambda: _complete(seeded_url, export_id, key))
    sweeping = dataclasses.replace(
        deps, pool=_Pool(deps.pool, moment), storage=_Listing(tmp_path / "store", moment)
    )

    report = await maintenance.run_maintenance(sweeping)

    assert moment.happened == 1, "the completion did not commit while the sweep decided"
    with psycopg.connect(seeded_url) as conn:
        row = conn.execute(
            "SELECT e.status, m.object_key FROM export_jobs e "
            "JOIN media_items m ON m.id = e.media_item_id WHERE e.id = %s",
            (export_id,),
        ).fetchone()
    assert row == ("completed", key)
    assert (tmp_path / "store" / key).read_bytes() == BODY, "a completed export's file is gone"
    assert report.orphans_removed == 0


async def test_keys_of_any_other_form_survive_a_sweep(deps: Services, tmp_path: Path) -> None:
    storage = deps.storage
    assert isinstance(storage, LocalStorage)
    other = str(uuid.uuid4())
    stamp = f"{1000 * 1000:015d}"  # long stale, were it a probe
    foreign = [
        f"exports/{other.upper()}/1/{FILE_NAME}",
        f"exports/{other.replace('-', '')}/1/{FILE_NAME}",
        f"exports/{other}/01/{FILE_NAME}",
        f"exports/{other}/first/{FILE_NAME}",
        f"exports/{other}/1/2024/{FILE_NAME}",
        f"exports/{other}/{FILE_NAME}",
        "exports/notes.txt",
        "probe/2024-report.pdf",
        f"probe/{stamp}-{uuid.uuid4().hex}.bak",
        f"probe/{stamp}-{uuid.uuid4().hex.upper()}",
        f"probe/1000000-{uuid.uuid4().hex}",
        f"probe/archive/{stamp}-{uuid.uuid4().hex}",
    ]
    for key in foreign:
        await _put(storage, key)
    # Of the product's own forms: an attempt's file no export records, a probe left by a
    # process that died during its start-up check. Both go.
    orphan = f"exports/{other}/1/{FILE_NAME}"
    stale = probe_key(now=1.0)
    await _put(storage, orphan)
    await _put(storage, stale)

    report = await maintenance.run_maintenance(deps)

    assert (report.orphans_removed, report.probes_removed) == (1, 1)
    left = set(await storage.list_keys())
    assert orphan not in left
    assert stale not in left
    assert set(foreign) <= left, sorted(set(foreign) - left)


async def test_nothing_is_deleted_from_a_store_another_database_owns(
    deps: Services,
    seeded_url: str,
    server_url: str,
    seeded_templates: Any,
    seeding: Seeding,
    tmp_path: Path,
) -> None:
    """A copy of this database (same installation, another database: a restore into a new
    one) pointed at this store: its maintenance deletes nothing, sweep or expiry."""
    storage = deps.storage
    assert isinstance(storage, LocalStorage)
    orphan = f"exports/{uuid.uuid4()}/1/{FILE_NAME}"
    stale = probe_key(now=1.0)
    await _put(storage, orphan)
    await _put(storage, stale)
    with scratch_database(server_url, seeded_templates.name(seeding)) as copy_url:
        async with services_for(copy_url, tmp_path, storage=storage) as copy:
            # An export the copy knows about, completed and past its retention.
            export_id = await _running_export(copy, copy_url)
            key = f"exports/{export_id}/1/{FILE_NAME}"
            await _put(storage, key)
            await _complete(copy_url, export_id, key)
            with psycopg.connect(copy_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE export_jobs SET requested_at = now() - interval '73 hours', "
                    "expires_at = now() WHERE id = %s",
                    (export_id,),
                )
            report = await maintenance.run_maintenance(copy)
    assert (report.orphans_removed, report.probes_removed, report.expired) == (0, 0, 0)
    assert {orphan, stale, key} <= set(await storage.list_keys())
    # The same installation, another database: the store is not the copy's until adopted.
    assert copy.installation.id == deps.installation.id
    assert copy.installation.database != deps.installation.database
