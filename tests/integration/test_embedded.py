"""The embedded server used when DATABASE_URL is unset: pgserver, or initdb/pg_ctl."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.components import missing_component
from ticketexport import db
from ticketexport.embedded import _find_pg_bin, embedded_database


@pytest.fixture
def home() -> Iterator[Path]:
    # Not pytest's tmp_path: when the tests run as root the server runs as `postgres`, which
    # must be able to reach the directory (pytest keeps its own tree private to root).
    path = Path(tempfile.mkdtemp(prefix="te-embedded-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0])


def _migrated_and_queryable(url: str) -> None:
    db.migrate(url)
    with psycopg.connect(url) as conn:
        assert db.pending_migrations(conn) == []
        conn.execute(
            "INSERT INTO users (email, first_name, last_name, password_hash) "
            "VALUES ('e@example.com', 'E', '', 'x')"
        )
        row = conn.execute("SELECT lower(email COLLATE ticketexport_text) FROM users").fetchone()
        assert row == ("e@example.com",)
        conn.commit()


def _refuses_connections(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return False
    except psycopg.OperationalError:
        return True


def test_initdb_fallback_runs_migrates_and_keeps_its_data(home: Path) -> None:
    if _find_pg_bin() is None:
        missing_component("PostgreSQL's initdb is not installed (e.g. /usr/lib/postgresql/*/bin)")

    with embedded_database(home, prefer="initdb") as url:
        assert _version(url) >= 150000
        _migrated_and_queryable(url)
    assert (home / "pgdata-initdb" / "PG_VERSION").exists()
    assert _refuses_connections(url), "the server must stop when the block ends"

    # A second start joins the same data directory: nothing to migrate, the row is there.
    with embedded_database(home, prefer="initdb") as again:
        assert db.migrate(again) == []
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_pgserver_runs_migrates_and_keeps_its_data(home: Path) -> None:
    if importlib.util.find_spec("pgserver") is None:
        missing_component("the pgserver package is not installed")

    with embedded_database(home, prefer="pgserver") as url:
        assert _version(url) >= 160000
        _migrated_and_queryable(url)
    assert (home / "pgdata" / "PG_VERSION").exists()

    with embedded_database(home, prefer="pgserver") as again:
        assert db.migrate(again) == []
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_auto_prefers_pgserver_when_installed(home: Path) -> None:
    if importlib.util.find_spec("pgserver") is None:
        missing_component("the pgserver package is not installed")
    with embedded_database(home) as url:
        assert _version(url) >= 160000
    assert (home / "pgdata").is_dir()
    assert not (home / "pgdata-initdb").exists()


def test_database_url_wins_over_the_embedded_server(server_url: str, home: Path) -> None:
    from ticketexport.config import Settings

    settings = Settings.from_env({"DATABASE_URL": server_url, "TICKETEXPORT_HOME": str(home)})
    with db.database_url(settings) as url:
        assert url == server_url
    # Nothing was started or created under the home.
    assert list(home.iterdir()) == []
