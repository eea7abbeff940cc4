"""The composition root for tests: a process's services on a test database, and actors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import psycopg

from ticketexport import seed
from ticketexport.bootstrap import open_services
from ticketexport.config import Settings
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.services import Services
from ticketexport.storage import Storage, marker


def settings(
    db_url: str, home: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings as the processes read them, for `db_url`; the run's isolated home by default
    (tests/conftest.py), so stored files never land in the working tree."""
    return Settings.from_env(
        {
            "DATABASE_URL": db_url,
            "TICKETEXPORT_HOME": str(home) if home else os.environ["TICKETEXPORT_HOME"],
            **(env or {}),
        }
    )


@contextlib.asynccontextmanager
async def services_for(
    db_url: str,
    home: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    web: bool = False,
    worker_concurrency: int = 0,
    storage: Storage | None = None,
    claim: bool = False,
) -> AsyncIterator[Services]:
    """Everything a process would build for `db_url`, opened for the test and closed after.

    `claim` makes the store this database's, as `serve` and `worker` do when they start:
    maintenance deletes nothing from a store whose installation marker names another
    database. Every test database is a clone of one migrated template, so all share one
    installation id but each is a database of its own: a test that claims a store needs
    one of its own (a folder under tmp_path, a prefix of its own), and the stores tests
    share (the run's home) are never claimed in-process.
    """
    async with open_services(
        settings(db_url, home, env),
        db_url,
        web=web,
        worker_concurrency=worker_concurrency,
        storage=storage,
    ) as services:
        if claim:
            await marker.claim(services.storage, services.installation)
        yield services


def actor_for(db_url: str, email: str | None = None) -> Actor:
    """A user as the web layer loads them (current permissions); default: the seeded
    administrator who holds the export permission."""
    if email is None:
        email = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export).email
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT u.id, u.email, u.first_name || ' ' || u.last_name, u.is_admin, "
            "COALESCE(bit_or(r.permissions), 0) "
            "FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id "
            "LEFT JOIN roles r ON r.id = ur.role_id WHERE u.email = %s GROUP BY u.id",
            (email,),
        ).fetchone()
    assert row is not None, email
    return Actor(
        id=row[0],
        email=row[1],
        name=row[2].strip(),
        is_admin=row[3],
        permissions=Permission(row[4]),
    )
