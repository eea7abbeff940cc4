"""Search terms of three or more characters, answered through the trigram indexes: the same
rows as the row-by-row rule (LIKE's wildcards in a term mean themselves) in the list, its
count and the export, and every searched column's index usable for it."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.databases import scratch_database
from tests.support.reference_views import fold
from ticketexport.domain.actor import Actor
from ticketexport.exports import formats
from ticketexport.views import compiler, conditions, registry, service
from ticketexport.views.columns import COLUMNS, SEARCHABLE_COLUMNS
from ticketexport.views.model import ListRequest, ResolvedView, parse_definition
from ticketexport.views.registry import Owner
from ticketexport.views.scope import Binder, Context, RuleIds
from ticketexport.views.service import list_page, parse_list_request

NOW = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
ME = Actor(1, is_admin=False, permissions=0)

# (title, description, tags, category, language, sla_status, contact, assignee, team)
TICKETS: list[tuple[str, str, list[str], str | None, str | None, str | None, int, int, int]] = [
    ("100% done", "", [], None, None, None, 1, 2, 1),
    ("a_b ticket", "back\\slash path", ["net_work"], "Hard_ware", "en", None, 2, 3, 2),
    (
        "50%_off sale",
        "ab_c and 1000 items",
        ["x%y", "plain"],
        "Sales",
        "de-AT",
        "on_track",
        1,
        2,
        2,
    ),
    ("plain words", "100 percent", ["sale"], None, "el", "Breached", 2, 3, 1),
    ("ΟΔΟΣ street", "ΣΑΣ λόγος", ["ẞig"], "Straße", None, None, 3, 2, 1),
    ("İstanbul office", "%%% and ___", [], None, None, None, 3, 3, 2),
]
CONTACTS = [("Zoë", "O'Brien"), ("Ann", "Lee"), ("Müller", "")]
USERS = [("Me", ""), ("Kim", "Ng_uyen"), ("Lars", "50%")]
TEAMS = ["Net_Ops", "Support 100%"]
STATUS_LABEL = "Open"  # status 1
PRIORITY_LABEL = "Low"  # priority 1

QUERIES = [
    "100%",
    "0% ",
    "0% d",
    "%_o",
    "a_b",
    "b_c",
    "k\\s",
    "___",
    "%%%",
    "net_w",
    "x%y",
    "_wa",
    "o'b",
    "ann lee",
    "müll",
    "ng_u",
    "50%",
    "t_o",
    "οδος",
    "σασ",
    "ßig",
    "istanbul",
    "pen",
    "sup",
    "de-at",
    "nothing-holds-this",
]


def _person(first: str, last: str) -> str:
    return first if last == "" else f"{first} {last}"


def _shown(index: int, column: str, labels: dict[str, str]) -> str:
    title, description, tags, category, language, sla, contact, assignee, team = TICKETS[index]
    return {
        "id": str(index + 1),
        "title": title,
        "description": description,
        "tags": ", ".join(tags),
        "category": category or "",
        "language": language or "",
        "sla_status": sla or "",
        "contact": _person(*CONTACTS[contact - 1]),
        "assignee": _person(*USERS[assignee - 1]),
        "created_by": _person(*USERS[0]),
        "team": TEAMS[team - 1],
        "status": labels["status"],
        "priority": labels["priority"],
    }[column]


@pytest.fixture(scope="module")
def dataset(
    server_url: str, template_db: str
) -> Iterator[tuple[psycopg.Connection[Any], dict[str, str]]]:
    with (
        scratch_database(server_url, template_db) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        for i, (first, last) in enumerate(USERS, start=1):
            conn.execute(
                "INSERT INTO users (id, email, first_name, last_name, password_hash) "
                "VALUES (%s, %s, %s, %s, 'x')",
                (i, f"u{i}@example.test", first, last),
            )
        for i, name in enumerate(TEAMS, start=1):
            conn.execute("INSERT INTO teams (id, name) VALUES (%s, %s)", (i, name))
        for i, (first, last) in enumerate(CONTACTS, start=1):
            conn.execute(
                "INSERT INTO contacts (id, first_name, last_name) VALUES (%s, %s, %s)",
                (i, first, last),
            )
        for i, ticket in enumerate(TICKETS, start=1):
            _, _, _, category, language, sla, contact, assignee, team = ticket
            conn.execute(
                "INSERT INTO tickets (id, title, description, tags, category, language, "
                "sla_status, contact_id, assignee_id, team_id, created_by_id, status_id, "
                "priority_id, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, 1, 1, %s, %s)",
                (i, *ticket[:3], category, language, sla, contact, assignee, team, NOW, NOW),
            )
        row = conn.execute(
            "SELECT s.label, p.label FROM ticket_statuses s, ticket_priorities p "
            "WHERE s.id = 1 AND p.id = 1"
        ).fetchone()
        assert row is not None
        conn.execute("ANALYZE")
        yield conn, {"status": row[0], "priority": row[1]}


def _view(columns: list[str]) -> ResolvedView:
    definition = parse_definition(
        {
            "name": "Searched",
            "conditions_and": [],
            "conditions_or": [],
            "columns": columns,
            "sort": [{"column": "id", "direction": "asc"}],
        }
    )
    return ResolvedView(key="1", name="x", definition=definition, saved_view_id=1, builtin=None)


ALL_SEARCHED = [c for c in COLUMNS if c in SEARCHABLE_COLUMNS]


def _matches(
    conn: psycopg.Connection[Any],
    view: ResolvedView,
    request: ListRequest,
    snapshot: str | None = None,
) -> dict[str, list[int]] | None:
    found = conditions.search_lookups(view, request, ME, now=NOW, tz="UTC", snapshot=snapshot)
    if found is None:
        return None
    statement, params, keys = found
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return dict(zip(keys, row, strict=True))


@pytest.mark.parametrize("query", QUERIES)
def test_list_count_and_export_find_what_the_rule_finds(
    dataset: tuple[psycopg.Connection[Any], dict[str, str]], query: str
) -> None:
    conn, labels = dataset
    view = _view(ALL_SEARCHED)
    expected = [
        i + 1
        for i in range(len(TICKETS))
        if any(fold(query.strip()) in fold(_shown(i, c, labels)) for c in ALL_SEARCHED)
    ]
    request = parse_list_request({"q": query})
    # The lookups' matches as a subquery, and found beforehand as the list page does.
    for matches in (None, _matches(conn, view, request)):
        listed = compiler.compile_list(view, request, ME, now=NOW, tz="UTC", search_matches=matches)
        rows = conn.execute(listed.statement, listed.params).fetchall()
        assert [row[len(listed.columns)] for row in rows] == expected, matches

        statement, params = compiler.compile_count(
            view, request, ME, now=NOW, tz="UTC", search_matches=matches
        )
        assert conn.execute(statement, params).fetchone() == (len(expected),), matches

    snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert snapshot is not None
    # The lookups' matches as a subquery, and found beforehand as of the snapshot as the
    # export's worker does.
    for matches in (None, _matches(conn, view, request, snapshot[0])):
        export = compiler.compile_export(
            view, request, ME, NOW, "UTC", snapshot=snapshot[0], search_matches=matches
        )
        exported = conn.execute(formats.CSV.select(export.rows)).fetchall()
        assert [int(row[0]) for row in exported] == expected, matches
        assert conn.execute(export.count).fetchone() == (len(expected),), matches


def test_an_export_finds_lookups_by_their_text_at_the_click(
    dataset: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    """A team renamed after the click: the export's search, as of the click's snapshot,
    finds the team's tickets by the name they showed then, and not by the new one."""
    conn, _ = dataset
    view = _view(["id", "team"])
    with conn.transaction(force_rollback=True):
        snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snapshot is not None
        # This transaction's id comes after the snapshot: its change is not seen there.
        conn.execute("UPDATE teams SET name = 'Renamed crew' WHERE name = 'Net_Ops'")
        for query, expected in (("net_ops", [1, 4, 5]), ("renamed crew", [])):
            request = parse_list_request({"q": query})
            matches = _matches(conn, view, request, snapshot[0])
            export = compiler.compile_export(
                view, request, ME, NOW, "UTC", snapshot=snapshot[0], search_matches=matches
            )
            exported = conn.execute(formats.CSV.select(export.rows)).fetchall()
            assert [int(row[0]) for row in exported] == expected, (query, matches)
            assert conn.execute(export.count).fetchone() == (len(expected),)
        # Read as they are now, the new name is found instead.
        now = _matches(conn, view, parse_list_request({"q": "renamed crew"}))
        assert now is not None
        assert now["team"] == [1]


def _plan(conn: psycopg.Connection[Any], statement: Any, params: dict[str, Any] | None) -> str:
    with conn.transaction():
        # Only bitmap scans left: a plan that can use a trigram index must show it.
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_indexscan = off")
        conn.execute("SET LOCAL enable_indexonlyscan = off")
        row = conn.execute(
            psycopg.sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params
        ).fetchone()
    assert row is not None
    return json.dumps(row[0])


INDEXED = {
    "id": "tickets_search_id_idx",
    # Either index of the title's trigrams: alone (0013) or beside the status (0016).
    "title": "tickets_search_(status_)?title_idx",
    "description": "tickets_search_description_idx",
    "tags": "tickets_search_tags_idx",
    "category": "tickets_search_category_idx",
    "language": "tickets_search_language_idx",
    "sla_status": "tickets_search_sla_status_idx",
    "contact": "contacts_search_name_idx",
}


@pytest.mark.parametrize("column", sorted(INDEXED))
def test_a_searched_column_is_read_through_its_trigram_index(
    dataset: tuple[psycopg.Connection[Any], dict[str, str]], column: str
) -> None:
    conn, _ = dataset
    view = _view([column] if column == "id" else ["id", column])
    request = parse_list_request({"q": "sal"})
    listed = compiler.compile_list(view, request, ME, now=NOW, tz="UTC", limit=51)
    assert re.search(INDEXED[column], _plan(conn, listed.statement, listed.params))
    statement, params = compiler.compile_count(view, request, ME, now=NOW, tz="UTC")
    assert re.search(INDEXED[column], _plan(conn, statement, params))
    if column == "contact":
        # As of a snapshot each contact's one version is picked (DISTINCT ON), which no
        # condition passes through: the export reads the contacts once, as a whole.
        return
    # The export, as of a snapshot, reads the current tickets through the same index.
    snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert snapshot is not None
    export = compiler.compile_export(view, request, ME, NOW, "UTC", snapshot=snapshot[0])
    assert re.search(INDEXED[column], _plan(conn, export.rows.statement, None))


def test_short_terms_keep_the_row_by_row_rule(
    dataset: tuple[psycopg.Connection[Any], dict[str, str]],
) -> None:
    conn, labels = dataset
    for query in ("%", "_", "\\", "0%", "%_", "a_", "ß", "σ"):
        expected = [
            i + 1
            for i in range(len(TICKETS))
            if any(fold(query.strip()) in fold(_shown(i, c, labels)) for c in ALL_SEARCHED)
        ]
        compiled = compiler.compile_list(
            _view(ALL_SEARCHED), parse_list_request({"q": query}), ME, now=NOW, tz="UTC"
        )
        rows = conn.execute(compiled.statement, compiled.params).fetchall()
        assert [row[len(compiled.columns)] for row in rows] == expected, query


async def test_the_list_page_finds_lookup_matches_first(db_url: str) -> None:
    """Through the service: a term naming a status, a person or a team finds their
    tickets, one naming nothing finds nothing, whatever the case."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        await aconn.execute(
            "INSERT INTO users (id, email, first_name, last_name, password_hash) "
            "VALUES (1, 'me@example.test', 'Me', '', 'x'), (2, 'k@example.test', 'Kim', "
            "'Ng_uyen', 'x')"
        )
        await aconn.execute("INSERT INTO teams (id, name) VALUES (1, 'Net_Ops')")
        for i, (assignee, team) in enumerate([(2, None), (None, 1), (None, None)], start=1):
            await aconn.execute(
                "INSERT INTO tickets (id, title, status_id, priority_id, assignee_id, team_id, "
                "created_at, updated_at) VALUES (%s, 'x', 1, 1, %s, %s, %s, %s)",
                (i, assignee, team, NOW, NOW),
            )
        row = await (
            await aconn.execute("SELECT label FROM ticket_statuses WHERE id = 1")
        ).fetchone()
        assert row is not None
        cases = {"NG_UY": [1], "net_o": [2], "nothing-here": [], row[0].upper(): [1, 2, 3]}
        for query, found in cases.items():
            page = await list_page(
                aconn, parse_list_request({"view": "all", "q": query}), ME, now=NOW, tz="UTC"
            )
            assert sorted(page.ticket_ids) == found, query
            assert page.count == len(found), query


async def test_a_status_of_the_other_type_finds_nothing_in_a_view_of_one_type(
    db_url: str,
) -> None:
    """A view whose rule keeps one status type (open, closed) finds a term naming a status
    of the other type only where another column holds it; the page of no rows is empty."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        labels = dict(
            await (await aconn.execute("SELECT id, lower(label) FROM ticket_statuses")).fetchall()
        )
        types = dict(
            await (await aconn.execute("SELECT id, status_type FROM ticket_statuses")).fetchall()
        )
        # Two open and two closed statuses, each naming one ticket's status and another
        # one's title (of the other type).
        opened = [i for i in sorted(types) if types[i] == "open"][:2]
        closed = [i for i in sorted(types) if types[i] == "closed"][:2]
        rows = [
            (1, "x", opened[0]),
            (2, f"about {labels[opened[0]]}", closed[0]),
            (3, "x", closed[1]),
            (4, f"about {labels[closed[1]]}", opened[1]),
        ]
        for ticket_id, title, status in rows:
            await aconn.execute(
                "INSERT INTO tickets (id, title, status_id, priority_id, created_at, updated_at) "
                "VALUES (%s, %s, %s, 1, %s, %s)",
                (ticket_id, title, status, NOW, NOW),
            )
        cases = {
            ("open", labels[opened[0]]): [1],
            ("closed", labels[opened[0]]): [2],
            ("all", labels[opened[0]]): [1, 2],
            ("open", labels[closed[1]]): [4],
            ("closed", labels[closed[1]]): [3],
            ("recently-closed", labels[opened[0]]): [],
            ("overdue", labels[closed[1]]): [],
        }
        for (view, query), found in cases.items():
            page = await list_page(
                aconn, parse_list_request({"view": view, "q": query}), ME, now=NOW, tz="UTC"
            )
            assert sorted(page.ticket_ids) == found, (view, query)
            assert page.count == len(found), (view, query)
            assert len(page.rows) == len(found), (view, query)
            assert page.next_cursor is None


# Ticket ids in several id bands (conditions.ID_BAND_BITS), past the newest bands a count
# reads one by one (BANDS_COUNTED) and on both sides of band edges.
BAND = 1 << conditions.ID_BAND_BITS
BANDED_IDS = [
    1,
    BAND - 1,
    BAND,
    3 * BAND + 7,
    17 * BAND,
    18 * BAND + 1,
    25 * BAND,
    26 * BAND - 1,
    26 * BAND,
]


async def test_a_count_band_by_band_finds_what_one_scan_finds(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A searched list page counts band by band, newest first, and stops at the cap: the
    same count as one statement over every ticket, whatever the band a ticket is in,
    including tickets newer than the band the count started from."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        for n, ticket_id in enumerate(BANDED_IDS):
            await aconn.execute(
                "INSERT INTO tickets (id, title, status_id, priority_id, created_at, updated_at) "
                "VALUES (%s, %s, 1, 1, %s, %s)",
                (ticket_id, "Printer jam" if n % 3 else "VPN drops", NOW, NOW),
            )
        top = await aconn.execute("SELECT ticketexport_id_band(max(id)) FROM tickets")
        assert await top.fetchone() == (26,)
        view = _view(["id", "title"])
        # "1048": the id digits of BAND - 1 and BAND (1048575, 1048576).
        cases = {"printer": 6, "vpn": 3, "jam": 6, "nothing-here": 0, "1048": 2}
        for query, expected in cases.items():
            request = parse_list_request({"q": query})
            # From the newest band, from older ones (tickets added since it was read), and
            # from the oldest: every ticket is counted once.
            for top_band in (26, 25, 9, 0):
                for cap in (registry.COUNT_CAP, 2):
                    statement, params = compiler.compile_count(
                        view, request, ME, now=NOW, tz="UTC", top_band=top_band, cap=cap
                    )
                    row = await (await aconn.execute(statement, params)).fetchone()
                    assert row == (min(expected, cap + 1),), (query, top_band, cap)
            # The list page, whether it expects few rows (one statement) or many (bands).
            for least in (service.BANDED_COUNT_MIN_ROWS, 0):
                monkeypatch.setattr(service, "BANDED_COUNT_MIN_ROWS", least)
                page = await list_page(
                    aconn, parse_list_request({"view": "all", "q": query}), ME, now=NOW, tz="UTC"
                )
                assert page.count == expected, (query, least)
                assert len(page.ticket_ids) == expected, (query, least)


async def test_a_band_of_the_count_is_an_index_condition(db_url: str) -> None:
    """Each band's part of the count can read an index by its band: the condition as the
    compiler writes it matches the indexes' expression and btree_gin's operator (bigint =
    bigint; an int4 literal would leave it a filter on every ticket of every band)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        # 20,000 tickets in each of four bands, one in 5,000 holding the term.
        await aconn.execute(
            "INSERT INTO tickets (id, title, status_id, priority_id, created_at, updated_at) "
            "SELECT b * %(band)s + n, CASE WHEN n %% 5000 = 0 THEN 'Printer jam' "
            "ELSE 'VPN drops ' || n END, 1, 1, %(now)s, %(now)s "
            "FROM generate_series(0, 3) b, generate_series(1, 20000) n",
            {"band": BAND, "now": NOW},
        )
        await aconn.execute("ANALYZE tickets")
        view = _view(["id", "title"])
        request = parse_list_request({"q": "printer"})
        statement, params = compiler.compile_count(view, request, ME, now=NOW, tz="UTC", top_band=3)
        async with aconn.transaction():
            # Bitmap scans only, so each band's part names the index it reads.
            await aconn.execute("SET LOCAL enable_seqscan = off")
            await aconn.execute("SET LOCAL enable_indexscan = off")
            row = await (
                await aconn.execute(
                    psycopg.sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params
                )
            ).fetchone()
        assert row is not None
        conds: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            if "Index Cond" in node:
                conds.append(node["Index Cond"])
            for child in node.get("Plans", []):
                walk(child)

        walk(row[0][0]["Plan"])
        for band in range(4):
            assert any(f"(id >> 20) = '{band}'::bigint" in c for c in conds), (band, conds)
        counted = await (await aconn.execute(statement, params)).fetchone()
        assert counted == (16,)


async def test_an_owners_searched_count_reads_the_title_index_by_scope_keys(db_url: str) -> None:
    """A searched count of a team's open tickets, given the rules' lookups (what a list
    page's count has), can read the title's trigram index by the view's scope keys
    (0026_search_scope.sql): the compiler writes the index's own expression. The count is
    the view's, as the list page and the view's own conditions give it."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        await aconn.execute(
            "INSERT INTO users (id, email, first_name, last_name, password_hash) "
            "VALUES (1, 'me@example.test', 'Me', '', 'x')"
        )
        await aconn.execute("INSERT INTO teams (id, name) VALUES (1, 'Mine'), (2, 'Theirs')")
        await aconn.execute("INSERT INTO team_memberships (team_id, user_id) VALUES (1, 1)")
        # 40,000 tickets: half in each team, one in 23 open, one in 29 holding the term.
        await aconn.execute(
            "INSERT INTO tickets (id, title, status_id, priority_id, team_id, created_at, "
            "updated_at) "
            "SELECT n, CASE WHEN n %% 29 = 0 THEN 'Printer jam ' || n ELSE 'VPN drops ' || n "
            "END, CASE WHEN n %% 23 = 0 THEN (SELECT min(id) FROM ticket_statuses "
            "WHERE status_type = 'open') ELSE (SELECT min(id) FROM ticket_statuses WHERE "
            "status_type = 'closed') END, 1, 1 + n %% 2, %(now)s, %(now)s "
            "FROM generate_series(1, 40000) n",
            {"now": NOW},
        )
        await aconn.execute("ANALYZE tickets")
        view = service.builtin_view("team-tickets")
        request = parse_list_request({"view": "team-tickets", "q": "printer"})
        rule_ids = await service._rule_ids(aconn, ME)
        assert rule_ids.teams == (1,)
        matches = await service.search_matches(aconn, view, request, ME, now=NOW, tz="UTC")
        statement, params = compiler.compile_count(
            view, request, ME, now=NOW, tz="UTC", search_matches=matches, rule_ids=rule_ids
        )
        async with aconn.transaction():
            # What a searched page sets (list_page_settings_local): no sequential scans.
            await aconn.execute("SET LOCAL enable_seqscan = off")
            row = await (
                await aconn.execute(
                    psycopg.sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement), params
                )
            ).fetchone()
        assert row is not None
        scans: list[tuple[str, str]] = []

        def walk(node: dict[str, Any]) -> None:
            if "Index Cond" in node:
                scans.append((node.get("Index Name", ""), node["Index Cond"]))
            for child in node.get("Plans", []):
                walk(child)

        walk(row[0][0]["Plan"])
        keys = [2 << 56 | 1 << 16 | status for status in rule_ids.open]
        written = "'{" + ",".join(str(k) for k in keys) + "}'::bigint[]"
        assert any(name == "tickets_search_title_idx" and written in c for name, c in scans), scans
        counted = await (await aconn.execute(statement, params)).fetchone()
        page = await list_page(aconn, request, ME, now=NOW, tz="UTC")
        # One in 23 * 29 * 2: open, holding the term, in the user's team (1).
        assert counted == (page.count,) == (40000 // (23 * 29 * 2),)


def test_scope_keys_are_given_only_for_ids_that_fit(conn: psycopg.Connection[Any]) -> None:
    """The compiler's scope keys (scope.Context) are the function's for ids that fit, and
    a ticket whose owner's id does not fit has no key the compiler could write: two keys
    are equal only for the same owner and status."""
    limit = 1 << 40
    cases = [(1, 1, 1, 1), (32767, limit - 1, 0, 5), (0, None, None, 7), (3, None, 4, 4)]
    for status, team, assignee, creator in cases:
        keys = conn.execute(
            "SELECT ticketexport_scope_keys(%s::smallint, %s, %s, %s)",
            (status, team, assignee, creator),
        ).fetchone()
        assert keys is not None
        # What the compiler writes for a user who is the ticket's owner of each kind.
        expected: list[int] = []
        owners: list[tuple[Owner, int | None]] = [
            ("team", team),
            ("assignee", assignee),
            ("creator", creator),
            ("unassigned", 0 if team is None and assignee is None else None),
        ]
        for owner, owner_id in owners:
            if owner_id is None:
                continue
            ctx = Context(Binder(), NOW, "UTC", Actor(owner_id, is_admin=False, permissions=0))
            ctx.rule_ids = RuleIds(open=(status,), closed=(), teams=(owner_id,))
            written = ctx._scope_keys(owner)
            assert written is not None, (owner, owner_id)
            expected.extend(written)
        assert keys[0] == expected, (status, team, assignee, creator)
    # Out of range: no key, so no collision with another owner's (2**41 + 7 would shift
    # into the tag of team 7's keys).
    row = conn.execute(
        "SELECT ticketexport_scope_keys(1::smallint, %s, -1, %s), "
        "ticketexport_scope_keys(-1::smallint, 7, 7, 7)",
        ((1 << 41) + 7, limit),
    ).fetchone()
    assert row == ([], [])
