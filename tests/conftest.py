"""Test harness: one migrated template database per run, cloned for each test that asks."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.clusters import icu_server
from tests.support.databases import (
    SeededTemplates,
    Seeding,
    create_database,
    drop_database,
    scratch_database,
    with_dbname,
)
from ticketexport import db
from ticketexport.embedded import embedded_database

# tests/ is importable as a package because pyproject.toml puts the project root on
# sys.path (pytest's `pythonpath`); the plugin holds the harness's hooks.
pytest_plugins = ["tests.support.plugin", "tests.support.objectstores"]


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    """A private directory for this run, removed at the end.

    It lives outside pytest's own temporary tree on purpose: every pytest that starts
    resets /tmp/pytest-of-<user> to mode 0700, which would lock an embedded server running
    as the `postgres` account (when tests run as root) out of its data directory.
    """
    path = Path(tempfile.mkdtemp(prefix="ticketexport-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_home(run_dir: Path) -> Iterator[Path]:
    """Point TICKETEXPORT_HOME at a fresh directory so no run touches ./.ticketexport.

    A developer's own embedded server or stored files must never leak into a test, and a
    server left behind by an interrupted run must never be joined by the next one.
    """
    home = run_dir / "home"
    home.mkdir()
    previous = os.environ.get("TICKETEXPORT_HOME")
    os.environ["TICKETEXPORT_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("TICKETEXPORT_HOME", None)
        else:
            os.environ["TICKETEXPORT_HOME"] = previous


@pytest.fixture(scope="session")
def server_url(run_dir: Path) -> Iterator[str]:
    """A maintenance URL (database `postgres`) on the server the suite runs against."""
    if os.environ.get("TICKETEXPORT_TEST_SERVER") == "icu":
        # The whole suite on a server whose default collation is linguistic (ICU en-US):
        # results must not depend on the server's locale.
        with icu_server() as cluster:
            yield cluster.url("postgres")
        return
    url = os.environ.get("DATABASE_URL")
    if url:
        yield with_dbname(url, "postgres")
        return
    home = Path(os.environ.get("TICKETEXPORT_TEST_HOME") or run_dir / "server")
    with embedded_database(home) as embedded:
        with psycopg.connect(embedded, autocommit=True) as conn:
            # This server holds nothing but throw-away test databases: durability only
            # costs time (each per-test database copy would wait on fsync).
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
            conn.execute("SELECT pg_reload_conf()")
        yield embedded


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """Name of a database migrated once for the whole run."""
    name = f"te_tpl_{secrets.token_hex(6)}"
    url = create_database(server_url, name)
    try:
        db.migrate(url)
        yield name
    finally:
        drop_database(server_url, name)


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database for one test."""
    with scratch_database(server_url, template_db) as url:
        yield url


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """A fresh database with nothing applied."""
    with scratch_database(server_url) as url:
        yield url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def seeded_templates(server_url: str, template_db: str) -> Iterator[SeededTemplates]:
    """Seeded copies of the migrated template, one per Seeding asked for in this run."""
    templates = SeededTemplates(server_url, template_db)
    try:
        yield templates
    finally:
        templates.drop_all()


@pytest.fixture
def seeded_url(
    server_url: str, seeded_templates: SeededTemplates, seeding: Seeding
) -> Iterator[str]:
    """A fresh copy, for one test, of the demo seed that the `seeding` fixture in scope names
    (the acceptance conftest and test modules define it)."""
    with scratch_database(server_url, seeded_templates.name(seeding)) as url:
        yield url
