"""The migrations runner: idempotent, serialised by an advisory lock, strict about drift."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import procrastinate
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.support.databases import with_dbname
from ticketexport import db


def _recorded(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()
    return [(str(v), str(n), str(c)) for v, n, c in rows]


def _expected() -> list[tuple[str, str, str]]:
    return sorted((m.version, m.name, m.checksum) for m in db.available_migrations())


@pytest.fixture
def hold_migration_lock(
    empty_db_url: str,
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session in the test's database that can hold the migrators' advisory lock.

    Advisory locks are per database, so it must be the database being migrated.
    """
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        yield conn


def _wait_for_lock_waiters(url: str, count: int, timeout: float = 30.0) -> None:
    """Block until `count` sessions wait for the migration lock in that database."""
    dbname = conninfo_to_dict(url)["dbname"]
    key = db.MIGRATION_LOCK_KEY
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                """
                SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %s
                  AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
                """,
                (dbname, key),
            ).fetchone()
            assert row is not None
            if int(row[0]) >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"{count} migrators never queued on the advisory lock")


def test_first_run_applies_everything_in_order(empty_db_url: str) -> None:
    applied = db.migrate(empty_db_url)

    names = [m.name for m in db.available_migrations()]
    assert applied == names
    assert names[0] == "procrastinate_schema.sql"
    assert names[1:] == sorted(names[1:])
    assert _recorded(empty_db_url) == _expected()


def test_second_run_applies_nothing(empty_db_url: str) -> None:
    db.migrate(empty_db_url)
    before = _recorded(empty_db_url)

    assert db.migrate(empty_db_url) == []
    assert _recorded(empty_db_url) == before
    with psycopg.connect(empty_db_url) as conn:
        assert db.pending_migrations(conn) == []


def test_pending_lists_every_migration_on_an_empty_database(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        pending = db.pending_migrations(conn)
    assert [m.version for m in pending] == [m.version for m in db.available_migrations()]


def test_two_threads_migrating_at_once_apply_each_migration_once(
    empty_db_url: str, hold_migration_lock: psycopg.Connection[tuple[object, ...]]
) -> None:
    # Park both migrators on the lock, then let them race for it.
    hold_migration_lock.execute("SELECT pg_advisory_lock(%s)", (db.MIGRATION_LOCK_KEY,))
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(db.migrate(empty_db_url))
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        _wait_for_lock_waiters(empty_db_url, 2)
    finally:
        hold_migration_lock.execute("SELECT pg_advisory_unlock(%s)", (db.MIGRATION_LOCK_KEY,))
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(results) == 2
    names = [m.name for m in db.available_migrations()]
    assert sorted(results, key=len) == [[], names]
    assert _recorded(empty_db_url) == _expected()


def test_two_processes_migrating_at_once_both_succeed(
    empty_db_url: str,
    hold_migration_lock: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
) -> None:
    hold_migration_lock.execute("SELECT pg_advisory_lock(%s)", (db.MIGRATION_LOCK_KEY,))
    env = {**os.environ, "DATABASE_URL": empty_db_url, "TICKETEXPORT_HOME": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ticketexport", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        _wait_for_lock_waiters(empty_db_url, 2)
    finally:
        hold_migration_lock.execute("SELECT pg_advisory_unlock(%s)", (db.MIGRATION_LOCK_KEY,))
    outputs = [proc.communicate(timeout=120) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], outputs
    stdouts = sorted(out.strip() for out, _ in outputs)
    names = ", ".join(m.name for m in db.available_migrations())
    assert stdouts == [f"applied: {names}", "nothing to apply"]
    assert _recorded(empty_db_url) == _expected()


def test_an_edited_migration_is_detected(empty_db_url: str) -> None:
    db.migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = '0001'"
        )
        with pytest.raises(db.MigrationError, match=r"0001_domain\.sql changed after"):
            db.pending_migrations(conn)
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        db.migrate(empty_db_url)


def test_an_edited_procrastinate_schema_is_detected(empty_db_url: str) -> None:
    db.migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE schema_migrations SET checksum = md5(checksum) WHERE version = %s",
            (db.PROCRASTINATE_VERSION,),
        )
    with pytest.raises(db.MigrationError, match=r"procrastinate_schema\.sql"):
        db.migrate(empty_db_url)


def test_a_failing_migration_leaves_no_trace(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migrations)
    (migrations / "9998_half.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n", encoding="utf-8"
    )
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations)

    with pytest.raises(db.MigrationError, match=r"9998_half\.sql failed: division by zero") as info:
        db.migrate(empty_db_url)
    assert isinstance(info.value.__cause__, psycopg.errors.DivisionByZero)

    versions = [version for version, _, _ in _recorded(empty_db_url)]
    assert "9998" not in versions
    assert versions == sorted(m.version for m in db.available_migrations() if m.version != "9998")
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("SELECT to_regclass('half_done')").fetchone()
        assert row == (None,)
        # The lock went with the failed run; the next migrator is not blocked.
        locked = conn.execute(
            "SELECT pg_try_advisory_lock(%s)", (db.MIGRATION_LOCK_KEY,)
        ).fetchone()
        assert locked == (True,)


def test_a_badly_named_migration_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migrations)
    (migrations / "2_oops.sql").write_text("SELECT 1;\n", encoding="utf-8")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations)
    with pytest.raises(db.MigrationError, match=r"NNNN_name\.sql"):
        db.available_migrations()


def test_two_migrations_may_not_share_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migrations)
    (migrations / "0001_again.sql").write_text("SELECT 1;\n", encoding="utf-8")
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations)
    with pytest.raises(db.MigrationError, match="share the number 0001"):
        db.available_migrations()


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_migrates_whatever_the_database_locale(server_url: str, locale: str) -> None:
    name = f"te_locale_{re.sub(r'[^a-z0-9]', '_', locale.lower())}_{os.getpid()}"
    url = with_dbname(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                # The provider is named: on a server whose default is ICU the libc locale
                # alone would not decide the database's collation.
                "CREATE DATABASE {} ENCODING 'UTF8' LOCALE_PROVIDER libc LC_COLLATE {} "
                "LC_CTYPE {} TEMPLATE template0"
            ).format(sql.Identifier(name), sql.Literal(locale), sql.Literal(locale))
        )
    try:
        assert db.migrate(url) == [m.name for m in db.available_migrations()]
        with psycopg.connect(url) as conn:
            # The collation the domain relies on exists and behaves the same everywhere.
            row = conn.execute(
                "SELECT lower('ÄÖÜ' COLLATE ticketexport_text), "
                "'a' COLLATE ticketexport_text < 'B' COLLATE ticketexport_text"
            ).fetchone()
        assert row == ("äöü", False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_non_utf8_database_is_refused(server_url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        name = f"te_ascii_{os.getpid()}"
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL(
                # libc named: ICU, a server's default perhaps, refuses SQL_ASCII.
                "CREATE DATABASE {} ENCODING 'SQL_ASCII' LOCALE_PROVIDER libc LC_COLLATE 'C' "
                "LC_CTYPE 'C' TEMPLATE template0"
            ).format(sql.Identifier(name))
        )
    url = with_dbname(server_url, name)
    try:
        with pytest.raises(db.MigrationError, match="needs a UTF8 database, this one is SQL_ASCII"):
            db.migrate(url)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_procrastinate_schema_is_the_pinned_release_byte_for_byte() -> None:
    shipped = importlib.resources.files("procrastinate").joinpath("sql/schema.sql").read_bytes()
    assert db.PROCRASTINATE_SCHEMA.read_bytes() == shipped


def test_procrastinate_is_pinned_exactly_to_the_installed_version() -> None:
    pyproject = tomllib.loads((db.ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [
        dep for dep in pyproject["project"]["dependencies"] if re.match(r"^procrastinate\b", dep)
    ]
    assert len(pins) == 1
    match = re.fullmatch(r"procrastinate==([0-9][0-9A-Za-z.]*)", pins[0].replace(" ", ""))
    assert match, f"procrastinate must be pinned with ==, not {pins[0]!r}"
    installed = importlib.metadata.version("procrastinate")
    assert match.group(1) == installed
    assert procrastinate.__version__ == installed


def test_the_procrastinate_schema_is_what_procrastinate_expects(db_url: str) -> None:
    # procrastinate's own check compares the live database with its schema.
    with psycopg.connect(db_url) as conn:
        tables = {
            str(row[0])
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'procrastinate%%'"
            )
        }
        functions = {
            str(row[0])
            for row in conn.execute(
                "SELECT proname FROM pg_proc WHERE proname LIKE 'procrastinate_defer%%'"
            )
        }
    assert {"procrastinate_jobs", "procrastinate_events", "procrastinate_periodic_defers"} <= tables
    assert functions
