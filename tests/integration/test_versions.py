"""Row versions: what history keeps, what bypasses it, and reading every view as of a
snapshot, checked against PostgreSQL's own REPEATABLE READ snapshot of the same instant."""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support import view_data
from tests.support.churn import Churn, involve
from tests.support.databases import Seeding
from tests.support.services import actor_for, services_for
from tests.support.web import make_user
from tests.support.workers import export_row
from ticketexport import db
from ticketexport.exports import formats, maintenance, service
from ticketexport.exports.frozen import FrozenRequest
from ticketexport.exports.worker import plan_export
from ticketexport.views import compiler, registry
from ticketexport.views.model import ListRequest, ResolvedView, parse_definition
from ticketexport.views.service import builtin_view, parse_list_request

ANCHOR = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=400, seed=7, anchor=ANCHOR)


def _snapshot(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return str(row[0])


def _history(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}_history").fetchone()
    assert row is not None
    return int(row[0])


def test_history_keeps_only_what_views_read(conn: psycopg.Connection[Any]) -> None:
    user_id = make_user(conn, "kept@example.com", name="Kept Name")
    conn.execute(
        "UPDATE users SET password_hash = 'changed', is_admin = true WHERE id = %s", (user_id,)
    )
    assert _history(conn, "users") == 0, "a password change kept a version"
    conn.execute("UPDATE users SET first_name = 'Renamed' WHERE id = %s", (user_id,))
    row = conn.execute("SELECT * FROM users_history").fetchone()
    assert row is not None
    columns = [c.name for c in conn.execute("SELECT * FROM users_history LIMIT 0").description]
    assert columns == ["id", "first_name", "last_name", "row_version", "superseded_by"]
    for table in db.VERSIONED_TABLES:
        names = [c.name for c in conn.execute(f"SELECT * FROM {table}_history LIMIT 0").description]
        assert not {"password_hash", "csrf_token", "email"} & set(names) or table == "contacts"


def test_one_version_per_transaction(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO tickets (title, status_id, priority_id) VALUES ('v1', 1, 1)")
    with conn.transaction():
        for title in ("v2", "v3", "v4"):
            conn.execute("UPDATE tickets SET title = %s WHERE title LIKE 'v_'", (title,))
    titles = conn.execute("SELECT title FROM tickets_history").fetchall()
    assert titles == [("v1",)], "only the version other snapshots could see is kept"
    with conn.transaction():  # created and removed in one transaction: never visible
        conn.execute("INSERT INTO tickets (title, status_id, priority_id) VALUES ('gone', 1, 1)")
        conn.execute("DELETE FROM tickets WHERE title = 'gone'")
    assert conn.execute("SELECT count(*) FROM tickets_history").fetchone() == (1,)


def test_what_would_bypass_the_triggers_is_refused_or_still_versioned(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("INSERT INTO tickets (title, status_id, priority_id) VALUES ('t', 1, 1)")
    for table in db.VERSIONED_TABLES:
        with pytest.raises(psycopg.errors.FeatureNotSupported), conn.transaction():
            conn.execute(f"TRUNCATE {table} CASCADE")
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE tickets SET title = 'replica'")
    conn.execute("RESET session_replication_role")
    assert conn.execute("SELECT title FROM tickets_history").fetchall() == [("t",)]


@pytest.mark.parametrize("view", list(registry.BUILTIN_VIEWS))
def test_every_view_as_of_a_snapshot_equals_that_snapshot(seeded_url: str, view: str) -> None:
    """Each built-in view in every sort, read as of a recorded snapshot after concurrent
    changes of every kind, equals the same statements run inside a REPEATABLE READ
    transaction that started at that instant."""
    actor = actor_for(seeded_url)
    resolved = builtin_view(view)
    with (
        psycopg.connect(seeded_url) as frozen,
        psycopg.connect(seeded_url, autocommit=True) as writer,
    ):
        involve(writer, actor.id)
        frozen.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot = _snapshot(frozen)  # the transaction's snapshot is taken here
        # Half the ticket changes land on rows the view shows at the snapshot, so the
        # check below always compares a view that changed.
        shown = compiler.compile_export(
            resolved, parse_list_request({"view": view}), actor, NOW, "UTC", snapshot=None
        )
        in_view = [
            row[0]
            for row in frozen.execute(
                sql.SQL("SELECT ticket_id FROM ({}) AS v").format(compiler.aliased(shown.rows))
            )
        ]
        assert in_view, f"the seeded data has no ticket in {view}: nothing to change"
        churn = Churn(seeded_url, user_id=actor.id, seed=zlib.crc32(view.encode()), focus=in_view)
        churn.round(writer, 250)
        assert len(churn.counts) == len(churn.kinds()), churn.counts
        differs = 0
        for sort in registry.SORTS:
            request = parse_list_request({"view": view, "sort": sort})
            as_of = compiler.compile_export(resolved, request, actor, NOW, "UTC", snapshot=snapshot)
            plain = compiler.compile_export(resolved, request, actor, NOW, "UTC", snapshot=None)
            read_now = writer.execute(formats.CSV.select(as_of.rows)).fetchall()
            expected = frozen.execute(formats.CSV.select(plain.rows)).fetchall()
            assert read_now == expected, (view, sort)
            assert writer.execute(as_of.count).fetchone() == (len(expected),)
            differs += writer.execute(formats.CSV.select(plain.rows)).fetchall() != expected
        frozen.rollback()
    # A shown row edited or deleted changes the view in every order.
    assert differs == len(registry.SORTS), f"the changes left {view} as it was in some sorts"


def _every_condition(user_id: int) -> list[dict[str, object]]:
    """One condition of every field and operator, with values the seeded data has."""
    values: dict[str, object] = {
        "none": None,
        "text": "e",
        "number": 150,
        "date": "2026-05-20",
        "relative": {"amount": 20, "unit": "days"},
        "preset": "last_month",
        "status_type": "open",
        "priority_ref": "normal",
    }
    found = []
    for field in registry.FIELDS.values():
        for op in registry.OPERATORS[field.type]:
            value = values.get(op.value_kind)
            if op.value_kind == "ids":
                names = field.type in (registry.FieldType.STATUS, registry.FieldType.PRIORITY)
                value = ["open", "pending"] if names else [user_id, 1, 2, 3]
                if op.key in ("is", "is_not"):
                    value = value[:1]
            found.append({"field": field.key, "operator": op.key, "value": value})
    return found


def test_every_condition_and_column_as_of_a_snapshot(seeded_url: str) -> None:
    """Every field and operator, with every column shown and searched, as of a snapshot
    taken before changes of every kind: equal to the REPEATABLE READ reference."""
    actor = actor_for(seeded_url)
    every_column = list(registry.COLUMNS)
    # every column shown, in views of at most MAX_COLUMNS that take turns
    chunks = view_data.column_chunks(every_column, registry.MAX_COLUMNS)
    with (
        psycopg.connect(seeded_url) as frozen,
        psycopg.connect(seeded_url, autocommit=True) as writer,
    ):
        frozen.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snapshot = _snapshot(frozen)
        Churn(seeded_url, user_id=actor.id, seed=17).round(writer, 250)
        for number, condition in enumerate(_every_condition(actor.id)):
            definition = parse_definition(
                {
                    "name": "every",
                    "conditions_and": [condition] if number % 2 else [],
                    "conditions_or": [] if number % 2 else [condition],
                    "columns": chunks[number % len(chunks)],
                    "sort": [{"column": every_column[number % 20], "direction": "desc"}],
                }
            )
            view = ResolvedView(
                key="1", name="every", definition=definition, saved_view_id=1, builtin=None
            )
            params = {"view": "1", "q": "a"} if number % 5 == 0 else {"view": "1"}
            request = parse_list_request(params)
            as_of = compiler.compile_export(view, request, actor, NOW, "UTC", snapshot=snapshot)
            plain = compiler.compile_export(view, request, actor, NOW, "UTC", snapshot=None)
            expected = frozen.execute(formats.CSV.select(plain.rows)).fetchall()
            assert writer.execute(formats.CSV.select(as_of.rows)).fetchall() == expected, condition
            assert writer.execute(as_of.count).fetchone() == (len(expected),), condition
        frozen.rollback()


async def test_pruning_keeps_what_waiting_exports_need_and_history_bounded(
    seeded_url: str,
) -> None:
    """A long run of updates while an export waits: history keeps one version per changed
    row (the one the export reads) and nothing that no snapshot can see."""
    actor = actor_for(seeded_url)
    with (
        psycopg.connect(seeded_url) as frozen,
        psycopg.connect(seeded_url, autocommit=True) as writer,
    ):
        frozen.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        async with services_for(seeded_url) as services:
            _snapshot(frozen)
            request = ListRequest(view="all", q="", sort="priority", filters={}, page=None)
            requested = await service.request_export(services, actor, request, client_ip=None)
            changed = [row[0] for row in writer.execute("SELECT id FROM tickets LIMIT 50")]
            sizes = []
            for round_ in range(30):
                writer.execute(
                    "UPDATE tickets SET title = %s || ' ' || id, priority_id = %s "
                    "WHERE id = ANY(%s)",
                    (f"Round {round_}", 1 + round_ % 4, changed),
                )
                writer.execute(
                    "UPDATE users SET last_name = %s WHERE id = %s", (str(round_), actor.id)
                )
                await maintenance.run_maintenance(services)
                sizes.append(_history(writer, "tickets") + _history(writer, "users"))
            assert max(sizes) == len(changed) + 1, sizes
            export = export_row(seeded_url, requested.export_id)
            recorded = FrozenRequest.from_json(export["request"])
            plan = plan_export(recorded, export["as_of"], export["as_of_snapshot"])
            reference = plan_export(recorded, export["as_of"], None)
            assert (
                writer.execute(plan.select).fetchall()
                == frozen.execute(reference.select).fetchall()
            ), "pruning removed a version the waiting export needs"
            frozen.rollback()
            # Once nothing waits, every superseded version goes.
            await service.cancel_export(services, actor, requested.export_id, client_ip=None)
            await maintenance.run_maintenance(services)
            assert sum(_history(writer, t) for t in db.VERSIONED_TABLES) == 0


def _columns_read(conn: psycopg.Connection[Any], statement: sql.Composable) -> set[tuple[str, str]]:
    """(table, column) for every column `statement` reads, as PostgreSQL's own dependency
    records of a view made of it say: no parsing of SQL text here."""
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("CREATE TEMP VIEW columns_read AS {}").format(statement))
        rows = conn.execute(
            "SELECT DISTINCT c.relname, a.attname "
            "FROM pg_depend d "
            "JOIN pg_rewrite r ON r.oid = d.objid "
            "JOIN pg_class c ON c.oid = d.refobjid "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE r.ev_class = 'pg_temp.columns_read'::regclass AND d.refobjsubid > 0 "
            "  AND c.relkind IN ('r', 'p')"
        ).fetchall()
    return {(str(table), str(column)) for table, column in rows}


def test_every_column_a_view_reads_is_versioned_and_returned_as_of(seeded_url: str) -> None:
    """Every built-in view in every sort, every condition, every column shown and searched:
    each table column the export's statements read is kept in its table's history and
    returned by its as-of function, so an export as of a snapshot reads it as it was."""
    actor = actor_for(seeded_url)
    every_column = list(registry.COLUMNS)
    chunks = view_data.column_chunks(every_column, registry.MAX_COLUMNS)
    sortable = sorted(registry.SORTABLE_COLUMNS)
    read: set[tuple[str, str]] = set()
    with psycopg.connect(seeded_url) as conn:

        def note(view: ResolvedView, params: dict[str, str]) -> None:
            request = parse_list_request(params)
            plain = compiler.compile_export(view, request, actor, NOW, "UTC", snapshot=None)
            read.update(_columns_read(conn, formats.CSV.select(plain.rows)))
            read.update(_columns_read(conn, plain.count))

        for key in registry.BUILTIN_VIEWS:
            for sort in registry.SORTS:
                note(builtin_view(key), {"view": key, "sort": sort, "q": "a"})
        for number, condition in enumerate(_every_condition(actor.id)):
            definition = parse_definition(
                {
                    "name": "every",
                    "conditions_and": [condition],
                    "conditions_or": [],
                    "columns": chunks[number % len(chunks)],
                    "sort": [{"column": sortable[number % len(sortable)], "direction": "asc"}],
                }
            )
            view = ResolvedView(
                key="1", name="every", definition=definition, saved_view_id=1, builtin=None
            )
            note(view, {"view": "1", "q": "a"})
        tables = {table for table, _ in read}
        assert "tickets" in tables
        assert ("tickets", "title") in read
        assert tables <= set(db.VERSIONED_TABLES), tables - set(db.VERSIONED_TABLES)
        for table in sorted(tables):
            cur = conn.execute(
                sql.SQL("SELECT * FROM {}(pg_current_snapshot()) LIMIT 0").format(
                    sql.Identifier(f"{table}_as_of")
                )
            )
            assert cur.description is not None
            returned = {column.name for column in cur.description}
            history = {
                str(row[0])
                for row in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped",
                    (f"{table}_history",),
                )
            }
            needed = {column for name, column in read if name == table}
            assert needed <= history, (table, needed - history)
            assert needed <= returned, (table, needed - returned)
