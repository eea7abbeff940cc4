"""The store's marker: which installation, and which database of it, a store belongs to.

Maintenance deletes what its own database does not record. Two installations sharing a
store (staging and production on one bucket and prefix), or a restored copy of a database
pointed at the store of the one it was copied from, would delete each other's files. So a
store is bound to one database: `serve`, `worker` and `demo` write the marker object
`<prefix>ticketexport-installation` on first use and refuse to start when it names another;
maintenance deletes nothing unless it names its own; `ticketexport storage adopt` rewrites it.

The marker's first line is the installation id that `migrate` gave the database once (a
dump and restore keeps it). The second names the database itself, by the cluster's system
identifier and the database's oid, which a restore into a new database (or a major-version
upgrade that builds a new cluster) does not keep: a restored copy knows it is a copy of this
installation, and takes the store over only when told to.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from ticketexport.db import q
from ticketexport.storage import ObjectMissing, Storage

MARKER_KEY = "ticketexport-installation"
# A marker is two short lines; anything longer is not one.
_MAX_MARKER_BYTES = 4096
_DATABASE = "database "


@dataclasses.dataclass(frozen=True)
class Installation:
    """Who a store belongs to: an installation id and one database holding it (None in a
    marker that names the installation alone, as an operator may write by hand)."""

    id: str
    database: str | None

    def marker(self) -> bytes:
        return f"{self.id}\n{_DATABASE}{self.database}\n".encode()

    def describe(self) -> str:
        where = f", database {self.database}" if self.database else ""
        return f"installation {self.id}{where}"


class StoreTaken(Exception):
    """The store's marker names another installation, or another database of this one."""

    def __init__(self, found: Installation | None, ours: Installation) -> None:
        self.found = found
        self.ours = ours
        if found is None:
            reason = "holds a marker that is not a ticketexport installation's"
        elif found.id != ours.id:
            reason = f"belongs to another installation ({found.id}; this is {ours.id})"
        else:
            reason = (
                f"belongs to another database of this installation ({found.database}; this is "
                f"{ours.database}): a restored copy, or the database this one was restored from"
            )
        super().__init__(reason)


async def installation_of(conn: psycopg.AsyncConnection[Any]) -> Installation:
    """This database's installation id and identity (sql/migrations/0010)."""
    cur = await conn.execute(q("installation_identity"))
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("the installation table holds no row; run `ticketexport migrate`")
    return Installation(id=str(row[0]), database=str(row[1]))


def parse(data: bytes) -> Installation | None:
    """The marker's contents; None when they are not a marker's."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    if not lines or len(lines) > 2:
        return None
    try:
        installation = str(uuid.UUID(lines[0].strip()))
    except ValueError:
        return None
    database = None
    if len(lines) == 2:
        if not lines[1].startswith(_DATABASE) or not lines[1][len(_DATABASE) :].strip():
            return None
        database = lines[1][len(_DATABASE) :].strip()
    return Installation(id=installation, database=database)


class _Absent:
    """No marker object at all (as opposed to one that is not a marker)."""


ABSENT = _Absent()


async def read(storage: Storage) -> Installation | _Absent | None:
    """The marker: ABSENT when there is none, None when the object is not a marker.
    StorageError when the store cannot say."""
    try:
        data = b"".join([chunk async for chunk in storage.read(MARKER_KEY, 0, _MAX_MARKER_BYTES)])
    except ObjectMissing:
        return ABSENT
    return parse(data)


async def _write(storage: Storage, ours: Installation) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield ours.marker()

    await storage.put_stream(MARKER_KEY, body(), content_type="text/plain; charset=utf-8")


async def claim(storage: Storage, ours: Installation) -> None:
    """Make sure the store is this database's: write the marker when there is none (or it
    names this installation without a database); StoreTaken when it names another."""
    found = await read(storage)
    if found == ours:
        return
    if isinstance(found, _Absent) or (
        found is not None and found.id == ours.id and found.database is None
    ):
        await _write(storage, ours)
        # Another database starting on the same empty store at the same moment may have
        # written after us: the marker read back is the one that counts.
        found = await read(storage)
        if found == ours:
            return
    raise StoreTaken(None if isinstance(found, _Absent) else found, ours)


async def adopt(storage: Storage, ours: Installation) -> Installation | None:
    """Make the store this database's whatever its marker said; returns what it said."""
    found = await read(storage)
    await _write(storage, ours)
    return found if isinstance(found, Installation) else None


async def foreign(storage: Storage, ours: Installation) -> str | None:
    """None when the marker names this database; otherwise why the store is not ours to
    delete from (for the log). StorageError when the store cannot say."""
    found = await read(storage)
    if found == ours:
        return None
    if isinstance(found, _Absent):
        return "the store has no installation marker"
    return str(StoreTaken(found, ours))
