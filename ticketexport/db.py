"""Database access: connection URLs, the named-query file and the migrations runner."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql

from ticketexport.config import Settings
from ticketexport.paths import ROOT

SQL_DIR = ROOT / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
PROCRASTINATE_SCHEMA = ROOT / "procrastinate_schema.sql"
PROCRASTINATE_VERSION = "procrastinate"

# Any constant works as long as every migrator uses the same one.
MIGRATION_LOCK_KEY = 0x7469636B6574  # "ticket"

# Tables whose superseded row versions are kept (sql/migrations/0007_versions.sql), each with
# a `<table>_history` table and a `<table>_as_of(pg_snapshot)` function: everything a view's
# conditions, search, sort and columns can read.
VERSIONED_TABLES = (
    "tickets",
    "contacts",
    "users",
    "teams",
    "team_memberships",
    "ticket_followers",
    "ticket_tasks",
    "ticket_statuses",
    "ticket_priorities",
)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL to use: DATABASE_URL, or the embedded server while the block runs."""
    if settings.database_url:
        yield settings.database_url
        return
    from ticketexport.embedded import embedded_database

    with embedded_database(settings.home) as url:
        yield url


def wait_until_reachable(url: str, seconds: float) -> None:
    """Return once the server accepts a connection; after `seconds`, raise its last error.

    A database container starting beside `migrate` accepts connections only after its
    first initialisation; nothing announces that moment, so this asks once a second.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = psycopg.connect(url, connect_timeout=max(1, min(5, int(seconds))))
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        else:
            conn.close()
            return


# Named queries -------------------------------------------------------------------------


@functools.cache
def queries() -> dict[str, LiteralString]:
    """Every statement in sql/queries.sql, keyed by its `-- name:` header."""
    # The file is part of the package, never user input, so its text is a literal.
    result: dict[str, LiteralString] = {}
    name: str | None = None
    lines: list[str] = []
    for line in (SQL_DIR / "queries.sql").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", line)
        if match:
            if name is not None:
                result[name] = "\n".join(lines).strip()
            name, lines = match.group(1), []
            if name in result:
                raise ValueError(f"query {name!r} is defined twice in queries.sql")
        elif name is not None and not (line.startswith("--") and not lines):
            lines.append(line)
    if name is not None:
        result[name] = "\n".join(lines).strip()
    return result


def q(name: str) -> sql.SQL:
    """The named query as a composable SQL object."""
    return sql.SQL(queries()[name])


# Migrations ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Migration:
    version: str
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


class MigrationError(RuntimeError):
    """A migration could not be applied or the recorded history does not match the files."""


def available_migrations() -> list[Migration]:
    """procrastinate's schema first, then sql/migrations/NNNN_*.sql in order."""
    found = [
        Migration(
            PROCRASTINATE_VERSION,
            "procrastinate_schema.sql",
            PROCRASTINATE_SCHEMA.read_text(encoding="utf-8"),
        )
    ]
    seen: set[str] = set()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        if match.group(1) in seen:
            raise MigrationError(f"two migrations share the number {match.group(1)}")
        seen.add(match.group(1))
        found.append(Migration(match.group(1), path.name, path.read_text(encoding="utf-8")))
    return found


def _applied(conn: psycopg.Connection[Any]) -> dict[str, str]:
    exists = conn.execute(q("migrations_table_exists")).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(q("migrations_applied")).fetchall()
    return {row[0]: row[1] for row in rows}


def unapplied(applied: Mapping[str, str]) -> list[Migration]:
    """Migrations missing from `applied` (version → checksum); raises if an applied one was
    edited afterwards."""
    pending = []
    for migration in available_migrations():
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} changed after it was applied "
                "(its checksum no longer matches schema_migrations)"
            )
    return pending


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations not yet applied; raises if an applied one was edited afterwards."""
    return unapplied(_applied(conn))


def migrate(url: str) -> list[str]:
    """Apply what is pending under an advisory lock; returns the names applied."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        # Session-level lock: a second migrator waits here, then finds nothing pending.
        conn.execute(q("migrations_lock"), {"key": MIGRATION_LOCK_KEY})
        try:
            # Checked up front: the files themselves are UTF-8 and would not even reach
            # such a server intact. The client's encoding is not set for SQL_ASCII, so
            # compare the name the server reports.
            encoding = str(conn.info.parameter_status("server_encoding") or "unknown")
            if encoding != "UTF8":
                raise MigrationError(f"ticketexport needs a UTF8 database, this one is {encoding}")
            conn.execute(q("migrations_create_history"))
            for migration in pending_migrations(conn):
                try:
                    with conn.transaction():
                        # Migration files ship with the package; they are literals, not input.
                        conn.execute(sql.SQL(migration.text))
                        conn.execute(
                            q("migrations_record"),
                            {
                                "version": migration.version,
                                "name": migration.name,
                                "checksum": migration.checksum,
                            },
                        )
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise MigrationError(f"migration {migration.name} failed: {first}") from exc
                applied_now.append(migration.name)
        finally:
            conn.execute(q("migrations_unlock"), {"key": MIGRATION_LOCK_KEY})
    return applied_now


# Blocking connections from async code: an export's count and COPY, and the standby's replay
# check before them, share one blocking connection (see exports/worker.py). ---------------

T = TypeVar("T")


def fetch_one(
    conn: psycopg.Connection[Any], statement: Any, params: Mapping[str, Any] | None
) -> tuple[Any, ...]:
    """One row of a statement on a blocking connection (run it with in_thread)."""
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return tuple(row)


async def in_thread(conn: psycopg.Connection[Any], call: Callable[..., T], *args: Any) -> T:
    """`call` on a blocking connection, in a thread. A cancelled caller (a cancel, a rescue,
    a shutdown) cancels the statement as well and waits until the thread has let go of the
    connection, as an asyncio connection would."""
    work = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(psycopg.Error, OSError):
            await asyncio.to_thread(conn.cancel_safe, timeout=5.0)
        with contextlib.suppress(Exception):
            await work
        raise


async def close_quietly(conn: psycopg.Connection[Any]) -> None:
    """Close a blocking connection from async code, whatever state it is in."""
    with contextlib.suppress(psycopg.Error, OSError):
        await asyncio.to_thread(conn.close)
