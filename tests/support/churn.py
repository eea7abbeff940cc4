"""Concurrent writers for the as-of tests: every kind of change an export's view can see."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def involve(conn: Conn, user_id: int) -> None:
    """Make `user_id` the assignee, creator and a follower of some tickets and a member of
    two teams, so the views that read those (my-tickets, created-by-me, following,
    team-tickets) have rows for changes to move in and out."""
    conn.execute("UPDATE tickets SET assignee_id = %s WHERE id %% 5 = 0", (user_id,))
    conn.execute("UPDATE tickets SET created_by_id = %s WHERE id %% 6 = 1", (user_id,))
    conn.execute(
        "INSERT INTO ticket_followers (ticket_id, user_id) SELECT id, %s FROM tickets "
        "WHERE id %% 7 = 0 ON CONFLICT DO NOTHING",
        (user_id,),
    )
    conn.execute(
        "INSERT INTO team_memberships (team_id, user_id) SELECT id, %s FROM teams "
        "ORDER BY id LIMIT 2 ON CONFLICT DO NOTHING",
        (user_id,),
    )


class Churn:
    """Committed changes drawn from `seed`, one short transaction each, through its own
    connection.

    Covers what the brief names: tickets created, edited (in and out of views, up and down
    their sort orders) and deleted; contacts, assignees and teams renamed; statuses
    relabelled, reordered and moved between open and closed; priorities relabelled;
    followers and team memberships of `user_id` added and removed; tasks added, removed,
    closed and reopened. `counts` says what was done, so a test can check its writers
    really wrote.

    Every choice comes from the seeded generator and every row is picked from an ordered
    list, never with SQL's random(): the same seed on the same data makes the same changes,
    so a test that passes once passes every time. `focus` (ticket ids, say the rows of the
    view under test) receives half of the ticket edits and deletes, so a check that needs
    its view to change does not depend on where the draws happen to land.
    """

    def __init__(
        self,
        url: str,
        *,
        user_id: int,
        seed: int,
        pause: float = 0.005,
        focus: Sequence[int] = (),
    ) -> None:
        self.url = url
        self.user_id = user_id
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self.pause = pause
        self.focus = sorted(focus)
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- picking rows, reproducibly -------------------------------------------------------

    def _choose(self, conn: Conn, query: str, params: Sequence[Any] = ()) -> Any:
        """One of the values `query` returns (it must order them), or None if there are none."""
        values = [row[0] for row in conn.execute(query, params)]
        return self.rng.choice(values) if values else None

    def _pick(self, conn: Conn, table: str) -> Any:
        # Counting and skipping keeps picking cheap on big tables without fetching every id.
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        if row is None or row[0] == 0:
            return None
        skip = self.rng.randrange(row[0])
        found = conn.execute(f"SELECT id FROM {table} ORDER BY id OFFSET %s LIMIT 1", (skip,))
        picked = found.fetchone()
        return None if picked is None else picked[0]

    def _ticket(self, conn: Conn) -> Any:
        if self.focus and self.rng.random() < 0.5:
            kept = self._choose(
                conn, "SELECT id FROM tickets WHERE id = ANY(%s) ORDER BY id", (self.focus,)
            )
            if kept is not None:
                return kept
        return self._pick(conn, "tickets")

    def _flip(self) -> bool:
        return self.rng.random() < 0.5

    # --- the changes ----------------------------------------------------------------------

    def insert_ticket(self, conn: Conn) -> None:
        conn.execute(
            "INSERT INTO tickets (title, status_id, priority_id, assignee_id, contact_id, tags) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (
                f"Churned {self.rng.randrange(10**6)} =new",
                self.rng.choice([1, 2, 3, 5, 6]),
                self.rng.randint(1, 4),
                self._pick(conn, "users"),
                self._pick(conn, "contacts"),
                ["churn"],
            ),
        )

    def edit_ticket(self, conn: Conn) -> None:
        ticket = self._ticket(conn)
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
                "UPDATE tickets SET snoozed_until = CASE WHEN %s THEN NULL "
                "ELSE now() + interval '3 days' END, sla_breached = %s, "
                "closed_at = CASE WHEN %s THEN NULL "
                "ELSE greatest(created_at, now() - interval '2 days') END, "
                "status_id = %s WHERE id = %s",
                (self._flip(), self._flip(), self._flip(), self.rng.choice([6, 2]), ticket),
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
                "UPDATE tickets SET assignee_id = %s WHERE id = %s",
                (self._pick(conn, "users"), ticket),
            )
        else:  # newest-first order moves
            conn.execute(
                "UPDATE tickets SET created_at = created_at - make_interval(hours => %s), "
                "updated_at = greatest(updated_at, created_at) WHERE id = %s",
                (self.rng.randint(1, 500), ticket),
            )

    def delete_ticket(self, conn: Conn) -> None:
        ticket = self._ticket(conn)
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
        assignee = self._choose(
            conn,
            "SELECT DISTINCT assignee_id FROM tickets WHERE assignee_id IS NOT NULL "
            "ORDER BY assignee_id",
        )
        if assignee is not None:
            conn.execute(
                "UPDATE users SET last_name = %s WHERE id = %s",
                (f"Renamed{self.rng.randrange(1000)}", assignee),
            )

    def relabel_status(self, conn: Conn) -> None:
        conn.execute(
            "UPDATE ticket_statuses SET label = %s WHERE id = %s",
            (f"Status {self.rng.randrange(1000)}", self.rng.randint(1, 6)),
        )

    def reorder_status(self, conn: Conn) -> None:
        # Sort orders are not unique for statuses: any value moves one up or down the list.
        conn.execute(
            "UPDATE ticket_statuses SET sort_order = %s WHERE id = %s",
            (self.rng.randrange(5, 70, 5), self.rng.randint(1, 6)),
        )

    def retype_status(self, conn: Conn) -> None:
        # Pending and on hold move between open and closed: whole groups of tickets enter
        # and leave the open views at once.
        conn.execute(
            "UPDATE ticket_statuses SET status_type = %s WHERE id = %s",
            (self.rng.choice(["open", "closed"]), self.rng.choice([3, 4])),
        )

    def relabel_priority(self, conn: Conn) -> None:
        conn.execute(
            "UPDATE ticket_priorities SET label = %s WHERE id = %s",
            (f"Priority {self.rng.randrange(1000)}", self.rng.randint(1, 4)),
        )

    def rename_team(self, conn: Conn) -> None:
        team = self._pick(conn, "teams")
        if team is not None:  # names are unique: the id keeps them apart
            conn.execute(
                "UPDATE teams SET name = %s WHERE id = %s",
                (f"Team {self.rng.randrange(1000)}-{team}", team),
            )

    def add_task(self, conn: Conn) -> None:
        ticket = self._ticket(conn)
        if ticket is not None:
            conn.execute(
                "INSERT INTO ticket_tasks (ticket_id, title, is_closed) VALUES (%s, %s, %s)",
                (ticket, f"Task {self.rng.randrange(1000)}", self._flip()),
            )

    def remove_task(self, conn: Conn) -> None:
        task = self._pick(conn, "ticket_tasks")
        if task is not None:
            conn.execute("DELETE FROM ticket_tasks WHERE id = %s", (task,))

    def follow(self, conn: Conn) -> None:
        ticket = self._ticket(conn)
        if ticket is None:
            return
        if self.rng.random() < 0.7:
            conn.execute(
                "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (ticket, self.user_id),
            )
            return
        followed = self._choose(
            conn,
            "SELECT ticket_id FROM ticket_followers WHERE user_id = %s ORDER BY ticket_id",
            (self.user_id,),
        )
        if followed is not None:
            conn.execute(
                "DELETE FROM ticket_followers WHERE user_id = %s AND ticket_id = %s",
                (self.user_id, followed),
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
        task = self._pick(conn, "ticket_tasks")
        if task is not None:
            conn.execute("UPDATE ticket_tasks SET is_closed = NOT is_closed WHERE id = %s", (task,))

    def kinds(self) -> dict[str, Callable[[Conn], None]]:
        return {
            "insert_ticket": self.insert_ticket,
            "edit_ticket": self.edit_ticket,
            "delete_ticket": self.delete_ticket,
            "rename_contact": self.rename_contact,
            "rename_assignee": self.rename_assignee,
            "relabel_status": self.relabel_status,
            "reorder_status": self.reorder_status,
            "retype_status": self.retype_status,
            "relabel_priority": self.relabel_priority,
            "rename_team": self.rename_team,
            "follow": self.follow,
            "join_team": self.join_team,
            "toggle_task": self.toggle_task,
            "add_task": self.add_task,
            "remove_task": self.remove_task,
        }

    def round(self, conn: Conn, changes: int = 1) -> None:
        """`changes` random changes, each committed on its own."""
        kinds = self.kinds()
        names = list(kinds)
        # In the order of kinds(): ticket edits most often, lookups now and then.
        weights = [6, 10, 3, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 2, 1]
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
