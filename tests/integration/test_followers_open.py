"""ticket_followers.ticket_open is its ticket's status type, whatever writes the rows."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.databases import scratch_database
from ticketexport import seed

Conn = psycopg.Connection[tuple[Any, ...]]

# Rows whose flag differs from their ticket's status type as it is now.
WRONG_FLAGS = (
    "SELECT count(*) FROM ticket_followers f JOIN tickets t ON t.id = f.ticket_id "
    "JOIN ticket_statuses s ON s.id = t.status_id "
    "WHERE f.ticket_open IS DISTINCT FROM (s.status_type = 'open')"
)
OPEN_FLAGS = "SELECT count(*) FROM ticket_followers WHERE ticket_open"


@pytest.fixture(scope="module")
def module_db_url(server_url: str, template_db: str) -> Iterator[str]:
    with scratch_database(server_url, template_db) as url:
        yield url


@pytest.fixture
def conn(module_db_url: str) -> Iterator[Conn]:
    """A transaction rolled back after the test."""
    with (
        psycopg.connect(module_db_url) as connection,
        connection.transaction(force_rollback=True),
    ):
        yield connection


def _one(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _user(conn: Conn, email: str) -> int:
    return int(
        _one(
            conn,
            "INSERT INTO users (email, first_name, last_name, password_hash) "
            "VALUES (%s, 'F', 'L', 'x') RETURNING id",
            (email,),
        )
    )


def _ticket(conn: Conn, status: int) -> int:
    return int(
        _one(
            conn,
            "INSERT INTO tickets (title, status_id, priority_id) VALUES ('t', %s, 1) RETURNING id",
            (status,),
        )
    )


def _flag(conn: Conn, ticket: int, user: int) -> bool:
    return bool(
        _one(
            conn,
            "SELECT ticket_open FROM ticket_followers WHERE ticket_id = %s AND user_id = %s",
            (ticket, user),
        )
    )


def test_the_flag_follows_inserts_status_changes_and_status_types(conn: Conn) -> None:
    # Statuses of the test's own (shipped ids 1-4 are open, 5-6 closed).
    conn.execute(
        "INSERT INTO ticket_statuses (id, developer_name, label, sort_order, status_type) "
        "VALUES (911, 'te_wait', 'Waiting', 9011, 'open'), (912, 'te_gone', 'Gone', 9012, 'closed')"
    )
    ann, bob = _user(conn, "ann@example.com"), _user(conn, "bob@example.com")
    opened, closed, waiting = _ticket(conn, 2), _ticket(conn, 6), _ticket(conn, 911)
    for ticket in (opened, closed, waiting):
        conn.execute(
            "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", (ticket, ann)
        )
    conn.execute("INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", (opened, bob))
    assert (_flag(conn, opened, ann), _flag(conn, closed, ann), _flag(conn, waiting, ann)) == (
        True,
        False,
        True,
    )
    assert _one(conn, OPEN_FLAGS) == 3

    # Open → closed, closed → open, and open → another open status.
    conn.execute("UPDATE tickets SET status_id = 5 WHERE id = %s", (opened,))
    conn.execute("UPDATE tickets SET status_id = 1 WHERE id = %s", (closed,))
    conn.execute("UPDATE tickets SET status_id = 3 WHERE id = %s", (waiting,))
    assert (_flag(conn, opened, ann), _flag(conn, opened, bob), _flag(conn, closed, ann)) == (
        False,
        False,
        True,
    )
    assert _one(conn, WRONG_FLAGS) == 0

    # One statement moving several tickets at once.
    conn.execute(
        "UPDATE tickets SET status_id = CASE WHEN status_id = 5 THEN 2 ELSE 912 END "
        "WHERE id = ANY (%s)",
        ([opened, closed, waiting],),
    )
    assert _one(conn, OPEN_FLAGS) == 2  # `opened` for both users
    assert _one(conn, WRONG_FLAGS) == 0

    # A status whose type changes takes its tickets' followers along.
    conn.execute("UPDATE tickets SET status_id = 911 WHERE id = %s", (closed,))
    assert _flag(conn, closed, ann) is True
    conn.execute("UPDATE ticket_statuses SET status_type = 'closed' WHERE id = 911")
    assert _flag(conn, closed, ann) is False
    conn.execute("UPDATE ticket_statuses SET status_type = 'open' WHERE id = 912")
    assert _flag(conn, waiting, ann) is True
    assert _one(conn, WRONG_FLAGS) == 0

    # A value written by hand gives way to the ticket's own.
    conn.execute("UPDATE ticket_followers SET ticket_open = NOT ticket_open")
    conn.execute(
        "INSERT INTO ticket_followers (ticket_id, user_id, ticket_open) VALUES (%s, %s, false)",
        (waiting, bob),
    )
    assert _flag(conn, waiting, bob) is True
    assert _one(conn, WRONG_FLAGS) == 0


def test_the_flag_keeps_no_versions(conn: Conn) -> None:
    """Rewriting the flag is no new version of the follower row: as of a snapshot the
    followers are the same, and no history is written."""
    ann = _user(conn, "ann@example.com")
    ticket = _ticket(conn, 2)
    conn.execute(
        "INSERT INTO ticket_followers (ticket_id, user_id, row_version) VALUES (%s, %s, '1')",
        (ticket, ann),
    )
    conn.execute("UPDATE tickets SET status_id = 6 WHERE id = %s", (ticket,))
    assert _flag(conn, ticket, ann) is False
    assert (
        _one(conn, "SELECT row_version::text FROM ticket_followers WHERE ticket_id = %s", (ticket,))
        == "1"
    )
    assert _one(conn, "SELECT count(*) FROM ticket_followers_history") == 0


def test_a_follow_racing_a_status_change_takes_the_committed_status(module_db_url: str) -> None:
    """A follower row inserted while another transaction closes its ticket waits for that
    transaction and takes the status it commits (that transaction's own trigger cannot see
    the row yet)."""
    with psycopg.connect(module_db_url, autocommit=True) as setup:
        ann = _user(setup, f"race-{time.time_ns()}@example.com")
        ticket = _ticket(setup, 2)
    try:
        with psycopg.connect(module_db_url) as closer:
            closer.execute("UPDATE tickets SET status_id = 6 WHERE id = %s", (ticket,))
            follower = psycopg.connect(module_db_url, autocommit=True)
            pid = follower.info.backend_pid
            failures: list[BaseException] = []

            def follow() -> None:
                try:
                    follower.execute(
                        "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)",
                        (ticket, ann),
                    )
                except BaseException as exc:  # reported by the main thread
                    failures.append(exc)

            thread = threading.Thread(target=follow)
            thread.start()
            # The insert must be waiting on the closer's row lock before the closer commits.
            deadline = time.monotonic() + 30
            with psycopg.connect(module_db_url, autocommit=True) as watcher:
                while not _one(
                    watcher,
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s "
                    "AND wait_event_type = 'Lock'",
                    (pid,),
                ):
                    assert thread.is_alive(), "the follow did not wait for the status change"
                    assert time.monotonic() < deadline, "the follow never waited on a lock"
                    time.sleep(0.01)
            closer.commit()
            thread.join(30)
            follower.close()
            assert not failures, failures
        with psycopg.connect(module_db_url, autocommit=True) as check:
            assert _flag(check, ticket, ann) is False
    finally:
        with psycopg.connect(module_db_url, autocommit=True) as cleanup:
            cleanup.execute("DELETE FROM tickets WHERE id = %s", (ticket,))
            cleanup.execute("DELETE FROM users WHERE id = %s", (ann,))


def test_the_seed_writes_the_flags(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        seed.seed(conn, tickets=400, seed=3, anchor=dt.date(2026, 11, 1))
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _one(conn, WRONG_FLAGS) == 0
        assert _one(conn, OPEN_FLAGS) > 0
        assert _one(conn, "SELECT count(*) FROM ticket_followers WHERE NOT ticket_open") > 0
        # The trigger is back on after the load.
        state = _one(
            conn,
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'ticket_followers_set_open'",
        )
        assert state == "A"
