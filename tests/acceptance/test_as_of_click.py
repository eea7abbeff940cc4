"""Exactly as of the click: real workers export while writers change everything the views
read, and every file equals what a REPEATABLE READ transaction opened at the click sees."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.churn import Churn, involve
from tests.support.exports import csv_in_transaction
from tests.support.services import actor_for, services_for
from tests.support.workers import (
    Workers,
    export_files,
    export_row,
    run_async,
    wait_rows,
    wait_status,
)
from ticketexport.exports import service
from ticketexport.views.model import ListRequest

pytestmark = pytest.mark.slow

# Slow enough that every export streams for a few seconds while the writers work.
THROTTLE = 4000


@contextlib.contextmanager
def click_instant(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A REPEATABLE READ transaction whose snapshot is taken now: the reference."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("SELECT 1")
        try:
            yield conn
        finally:
            conn.rollback()


def _click(url: str, requests: list[ListRequest]) -> list[str]:
    """The Export clicks of the seeded export admin, one after another, with no write
    between them and the reference snapshot."""

    async def go() -> list[str]:
        user = actor_for(url)
        # Several clicks of one user at one instant: no limit on queued exports.
        env = {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0"}
        async with services_for(url, env=env) as services:
            return [
                (await service.request_export(services, user, r, client_ip=None)).export_id
                for r in requests
            ]

    return list(run_async(go()))


def _stored(home: Path, row: dict[str, Any]) -> bytes:
    return (home / "exports" / row["object_key"]).read_bytes()


def _request(view: str, sort: str | None = None, q: str = "") -> ListRequest:
    return ListRequest(view=view, q=q, sort=sort, filters={}, page=None)


def _involve_admin(url: str) -> int:
    """The exporting admin is assigned, creator and follower of some tickets and belongs to
    two teams, so the views that read those have rows to lose and gain."""
    user_id = actor_for(url).id
    with psycopg.connect(url, autocommit=True) as conn:
        involve(conn, user_id)
    return user_id


def test_files_are_the_database_at_the_click_under_concurrent_writes(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    user_id = _involve_admin(seeded_url)
    requests = [
        _request("open", "priority"),
        _request("all", "assignee"),
        _request("following"),
        _request("team-tickets", "status"),
        _request("all", "oldest", q="a"),
    ]
    churn = Churn(seeded_url, user_id=user_id, seed=41, pause=0.002)
    with click_instant(seeded_url) as reference:
        export_ids = _click(seeded_url, requests)
        churn.start()
        try:
            # Writes land before any worker starts, and go on while each one streams.
            wait_for_changes(churn, 150)
            workers.start(seeded_url, max_rows_per_s=THROTTLE)
            for export_id in export_ids:
                wait_status(
                    seeded_url, export_id, {"completed", "failed"}, timeout=180, workers=workers
                )
        finally:
            counts = churn.stop()
        assert len(counts) == len(churn.kinds()), f"some kinds of change never ran: {counts}"
        changed_views = 0
        for export_id in export_ids:
            row = export_row(seeded_url, export_id)
            assert row["status"] == "completed", (row["error_code"], workers.outputs())
            expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
            stored = _stored(home, row)
            assert stored == expected, f"export {row['view_name']} differs from the click"
            assert row["rows_total"] == row["rows_done"] == total
            assert row["sha256"] == hashlib.sha256(stored).hexdigest()
            with psycopg.connect(seeded_url) as now:
                current, _ = csv_in_transaction(now, row["request"], row["as_of"])
            changed_views += current != expected
    # The writers really changed what these views show, so equality says something.
    assert changed_views >= 4, f"only {changed_views} views changed after the click"


def wait_for_changes(churn: Churn, count: int) -> None:
    done = threading.Event()

    def check() -> None:
        while sum(churn.counts.values()) < count and churn.error is None:
            done.wait(0.02)

    waiter = threading.Thread(target=check)
    waiter.start()
    waiter.join(timeout=60)
    assert sum(churn.counts.values()) >= count, churn.counts


# Every column a concurrent change can reach: the lookups, people, team, contact and tasks.
WIDE = ["id", "title", "status", "priority", "assignee", "team", "contact", "tasks", "created_by"]


def _wide_view(url: str, owner_id: int) -> str:
    """A saved view of every ticket with WIDE columns, by status order then priority."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO saved_views (name, owner_id, created_by_id, columns, sort) "
            "VALUES ('In flight', %s, %s, %s, %s) RETURNING id",
            (
                owner_id,
                owner_id,
                WIDE,
                json.dumps(
                    [
                        {"column": "status", "direction": "asc"},
                        {"column": "priority", "direction": "desc"},
                    ]
                ),
            ),
        ).fetchone()
    assert row is not None
    return str(row[0])


@contextlib.contextmanager
def _in_flight(url: str, user_id: int) -> Iterator[Callable[[], None]]:
    """Transactions that change tickets, contacts, memberships and tasks, still open when
    the block starts while a later one has committed; it gets the function that commits
    them."""
    with contextlib.ExitStack() as stack:
        open_ = [stack.enter_context(psycopg.connect(url)) for _ in range(4)]
        tickets, contacts, memberships, tasks = open_
        ids = [r[0] for r in tickets.execute("SELECT id FROM tickets ORDER BY id LIMIT 8")]
        tickets.execute(
            "UPDATE tickets SET title = 'changed in flight', priority_id = 1, status_id = 2, "
            "snoozed_until = NULL WHERE id = ANY(%s)",
            (ids[:3],),
        )
        tickets.execute("DELETE FROM tickets WHERE id = %s", (ids[3],))
        tickets.execute(
            "INSERT INTO tickets (title, status_id, priority_id, assignee_id) "
            "VALUES ('created in flight', 2, 1, %s)",
            (user_id,),
        )
        contacts.execute(
            "UPDATE contacts SET first_name = 'Renamed in flight' "
            "WHERE id IN (SELECT contact_id FROM tickets WHERE id = ANY(%s))",
            (ids,),
        )
        memberships.execute(
            "DELETE FROM team_memberships WHERE user_id = %s AND team_id = "
            "(SELECT min(team_id) FROM team_memberships WHERE user_id = %s)",
            (user_id, user_id),
        )
        memberships.execute(
            "INSERT INTO team_memberships (team_id, user_id) SELECT id, %s FROM teams "
            "WHERE id NOT IN (SELECT team_id FROM team_memberships WHERE user_id = %s) "
            "ORDER BY id LIMIT 1",
            (user_id, user_id),
        )
        tasks.execute(
            "INSERT INTO ticket_tasks (ticket_id, title, is_closed) "
            "SELECT id, 'added in flight', id %% 2 = 0 FROM unnest(%s::bigint[]) AS id",
            (ids[4:],),
        )
        tasks.execute("DELETE FROM ticket_tasks WHERE id = (SELECT min(id) FROM ticket_tasks)")
        tasks.execute(
            "UPDATE ticket_tasks SET is_closed = NOT is_closed WHERE id = "
            "(SELECT max(id) FROM ticket_tasks WHERE title <> 'added in flight')"
        )

        # A transaction that began after them commits before the click, so their ids fall
        # below the click snapshot's xmax (an id above it would be invisible anyway).
        with psycopg.connect(url, autocommit=True) as committed:
            committed.execute(
                "UPDATE tickets SET title = 'committed before the click' WHERE id = %s",
                (ids[7],),
            )

        def commit() -> None:
            for conn in open_:
                conn.commit()

        yield commit


def _ids(data: bytes) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    return [row["Ticket ID"] for row in rows]


def test_open_transactions_at_the_click_are_not_seen(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    """Writers in flight at the click (tickets, contacts, memberships, tasks) commit just
    after it, and the churn goes on while the workers stream: every file equals what a
    REPEATABLE READ transaction opened at the click sees, whole, with unique ids and a
    count that agrees."""
    user_id = _involve_admin(seeded_url)
    wide = _wide_view(seeded_url, user_id)
    requests = [
        _request(wide, "view"),
        _request("team-tickets", "status"),
        _request("my-tickets", "priority"),
        _request("open", "assignee"),
    ]
    churn = Churn(seeded_url, user_id=user_id, seed=47, pause=0.002)
    with _in_flight(seeded_url, user_id) as commit, click_instant(seeded_url) as reference:
        export_ids = _click(seeded_url, requests)
        commit()
        churn.start()
        try:
            wait_for_changes(churn, 150)
            workers.start(seeded_url, max_rows_per_s=THROTTLE)
            rows = [
                wait_status(seeded_url, i, {"completed", "failed"}, timeout=180, workers=workers)
                for i in export_ids
            ]
        finally:
            counts = churn.stop()
        assert len(counts) == len(churn.kinds()), f"some kinds of change never ran: {counts}"
        for row in rows:
            assert row["status"] == "completed", (row["error_code"], workers.outputs())
            expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
            stored = _stored(home, row)
            ids = _ids(stored)
            assert len(ids) == len(set(ids)), f"{row['view_name']}: a ticket appears twice"
            assert row["rows_total"] == row["rows_done"] == total == len(ids)
            assert stored == expected, f"export {row['view_name']} differs from the click"
            with psycopg.connect(seeded_url) as now:
                current, _ = csv_in_transaction(now, row["request"], row["as_of"])
            # What committed after the click changed every one of these views.
            assert current != expected, f"{row['view_name']} did not change after the click"


def test_constant_inserts_and_deletes_never_fail_an_export(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    """A ticket created or deleted every few milliseconds, from the count to the last row:
    the count and the rows still agree and the export completes."""
    stop = threading.Event()
    done = [0]

    def churn() -> None:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "INSERT INTO tickets (title, status_id, priority_id) VALUES ('churn', 1, 1)"
                )
                conn.execute(
                    "DELETE FROM tickets WHERE id = (SELECT min(id) FROM tickets "
                    "WHERE status_id = 1)"
                )
                done[0] += 2
                stop.wait(0.003)

    thread = threading.Thread(target=churn, daemon=True)
    with click_instant(seeded_url) as reference:
        (export_id,) = _click(seeded_url, [_request("open")])
        thread.start()
        try:
            workers.start(seeded_url, max_rows_per_s=THROTTLE)
            row = wait_status(
                seeded_url, export_id, {"completed", "failed"}, timeout=120, workers=workers
            )
        finally:
            stop.set()
            thread.join(timeout=10)
        assert done[0] > 100, "the writer barely ran"
        assert row["status"] == "completed", (row["error_code"], workers.outputs())
        expected, total = csv_in_transaction(reference, row["request"], row["as_of"])
    assert _stored(home, row) == expected
    assert row["rows_done"] == row["rows_total"] == total


def test_a_killed_attempt_is_retried_as_of_the_same_click(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    user_id = _involve_admin(seeded_url)
    churn = Churn(seeded_url, user_id=user_id, seed=43, pause=0.002)
    with click_instant(seeded_url) as reference:
        (export_id,) = _click(seeded_url, [_request("all", "priority")])
        churn.start()
        try:
            first = workers.start(seeded_url, max_rows_per_s=THROTTLE)
            before = wait_rows(seeded_url, export_id, 0.4, timeout=120, workers=workers)
            first.kill()
            # The data moves on between the two attempts.
            wait_for_changes(churn, sum(churn.counts.values()) + 100)
            workers.start(seeded_url)
            row = wait_status(
                seeded_url, export_id, {"completed", "failed"}, timeout=180, workers=workers
            )
        finally:
            churn.stop()
        assert row["status"] == "completed", (row["error_code"], workers.outputs())
        assert row["attempt"] == before["attempt"] + 1
        assert row["as_of"] == before["as_of"]
        assert row["as_of_snapshot"] == before["as_of_snapshot"]
        expected, _ = csv_in_transaction(reference, row["request"], row["as_of"])
    stored = _stored(home, row)
    assert stored == expected
    assert row["sha256"] == hashlib.sha256(expected).hexdigest()
    assert export_files(home, export_id) == [row["object_key"]]
