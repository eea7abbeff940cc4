"""The schema refuses bad rows on its own, whatever code path writes them."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from tests.support.databases import scratch_database
from ticketexport.domain.permissions import ALL_PERMISSIONS

Conn = psycopg.Connection[tuple[Any, ...]]

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


# Fixtures: the smallest valid world ---------------------------------------------------


@pytest.fixture(scope="module")
def module_db_url(server_url: str, template_db: str) -> Iterator[str]:
    """One migrated database for the module; every test runs in a transaction on it."""
    with scratch_database(server_url, template_db) as url:
        yield url


@pytest.fixture
def conn(module_db_url: str) -> Iterator[Conn]:
    """A connection inside a transaction that is rolled back after the test.

    Cloning a database per test would dominate this module's run time; a rolled-back
    transaction leaves the same clean slate for the next test.
    """
    with (
        psycopg.connect(module_db_url) as connection,
        connection.transaction(force_rollback=True),
    ):
        yield connection


@contextlib.contextmanager
def refused(conn: Conn, error: type[Exception], match: str | None = None) -> Iterator[None]:
    """Expect the block's statement to fail, inside a savepoint so the test can go on."""
    with pytest.raises(error, match=match), conn.transaction():
        yield


@pytest.fixture
def world(conn: Conn) -> dict[str, int]:
    # Lookups of the test's own, so it does not depend on the shipped reference data.
    conn.execute(
        "INSERT INTO ticket_statuses (id, developer_name, label, sort_order, status_type) "
        "VALUES (901, 'te_open', 'Open', 9001, 'open'), "
        "(902, 'te_closed', 'Closed', 9002, 'closed')"
    )
    conn.execute(
        "INSERT INTO ticket_priorities (id, developer_name, label, sort_order) "
        "VALUES (901, 'te_high', 'High', 9001), (902, 'te_low', 'Low', 9002)"
    )
    user = _one(
        conn,
        "INSERT INTO users (email, first_name, last_name, password_hash) "
        "VALUES ('agent@example.com', 'Ada', 'Agent', 'x') RETURNING id",
    )
    team = _one(conn, "INSERT INTO teams (name) VALUES ('Support') RETURNING id")
    contact = _one(
        conn, "INSERT INTO contacts (first_name, last_name) VALUES ('Cy', 'Contact') RETURNING id"
    )
    ticket = _one(
        conn,
        "INSERT INTO tickets (title, status_id, priority_id, team_id, assignee_id, "
        "created_by_id, contact_id) VALUES ('Printer', 901, 901, %s, %s, %s, %s) RETURNING id",
        (team, user, user, contact),
    )
    return {"user": user, "team": team, "contact": contact, "ticket": ticket}


def _one(conn: Conn, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _insert_ticket(conn: Conn, **values: Any) -> None:
    row = {"title": "A ticket", "status_id": 901, "priority_id": 901, **values}
    columns = list(row)
    query = sql.SQL("INSERT INTO tickets ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    conn.execute(query, list(row.values()))


# Tickets ------------------------------------------------------------------------------


def test_a_minimal_ticket_is_accepted(conn: Conn, world: dict[str, int]) -> None:
    _insert_ticket(conn, id=424242, tags=["vip", "billing"])
    assert _one(conn, "SELECT tags FROM tickets WHERE id = 424242") == ["vip", "billing"]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"title": None}, errors.NotNullViolation),
        ({"status_id": None}, errors.NotNullViolation),
        ({"priority_id": None}, errors.NotNullViolation),
        ({"tags": None}, errors.NotNullViolation),
        ({"description": None}, errors.NotNullViolation),
        ({"status_id": 32000}, errors.ForeignKeyViolation),
        ({"priority_id": 32000}, errors.ForeignKeyViolation),
        ({"assignee_id": 999_999}, errors.ForeignKeyViolation),
        ({"team_id": 999_999}, errors.ForeignKeyViolation),
        ({"contact_id": 999_999}, errors.ForeignKeyViolation),
        ({"created_by_id": 999_999}, errors.ForeignKeyViolation),
        ({"title": ""}, errors.CheckViolation),
        ({"title": "x" * 501}, errors.CheckViolation),
        ({"id": 0}, errors.CheckViolation),
        ({"id": -5}, errors.CheckViolation),
        ({"tags": ["ok", None]}, errors.CheckViolation),
        ({"language": "English"}, errors.CheckViolation),
        ({"category": ""}, errors.CheckViolation),
        ({"sla_status": ""}, errors.CheckViolation),
        ({"created_at": T0, "updated_at": T0 - dt.timedelta(seconds=1)}, errors.CheckViolation),
        ({"created_at": T0, "closed_at": T0 - dt.timedelta(days=1)}, errors.CheckViolation),
        ({"created_at": T0, "resolved_at": T0 - dt.timedelta(days=1)}, errors.CheckViolation),
    ],
)
def test_bad_tickets_are_refused(
    conn: Conn, world: dict[str, int], values: dict[str, Any], error: type[Exception]
) -> None:
    with refused(conn, error):
        _insert_ticket(conn, **values)


def test_ticket_ids_are_unique(conn: Conn, world: dict[str, int]) -> None:
    with refused(conn, errors.UniqueViolation):
        _insert_ticket(conn, id=world["ticket"])


def test_deleting_a_ticket_deletes_its_tasks_and_followers(
    conn: Conn, world: dict[str, int]
) -> None:
    ticket, user = world["ticket"], world["user"]
    conn.execute("INSERT INTO ticket_tasks (ticket_id, title) VALUES (%s, 'Call back')", (ticket,))
    conn.execute(
        "INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", (ticket, user)
    )
    conn.execute("DELETE FROM tickets WHERE id = %s", (ticket,))
    assert _one(conn, "SELECT count(*) FROM ticket_tasks") == 0
    assert _one(conn, "SELECT count(*) FROM ticket_followers") == 0


def test_deleting_people_and_teams_keeps_the_ticket(conn: Conn, world: dict[str, int]) -> None:
    conn.execute("DELETE FROM users WHERE id = %s", (world["user"],))
    conn.execute("DELETE FROM teams WHERE id = %s", (world["team"],))
    conn.execute("DELETE FROM contacts WHERE id = %s", (world["contact"],))
    row = conn.execute(
        "SELECT assignee_id, created_by_id, team_id, contact_id FROM tickets WHERE id = %s",
        (world["ticket"],),
    ).fetchone()
    assert row == (None, None, None, None)


def test_a_status_in_use_cannot_be_deleted(conn: Conn, world: dict[str, int]) -> None:
    with refused(conn, errors.ForeignKeyViolation):
        conn.execute("DELETE FROM ticket_statuses WHERE id = 901")


def test_a_task_needs_an_existing_ticket(conn: Conn, world: dict[str, int]) -> None:
    with refused(conn, errors.ForeignKeyViolation):
        conn.execute("INSERT INTO ticket_tasks (ticket_id, title) VALUES (987654, 'x')")


def test_a_follower_follows_once(conn: Conn, world: dict[str, int]) -> None:
    pair = (world["ticket"], world["user"])
    conn.execute("INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", pair)
    with refused(conn, errors.UniqueViolation):
        conn.execute("INSERT INTO ticket_followers (ticket_id, user_id) VALUES (%s, %s)", pair)


# Lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (
            "INSERT INTO ticket_statuses VALUES (903, 'te_wait', 'Waiting', 9003, 'waiting')",
            errors.CheckViolation,
        ),
        (
            "INSERT INTO ticket_statuses VALUES (903, 'Bad Name', 'Waiting', 9003, 'open')",
            errors.CheckViolation,
        ),
        (
            "INSERT INTO ticket_statuses VALUES (903, 'te_open', 'Again', 9003, 'open')",
            errors.UniqueViolation,
        ),
        (
            "INSERT INTO ticket_statuses VALUES (903, 'te_x', '', 9003, 'open')",
            errors.CheckViolation,
        ),
        (
            "INSERT INTO ticket_priorities VALUES (903, 'te_urgent', 'Urgent', 9001)",
            errors.UniqueViolation,
        ),
        (
            "INSERT INTO ticket_priorities VALUES (903, 'te_urgent', 'Urgent', NULL)",
            errors.NotNullViolation,
        ),
    ],
)
def test_bad_lookups_are_refused(
    conn: Conn, world: dict[str, int], query: Any, error: type[Exception]
) -> None:
    with refused(conn, error):
        conn.execute(query)


# People and roles ---------------------------------------------------------------------


def _add_user(conn: Conn, email: Any, password_hash: Any = "x", first: Any = "Bo") -> None:  # noqa: S107
    conn.execute(
        "INSERT INTO users (email, first_name, last_name, password_hash) VALUES (%s, %s, '', %s)",
        (email, first, password_hash),
    )


def test_emails_are_unique(conn: Conn) -> None:
    _add_user(conn, "same@example.com")
    with refused(conn, errors.UniqueViolation):
        _add_user(conn, "same@example.com")


@pytest.mark.parametrize(
    ("email", "password_hash", "first", "error"),
    [
        (None, "x", "Bo", errors.NotNullViolation),
        ("no-at-sign", "x", "Bo", errors.CheckViolation),
        ("two@@example.com", "x", "Bo", errors.CheckViolation),
        ("spa ce@example.com", "x", "Bo", errors.CheckViolation),
        ("a@" + "b" * 260, "x", "Bo", errors.CheckViolation),
        ("ok@example.com", "", "Bo", errors.CheckViolation),
        ("ok@example.com", None, "Bo", errors.NotNullViolation),
        ("ok@example.com", "x", "", errors.CheckViolation),
    ],
)
def test_bad_users_are_refused(
    conn: Conn, email: Any, password_hash: Any, first: Any, error: type[Exception]
) -> None:
    with refused(conn, error):
        _add_user(conn, email, password_hash, first)


@pytest.mark.parametrize("bits", [0, 512, int(ALL_PERMISSIONS)])
def test_role_permissions_within_the_known_flags_are_accepted(conn: Conn, bits: int) -> None:
    conn.execute(
        "INSERT INTO roles (developer_name, label, permissions) VALUES ('r', 'R', %s)", (bits,)
    )
    assert _one(conn, "SELECT permissions FROM roles") == bits


@pytest.mark.parametrize("bits", [-1, int(ALL_PERMISSIONS) + 1, 4096])
def test_role_permissions_outside_the_known_flags_are_refused(conn: Conn, bits: int) -> None:
    with refused(conn, errors.CheckViolation):
        conn.execute(
            "INSERT INTO roles (developer_name, label, permissions) VALUES ('r', 'R', %s)",
            (bits,),
        )


def test_role_names_are_unique_and_well_formed(conn: Conn) -> None:
    conn.execute("INSERT INTO roles (developer_name, label) VALUES ('agents', 'Agents')")
    with refused(conn, errors.UniqueViolation):
        conn.execute("INSERT INTO roles (developer_name, label) VALUES ('agents', 'Again')")
    with refused(conn, errors.CheckViolation):
        conn.execute("INSERT INTO roles (developer_name, label) VALUES ('Agents!', 'Bad')")


def test_user_roles_need_both_ends_and_cascade(conn: Conn, world: dict[str, int]) -> None:
    role = _one(conn, "INSERT INTO roles (developer_name, label) VALUES ('r', 'R') RETURNING id")
    with refused(conn, errors.ForeignKeyViolation):
        conn.execute("INSERT INTO user_roles (user_id, role_id) VALUES (999999, %s)", (role,))
    conn.execute("INSERT INTO user_roles (user_id, role_id) VALUES (%s, %s)", (world["user"], role))
    conn.execute("DELETE FROM roles WHERE id = %s", (role,))
    assert _one(conn, "SELECT count(*) FROM user_roles") == 0


def test_team_names_are_unique(conn: Conn, world: dict[str, int]) -> None:
    with refused(conn, errors.UniqueViolation):
        conn.execute("INSERT INTO teams (name) VALUES ('Support')")


# Saved views --------------------------------------------------------------------------


def _add_view(conn: Conn, **values: Any) -> None:
    row: dict[str, Any] = {
        "name": "Mine",
        "columns": ["id", "title"],
        "sort": Jsonb([{"field": "created", "direction": "desc"}]),
        **values,
    }
    query = sql.SQL("INSERT INTO saved_views ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    conn.execute(query, list(row.values()))


def test_a_valid_saved_view_is_accepted(conn: Conn) -> None:
    _add_view(conn, columns=[f"c{i}" for i in range(20)], sort=Jsonb([{"f": i} for i in range(6)]))
    assert _one(conn, "SELECT count(*) FROM saved_views") == 1


@pytest.mark.parametrize(
    "values",
    [
        {"name": "   "},
        {"name": "x" * 101},
        {"columns": []},
        {"columns": [f"c{i}" for i in range(21)]},
        {"sort": Jsonb([])},
        {"sort": Jsonb([{"f": i} for i in range(7)])},
        {"sort": Jsonb({"f": 1})},
        {"conditions_and": Jsonb({"field": "x"})},
        {"conditions_or": Jsonb("x")},
    ],
)
def test_bad_saved_views_are_refused(conn: Conn, values: dict[str, Any]) -> None:
    with refused(conn, errors.CheckViolation):
        _add_view(conn, **values)


def test_a_saved_view_needs_an_existing_owner(conn: Conn) -> None:
    with refused(conn, errors.ForeignKeyViolation):
        _add_view(conn, owner_id=999_999)


# Media items --------------------------------------------------------------------------


def _add_media(conn: Conn, **values: Any) -> uuid.UUID:
    row: dict[str, Any] = {
        "kind": "ticket_export",
        "file_name": "tickets-all-20260101-120000.csv",
        "size_bytes": 10,
        "content_type": "text/csv; charset=utf-8",
        "storage_backend": "local",
        "object_key": f"exports/{uuid.uuid4()}.csv",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        **values,
    }
    query = sql.SQL("INSERT INTO media_items ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    media_id = _one(conn, query, list(row.values()))
    assert isinstance(media_id, uuid.UUID)
    return media_id


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"kind": "avatar"}, errors.CheckViolation),
        ({"storage_backend": "ftp"}, errors.CheckViolation),
        ({"sha256": "ABC"}, errors.CheckViolation),
        ({"sha256": "A" * 64}, errors.CheckViolation),
        ({"size_bytes": -1}, errors.CheckViolation),
        ({"file_name": ""}, errors.CheckViolation),
        ({"object_key": ""}, errors.CheckViolation),
        ({"content_type": None}, errors.NotNullViolation),
    ],
)
def test_bad_media_items_are_refused(
    conn: Conn, values: dict[str, Any], error: type[Exception]
) -> None:
    with refused(conn, error):
        _add_media(conn, **values)


def test_object_keys_are_unique(conn: Conn) -> None:
    _add_media(conn, object_key="exports/a.csv")
    with refused(conn, errors.UniqueViolation):
        _add_media(conn, object_key="exports/a.csv")


# Export jobs --------------------------------------------------------------------------

# What each status needs besides its name, so that only the transition rule is tested.
STATUS_COLUMNS: dict[str, Callable[[Conn], dict[str, Any]]] = {
    "queued": lambda c: {"stage": None, "error_code": None},
    "running": lambda c: {"stage": "counting", "error_code": None, "started_at": T0},
    "completed": lambda c: {
        "stage": None,
        "error_code": None,
        "media_item_id": _add_media(c),
        "finished_at": T0,
    },
    "failed": lambda c: {"stage": None, "error_code": "internal", "finished_at": T0},
    "cancelled": lambda c: {"stage": None, "error_code": None, "finished_at": T0},
    "expired": lambda c: {"stage": None, "error_code": None},
}

# The brief's lifecycle, and a path from `queued` to every status.
ALLOWED = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("running", "queued"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("completed", "expired"),
}
PATH_TO = {
    "queued": [],
    "running": ["running"],
    "completed": ["running", "completed"],
    "failed": ["failed"],
    "cancelled": ["cancelled"],
    "expired": ["running", "completed", "expired"],
}
STATUSES = list(STATUS_COLUMNS)
DISALLOWED = sorted(
    (old, new) for old in STATUSES for new in STATUSES if old != new and (old, new) not in ALLOWED
)


def _add_export(conn: Conn, requester: int, **values: Any) -> uuid.UUID:
    row: dict[str, Any] = {
        "requester_id": requester,
        "requested_at": T0,
        "as_of": T0,
        "request": Jsonb({"view": "all"}),
        "view_name": "All tickets",
        "request_fingerprint": "f" * 64,
        "expires_at": T0 + dt.timedelta(hours=72),
        **values,
    }
    query = sql.SQL("INSERT INTO export_jobs ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    export_id = _one(conn, query, list(row.values()))
    assert isinstance(export_id, uuid.UUID)
    return export_id


def _update(conn: Conn, export_id: uuid.UUID, **values: Any) -> None:
    query = sql.SQL("UPDATE export_jobs SET {} WHERE id = %s").format(
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
    )
    cur = conn.execute(query, [*values.values(), export_id])
    assert cur.rowcount == 1


def _move(conn: Conn, export_id: uuid.UUID, status: str) -> None:
    values = STATUS_COLUMNS[status](conn)
    if status == "queued":
        # Back to the queue only with a new attempt.
        values["attempt"] = _one(
            conn, "SELECT attempt + 1 FROM export_jobs WHERE id = %s", (export_id,)
        )
        values["rows_done"] = 0
    _update(conn, export_id, status=status, **values)


def _export_in(conn: Conn, user: int, status: str) -> uuid.UUID:
    export_id = _add_export(conn, user)
    for step in PATH_TO[status]:
        _move(conn, export_id, step)
    assert _one(conn, "SELECT status FROM export_jobs WHERE id = %s", (export_id,)) == status
    return export_id


def test_a_new_export_is_queued_at_attempt_one(conn: Conn, world: dict[str, int]) -> None:
    export_id = _add_export(conn, world["user"])
    row = conn.execute(
        "SELECT status, attempt, rows_done, rows_total, stage FROM export_jobs WHERE id = %s",
        (export_id,),
    ).fetchone()
    assert row == ("queued", 1, 0, None, None)


@pytest.mark.parametrize("status", ["running", "completed", "failed", "cancelled", "expired"])
def test_a_new_export_must_start_queued(conn: Conn, world: dict[str, int], status: str) -> None:
    values = STATUS_COLUMNS[status](conn)
    with refused(conn, errors.CheckViolation, match="a new export starts queued"):
        _add_export(conn, world["user"], status=status, **values)


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_every_allowed_transition_succeeds(
    conn: Conn, world: dict[str, int], old: str, new: str
) -> None:
    export_id = _export_in(conn, world["user"], old)
    _move(conn, export_id, new)
    assert _one(conn, "SELECT status FROM export_jobs WHERE id = %s", (export_id,)) == new


@pytest.mark.parametrize(("old", "new"), DISALLOWED)
def test_every_other_transition_is_refused(
    conn: Conn, world: dict[str, int], old: str, new: str
) -> None:
    export_id = _export_in(conn, world["user"], old)
    values = STATUS_COLUMNS[new](conn)
    if new == "queued":
        values["attempt"] = _one(
            conn, "SELECT attempt + 1 FROM export_jobs WHERE id = %s", (export_id,)
        )
    with refused(conn, errors.CheckViolation, match=f"cannot go from {old} to {new}"):
        _update(conn, export_id, status=new, **values)


def test_the_disallowed_set_covers_the_terminal_states() -> None:
    # The parametrisation above must really include the interesting cases.
    for pair in [
        ("queued", "completed"),
        ("completed", "running"),
        ("failed", "running"),
        ("failed", "queued"),
        ("cancelled", "queued"),
        ("expired", "completed"),
        ("running", "expired"),
    ]:
        assert pair in DISALLOWED
    assert len(DISALLOWED) == len(STATUSES) * (len(STATUSES) - 1) - len(ALLOWED)


@pytest.mark.parametrize("attempt_delta", [0, 2])
def test_requeueing_needs_exactly_the_next_attempt(
    conn: Conn, world: dict[str, int], attempt_delta: int
) -> None:
    export_id = _export_in(conn, world["user"], "running")
    with refused(conn, errors.CheckViolation, match="re-queued without a new attempt"):
        _update(
            conn, export_id, status="queued", stage=None, rows_done=0, attempt=1 + attempt_delta
        )


def test_rows_done_cannot_decrease_within_an_attempt(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    _update(conn, export_id, rows_total=100, rows_done=40, stage="exporting")
    _update(conn, export_id, rows_done=40)
    _update(conn, export_id, rows_done=41)
    with refused(conn, errors.CheckViolation, match="progress cannot decrease"):
        _update(conn, export_id, rows_done=39)


def test_a_new_attempt_starts_counting_from_zero(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    _update(conn, export_id, rows_total=100, rows_done=60, stage="exporting")
    _update(conn, export_id, status="queued", stage=None, attempt=2, rows_done=0)
    row = conn.execute(
        "SELECT status, attempt, rows_done FROM export_jobs WHERE id = %s", (export_id,)
    ).fetchone()
    assert row == ("queued", 2, 0)


def test_the_attempt_cannot_go_back(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    _update(conn, export_id, status="queued", stage=None, attempt=2)
    with refused(conn, errors.CheckViolation, match="attempt cannot decrease"):
        _update(conn, export_id, attempt=1)


def test_completed_needs_a_media_item(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    with refused(conn, errors.CheckViolation, match="export_jobs_check"):
        _update(conn, export_id, status="completed", stage=None, finished_at=T0)
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, status="completed", stage=None, media_item_id=_add_media(conn))


def test_failed_needs_an_error_code_and_only_failed_has_one(
    conn: Conn, world: dict[str, int]
) -> None:
    export_id = _export_in(conn, world["user"], "queued")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, status="failed")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, error_code="internal")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, status="failed", error_code="Not A Code")


@pytest.mark.parametrize("status", ["queued", "completed", "failed", "cancelled"])
def test_a_stage_only_while_running(conn: Conn, world: dict[str, int], status: str) -> None:
    export_id = _export_in(conn, world["user"], status)
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, stage="exporting")


@pytest.mark.parametrize("stage", ["counting", "exporting", "storing"])
def test_the_three_stages_are_accepted(conn: Conn, world: dict[str, int], stage: str) -> None:
    export_id = _export_in(conn, world["user"], "running")
    _update(conn, export_id, stage=stage)


def test_an_unknown_stage_or_status_is_refused(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, stage="uploading")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, status="paused")


def test_rows_done_cannot_exceed_the_total(conn: Conn, world: dict[str, int]) -> None:
    export_id = _export_in(conn, world["user"], "running")
    with refused(conn, errors.CheckViolation):
        _update(conn, export_id, rows_total=10, rows_done=11)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"expires_at": T0}, errors.CheckViolation),
        ({"expires_at": T0 - dt.timedelta(hours=1)}, errors.CheckViolation),
        ({"request": Jsonb([1, 2])}, errors.CheckViolation),
        ({"request": None}, errors.NotNullViolation),
        ({"as_of": None}, errors.NotNullViolation),
        ({"attempt": 0}, errors.CheckViolation),
        ({"rows_done": -1}, errors.CheckViolation),
        ({"requester_id": 999_999}, errors.ForeignKeyViolation),
        ({"retry_of_id": uuid.uuid4()}, errors.ForeignKeyViolation),
        ({"media_item_id": uuid.uuid4()}, errors.ForeignKeyViolation),
    ],
)
def test_bad_export_requests_are_refused(
    conn: Conn, world: dict[str, int], values: dict[str, Any], error: type[Exception]
) -> None:
    with refused(conn, error):
        _add_export(conn, world["user"], **values)


def test_a_requester_with_exports_cannot_be_deleted(conn: Conn, world: dict[str, int]) -> None:
    # Exports are audited history; a user who requested one is deactivated, not deleted.
    _add_export(conn, world["user"])
    with refused(conn, errors.ForeignKeyViolation):
        conn.execute("DELETE FROM users WHERE id = %s", (world["user"],))


def test_the_procrastinate_job_id_has_no_foreign_key(conn: Conn, world: dict[str, int]) -> None:
    export_id = _add_export(conn, world["user"], procrastinate_job_id=123_456_789)
    assert (
        _one(conn, "SELECT procrastinate_job_id FROM export_jobs WHERE id = %s", (export_id,))
        == 123_456_789
    )


# Audit log and sessions ---------------------------------------------------------------


def test_audit_rows_are_checked(conn: Conn, world: dict[str, int]) -> None:
    conn.execute(
        "INSERT INTO audit_log (actor_id, actor_email, action, client_ip, details) "
        "VALUES (%s, 'agent@example.com', 'export.requested', '10.0.0.1', %s)",
        (world["user"], Jsonb({"rows": 1})),
    )
    with refused(conn, errors.CheckViolation):
        conn.execute("INSERT INTO audit_log (action) VALUES ('Export Requested')")
    with refused(conn, errors.CheckViolation):
        conn.execute("INSERT INTO audit_log (action, details) VALUES ('x', %s)", (Jsonb(["list"]),))
    with refused(conn, errors.InvalidTextRepresentation):
        conn.execute("INSERT INTO audit_log (action, client_ip) VALUES ('x', 'not-an-ip')")
    # Ids come from the database only, so the log cannot be back-filled out of order.
    with refused(conn, errors.GeneratedAlways):
        conn.execute("INSERT INTO audit_log (id, action) VALUES (1, 'x')")


def test_web_sessions_are_checked(conn: Conn, world: dict[str, int]) -> None:
    good = hashlib.sha256(b"cookie").hexdigest()
    conn.execute(
        "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) VALUES (%s, %s, %s, %s)",
        (good, world["user"], "t" * 43, T0),
    )
    with refused(conn, errors.CheckViolation):
        conn.execute(
            "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) "
            "VALUES ('raw-cookie', %s, %s, %s)",
            (world["user"], "t" * 43, T0),
        )
    with refused(conn, errors.CheckViolation):
        conn.execute(
            "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at) "
            "VALUES (%s, %s, 'short', %s)",
            (hashlib.sha256(b"other").hexdigest(), world["user"], T0),
        )
    conn.execute("DELETE FROM users WHERE id = %s", (world["user"],))
    assert _one(conn, "SELECT count(*) FROM web_sessions") == 0
