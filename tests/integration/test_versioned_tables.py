"""Versioned tables come from one declaration: versioned_tables and the history tables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.databases import scratch_database
from ticketexport.db import VERSIONED_TABLES

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def module_db_url(server_url: str, template_db: str) -> Iterator[str]:
    with scratch_database(server_url, template_db) as url:
        yield url


@pytest.fixture
def conn(module_db_url: str) -> Iterator[Conn]:
    """A transaction rolled back after the test: the tests change the schema."""
    with (
        psycopg.connect(module_db_url) as connection,
        connection.transaction(force_rollback=True),
    ):
        yield connection


def _columns(conn: Conn, relation: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (relation,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _definition(conn: Conn, function: str) -> str:
    row = conn.execute("SELECT pg_get_functiondef(%s::regproc)", (function,)).fetchone()
    assert row is not None
    return str(row[0])


def test_the_declaration_names_the_tables_the_compiler_reads_as_of(conn: Conn) -> None:
    declared = {str(r[0]) for r in conn.execute("SELECT name FROM versioned_tables")}
    assert declared == set(VERSIONED_TABLES)


@pytest.mark.parametrize("table", VERSIONED_TABLES)
def test_each_tables_functions_are_what_the_declaration_builds(conn: Conn, table: str) -> None:
    """Rebuilding changes nothing: the functions in place are the generated ones."""
    before = [_definition(conn, f"{table}_keep_version"), _definition(conn, f"{table}_as_of")]
    conn.execute("CALL versioning_build(%s)", (table,))
    after = [_definition(conn, f"{table}_keep_version"), _definition(conn, f"{table}_as_of")]
    assert after == before


# What history leaves out: columns no view reads (0007_versions.sql). Everything else a view
# reads is checked as of a snapshot in test_versions.py.
UNVERSIONED = {
    "contacts": {"created_at"},
    "users": {"email", "password_hash", "is_admin", "is_active", "created_at", "updated_at"},
    "ticket_tasks": {"title", "position", "created_at"},
}


@pytest.mark.parametrize("table", VERSIONED_TABLES)
def test_as_of_returns_every_kept_column(conn: Conn, table: str) -> None:
    history = _columns(conn, f"{table}_history")
    cur = conn.execute(
        sql.SQL("SELECT * FROM {}(pg_current_snapshot()) LIMIT 0").format(
            sql.Identifier(f"{table}_as_of")
        )
    )
    assert cur.description is not None
    assert [c.name for c in cur.description] == history
    unversioned = set(_columns(conn, table)) - set(history)
    assert unversioned == UNVERSIONED.get(table, set())


def test_a_column_added_by_one_call_is_versioned(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ticket_priorities ADD COLUMN trial_note text")
        conn.execute("CALL versioning_add_column('ticket_priorities', 'trial_note')")
        assert _columns(conn, "ticket_priorities_history")[-1] == "trial_note"
        row = conn.execute("SELECT min(id) FROM ticket_priorities").fetchone()
        assert row is not None
        priority = row[0]
        update = "UPDATE ticket_priorities SET trial_note = %s WHERE id = %s"
        conn.execute(update, ("before", priority))
        snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snapshot is not None
        conn.execute(update, ("after", priority))
        as_of = "SELECT trial_note FROM ticket_priorities_as_of(%s::pg_snapshot) WHERE id = %s"
        assert conn.execute(as_of, (snapshot[0], priority)).fetchall() == [("before",)]
        now = "SELECT trial_note FROM ticket_priorities_as_of(pg_current_snapshot()) WHERE id = %s"
        assert conn.execute(now, (priority,)).fetchall() == [("after",)]


def test_an_update_of_a_column_no_view_reads_keeps_no_history(conn: Conn) -> None:
    # Written before this transaction, as a version other snapshots saw ('1').
    user = conn.execute(
        "INSERT INTO users (email, first_name, last_name, password_hash, row_version) "
        "VALUES ('kept@example.com', 'Kept', '', 'x', '1') RETURNING id"
    ).fetchone()
    assert user is not None
    conn.execute(
        "UPDATE users SET is_active = false, email = 'moved@example.com' WHERE id = %s", user
    )
    assert conn.execute("SELECT count(*) FROM users_history").fetchone() == (0,)
    conn.execute("UPDATE users SET first_name = 'Renamed' WHERE id = %s", user)
    assert conn.execute("SELECT first_name FROM users_history").fetchall() == [("Kept",)]


def test_an_undeclared_table_is_refused(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="not declared"):
        conn.execute("CALL versioning_build('audit_log')")


def test_a_table_added_by_one_call_is_versioned(db_url: str) -> None:
    """versioning_add_table gives a new table everything 0007 wrote by hand per table."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE trial_labels (id bigint PRIMARY KEY, name text NOT NULL, "
            "colour text, secret text NOT NULL DEFAULT '')"
        )
        conn.execute("INSERT INTO trial_labels (id, name, colour) VALUES (1, 'urgent', 'red')")
        conn.execute(
            "CALL versioning_add_table('trial_labels', ARRAY['id', 'name', 'colour'], "
            "one_version_per_id => true)"
        )
        assert _columns(conn, "trial_labels_history") == [
            "id",
            "name",
            "colour",
            "row_version",
            "superseded_by",
        ]
        declared = conn.execute(
            "SELECT one_version_per_id FROM versioned_tables WHERE name = 'trial_labels'"
        ).fetchall()
        assert declared == [(True,)]
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'trial_labels_history' "
            "ORDER BY indexname"
        ).fetchall()
        assert indexes == [
            ("trial_labels_history_key_idx",),
            ("trial_labels_history_superseded_idx",),
        ]
        # A row from before the call is a version every snapshot sees.
        snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snapshot is not None
        conn.execute("UPDATE trial_labels SET name = 'later' WHERE id = 1")
        conn.execute("UPDATE trial_labels SET secret = 'no view reads this' WHERE id = 1")
        assert conn.execute("SELECT name FROM trial_labels_history").fetchall() == [("urgent",)]
        as_of = "SELECT id, name, colour FROM trial_labels_as_of(%s::pg_snapshot)"
        assert conn.execute(as_of, (snapshot[0],)).fetchall() == [(1, "urgent", "red")]
        now = "SELECT name FROM trial_labels_as_of(pg_current_snapshot())"
        assert conn.execute(now).fetchall() == [("later",)]
        conn.execute("DELETE FROM trial_labels WHERE id = 1")
        assert conn.execute(as_of, (snapshot[0],)).fetchall() == [(1, "urgent", "red")]
        assert conn.execute(now).fetchall() == []
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("TRUNCATE trial_labels")
        enabled = conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'trial_labels'::regclass ORDER BY tgname"
        ).fetchall()
        assert enabled == [
            ("trial_labels_keep_version", "A"),
            ("trial_labels_refuse_truncate", "A"),
        ]
        # What the call built is what the declaration builds.
        before = _definition(conn, "trial_labels_as_of")
        conn.execute("CALL versioning_build('trial_labels')")
        assert _definition(conn, "trial_labels_as_of") == before


def test_a_table_is_added_only_with_the_columns_it_has(conn: Conn) -> None:
    conn.execute("CREATE TABLE trial_marks (id bigint PRIMARY KEY, name text)")
    with pytest.raises(psycopg.errors.RaiseException, match="has no column colour"):
        conn.execute("CALL versioning_add_table('trial_marks', ARRAY['id', 'colour'])")
