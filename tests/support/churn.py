"""Concurrent writers for the as-of tests: every kind of change an export's view can see."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


class Churn:
    """Random committed changes, one short transaction each, through its own connection.

    Covers what the brief names: tickets created, edited (in and out of views, up and down
    their sort orders) and deleted; a contact and an assignee renamed; a status relabelled;
    followers and team memberships of `user_id` added and removed; tasks closed and
    reopened. `counts` says what was done, so a test can check its writers really wrote.
    """

    def __init__(self, url: str, *, user_id: int, seed: int, pause: float = 0.005) -> None:
        self.url = url
        self.user_id = user_id
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.pause = pause
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- the changes ----------------------------------------------------------------------

    def _pick(self, conn: Conn, table: str) -> Any:
        # TABLESAMPLE keeps picking cheap on big tables; fall back to any row.
        row = (
            conn.execute(
                f"SELECT id FROM {table} TABLESAMPLE SYSTEM (5) ORDER BY random() LIMIT 1"
            ).fetchone()
            or conn.execute(f"SELECT id FROM {table} LIMIT 1").fetchone()
        )
        return None if row is None else row[0]

    def insert_ticket(self, conn: Conn) -> None:
        conn.execute(
            "INSERT INTO tickets (title, status_id, priority_id, assignee_id, contact_id, tags) "
            "SELECT %s, %s, %s, (SELECT id FROM users ORDER BY random() LIMIT 1), "
            "(SELECT id FROM contacts ORDER BY random() LIMIT 1), %s",
            (
                f"Churned {self.rng.randrange(10**6)} =new",
                self.rng.choice([1, 2, 3, 5, 6]),
                self.rng.randint(1, 4),
                ["churn"],
            ),
        )

    def edit_ticket(self, conn: Conn) -> None:
        ticket = self._pick(conn, "tickets")
        if ticket is None:
            return
        change = self.rng.choice(
            ["status", "priority", "title", "assignee", "created_at", "mine", "flags"]
        )
        if change == "mine":  # in or out of the acting user's own views
            column = self.rng.choice(["assignee_id", "created_by_id"])
            conn.execute(
                f"UPDATE tickets SET {column} = %s, team_id = NULL WHERE id = %s",
                (self.rng.choice([self.user_id, None]), ticket),
            )
        elif change == "flags":  # snoozed, overdue, recently closed
            conn.execute(
                "UPDATE tickets SET snoozed_until = CASE WHEN random() < 0.5 THEN NULL "
                "ELSE now() + interval '3 days' END, sla_breached = random() < 0.5, "
                "closed_at = CASE WHEN random() < 0.5 THEN NULL "
                "ELSE greatest(created_at, now() - interval '2 days') END, "
                "status_id = CASE WHEN random() < 0.5 THEN 6 ELSE 2 END WHERE id = %s",
                (ticket,),
            )
        elif change == "status":  # in or out of the open views
            conn.execute(
                "UPDATE tickets SET status_id = %s, updated_at = now() WHERE id = %s",
                (self.rng.choice([1, 2, 3, 4, 5, 6]), ticket),
            )
        elif change == "priority":  # up or down a priority sort
            conn.execute(
                "UPDATE tickets SET priority_id = %s WHERE id = %s",
                (self.rng.randint(1, 4), ticket),
            )
        elif change == "title":
            conn.execute(
                "UPDATE tickets SET title = %s WHERE id = %s",
                (f"Edited {self.rng.randrange(10**6)}", ticket),
            )
        elif change == "assignee":
            conn.execute(
                "UPDATE tickets SET assignee_id = (SELECT id FROM users ORDER BY random() "
                "LIMIT 1) WHERE id = %s",
                (ticket,),
            )
        else:  # newest-first order moves
            conn.execute(
                "UPDATE tickets SET created_at = created_at - make_interval(hours => %s), "
                "updated_at = greatest(updated_at, created_at) WHERE id = %s",
                (self.rng.randint(1, 500), ticket),
            )

    def delete_ticket(self, conn: Conn) -> None:
        ticket = self._pick(conn, "tickets")
        if ticket is not None:
            conn.execute("DELETE FROM tickets WHERE id = %s", (ticket,))

    def rename_contact(self, conn: Conn) -> None:
        contact = self._pick(conn, "contacts")
        if contact is not None:
            conn.execute(
                "UPDATE contacts SET first_name = %s WHERE id = %s",
                (f"Renamed{self.rng.randrange(1000)}", contact),
            )

    def rename_assignee(self, conn: Conn) -> None:
        conn.execute(
            "UPDATE users SET last_name = %s WHERE id = (SELECT assignee_id FROM tickets "
            "WHERE assignee_id IS NOT NULL ORDER BY random() LIMIT 1)",
            (f"Renamed{self.rng.randrange(1000)}",),
        )

    def relabel_status(self, conn: Conn) -> None:
        conn.execute(
            "UPDATE ticket_statuses SET label = %s WHERE id = %s",
            (f"Status {self.rng.randrange(1000)}", self.rng.randint(1, 6)),
        )

    def follow(self, conn: Conn) -> None:
        ticket = self._pick(conn, "tickets")
        if ticket is None:
            return
        if self.rng.random() < 0.7:
            conn.execute(
                "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (ticket, self.user_id),
            )
        else:
            conn.execute(
                "DELETE FROM ticket_followers WHERE user_id = %s AND ticket_id = "
                "(SELECT ticket_id FROM ticket_followers WHERE user_id = %s "
                "ORDER BY random() LIMIT 1)",
                (self.user_id, self.user_id),
            )

    def join_team(self, conn: Conn) -> None:
        team = self._pick(conn, "teams")
        if team is None:
            return
        if self.rng.random() < 0.6:
            conn.execute(
                "INSERT INTO team_memberships (team_id, user_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (team, self.user_id),
            )
        else:
            conn.execute(
                "DELETE FROM team_memberships WHERE user_id = %s AND team_id = %s",
                (self.user_id, team),
            )

    def toggle_task(self, conn: Conn) -> None:
        conn.execute(
            "UPDATE ticket_tasks SET is_closed = NOT is_closed WHERE id = "
            "(SELECT id FROM ticket_tasks ORDER BY random() LIMIT 1)"
        )

    def kinds(self) -> dict[str, Callable[[Conn], None]]:
        return {
            "insert_ticket": self.insert_ticket,
            "edit_ticket": self.edit_ticket,
            "delete_ticket": self.delete_ticket,
            "rename_contact": self.rename_contact,
            "rename_assignee": self.rename_assignee,
            "relabel_status": self.relabel_status,
            "follow": self.follow,
            "join_team": self.join_team,
            "toggle_task": self.toggle_task,
        }

    def round(self, conn: Conn, changes: int = 1) -> None:
        """`changes` random changes, each committed on its own."""
        kinds = self.kinds()
        names = list(kinds)
        weights = [6, 10, 3, 1, 1, 1, 2, 1, 2]
        for _ in range(changes):
            name = self.rng.choices(names, weights)[0]
            with conn.transaction():
                kinds[name](conn)
            self.counts[name] += 1

    # --- in the background ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._stop.is_set():
                    self.round(conn)
                    self._stop.wait(self.pause)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> Churn:
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> collections.Counter[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the concurrent writer failed: {self.error!r}") from self.error
        return self.counts
