"""Keyset paging visits every ticket of every built-in view exactly once, in unpaged order."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.databases import scratch_database
from ticketexport.domain.actor import Actor
from ticketexport.views import compiler, cursor, registry, service
from ticketexport.views.model import ViewInputError
from ticketexport.views.service import builtin_view, list_page, parse_list_request

NOW = datetime.datetime(2026, 3, 9, 14, 5, tzinfo=datetime.UTC)
TZ = "America/New_York"
ACTOR = Actor(1, is_admin=False, permissions=0)
SIZES = [0, 1, 49, 50, 51, 1001]

# Four groups of N tickets each; every built-in view but `all` (4N) and `open` (2N) holds
# exactly one group, so each size is tested on nine views at once.
FILL = """
INSERT INTO users (id, email, first_name, last_name, password_hash) VALUES
    (1, 'me@example.test', 'Me', 'Myself', 'x'),
    (2, 'other@example.test', 'Ann', 'Other', 'x'),
    (3, 'third@example.test', 'ann', '', 'x');
INSERT INTO teams (id, name) VALUES (1, 'Mine'), (2, 'Theirs');
INSERT INTO team_memberships VALUES (1, 1), (2, 2);
-- A: mine in every sense, open, breached, awake
INSERT INTO tickets (id, title, status_id, priority_id, assignee_id, created_by_id, team_id,
                     created_at, updated_at, sla_due_at, sla_breached)
SELECT i, 'A ' || (i %% 7), 1 + i %% 4, 1 + i %% 4, 1, 1, 1,
       %(base)s + (i / 3) * interval '1 minute', %(base)s + (i / 3) * interval '1 minute',
       CASE WHEN i %% 5 = 0 THEN NULL ELSE %(base)s + (i %% 11) * interval '1 hour' END, true
FROM generate_series(1, %(n)s) AS i;
INSERT INTO ticket_followers SELECT i, 1 FROM generate_series(1, %(n)s) AS i;
-- B: nobody's and no team's, open, awake
INSERT INTO tickets (id, title, status_id, priority_id, created_by_id, created_at, updated_at,
                     sla_due_at)
SELECT 100000 + i, 'B', 1 + i %% 2, 1 + i %% 3, 2,
       %(base)s + (i / 2) * interval '1 minute', %(base)s + (i / 2) * interval '1 minute',
       CASE WHEN i %% 2 = 0 THEN NULL ELSE %(base)s END
FROM generate_series(1, %(n)s) AS i;
-- C: snoozed, open, somebody else's
INSERT INTO tickets (id, title, status_id, priority_id, assignee_id, created_by_id, team_id,
                     created_at, updated_at, snoozed_until)
SELECT 200000 + i, 'C', 3, 2, 2 + i %% 2, 2, 2, %(base)s, %(base)s, %(now)s + interval '1 day'
FROM generate_series(1, %(n)s) AS i;
-- D: closed within the past week
INSERT INTO tickets (id, title, status_id, priority_id, assignee_id, created_by_id, team_id,
                     created_at, updated_at, closed_at)
SELECT 300000 + i, 'D', 5 + i %% 2, 4, CASE WHEN i %% 3 = 0 THEN NULL ELSE 2 END, 2, 2,
       %(base)s - (i %% 13) * interval '1 minute', %(base)s,
       %(now)s - (i %% 17) * interval '1 hour'
FROM generate_series(1, %(n)s) AS i;
"""

EXPECTED = {
    "all": 4,
    "open": 2,
    "unassigned": 1,
    "my-tickets": 1,
    "created-by-me": 1,
    "team-tickets": 1,
    "following": 1,
    "overdue": 1,
    "snoozed": 1,
    "closed": 1,
    "recently-closed": 1,
}


@pytest.fixture(scope="module", params=SIZES, ids=[f"size{n}" for n in SIZES])
def sized_db(
    request: pytest.FixtureRequest, server_url: str, template_db: str
) -> Iterator[tuple[str, int]]:
    n: int = request.param
    with scratch_database(server_url, template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            base = datetime.datetime(2026, 3, 1, 5, 0, tzinfo=datetime.UTC)
            # psycopg sends several statements at once only without parameters; split them.
            for statement in FILL.split(";\n"):
                if statement.strip():
                    conn.execute(statement, {"n": n, "base": base, "now": NOW})
        yield url, n


@pytest.mark.parametrize("view", list(registry.BUILTIN_VIEWS))
async def test_every_page_of_every_sort(
    sized_db: tuple[str, int], view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, n = sized_db
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        # Priority, status and assignee pages of large views are read group by group;
        # the threshold -1 forces that plan on these small views too.
        plans = [(sort, service.GROUPED_MIN_ROWS) for sort in registry.SORTS]
        plans += [(sort, -1) for sort in ("priority", "status", "assignee")]
        for sort, threshold in plans:
            monkeypatch.setattr(service, "GROUPED_MIN_ROWS", threshold)
            unpaged_query = compiler.compile_list(
                builtin_view(view),
                parse_list_request({"view": view, "sort": sort}),
                ACTOR,
                now=NOW,
                tz=TZ,
            )
            width = len(unpaged_query.columns)
            unpaged = await (
                await conn.execute(unpaged_query.statement, unpaged_query.params)
            ).fetchall()
            unpaged_ids = [row[width] for row in unpaged]
            assert len(unpaged_ids) == EXPECTED[view] * n
            seen: list[int] = []
            rows: list[list[str]] = []
            page: str | None = None
            pages = 0
            while True:
                params = {"view": view, "sort": sort}
                if page:
                    params["page"] = page
                result = await list_page(conn, parse_list_request(params), ACTOR, now=NOW, tz=TZ)
                pages += 1
                assert len(result.rows) <= registry.PAGE_SIZE
                assert result.count == EXPECTED[view] * n
                if result.next_cursor is not None:
                    assert len(result.rows) == registry.PAGE_SIZE
                elif pages > 1:
                    assert result.rows, "a next link must never lead to an empty page"
                seen.extend(result.ticket_ids)
                rows.extend(result.rows)
                page = result.next_cursor
                if page is None:
                    break
            assert seen == unpaged_ids, f"{view} sorted by {sort}"
            assert len(set(seen)) == len(seen)
            assert rows == [list(row[:width]) for row in unpaged]
            assert pages == max(1, -(-len(unpaged_ids) // registry.PAGE_SIZE))


async def test_cursor_from_another_sort_is_rejected(sized_db: tuple[str, int]) -> None:
    url, n = sized_db
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        first = await list_page(conn, parse_list_request({"view": "all"}), ACTOR, now=NOW, tz=TZ)
        assert (first.next_cursor is not None) == (4 * n > registry.PAGE_SIZE)
        if first.next_cursor is None:
            # A view on one page has no next link; take the cursor its last row would give.
            shape = compiler.compile_list(
                builtin_view("all"), parse_list_request({}), ACTOR, now=NOW, tz=TZ
            )
            first = dataclasses.replace(first, next_cursor=cursor.encode(shape.signature, [NOW, 1]))
        assert first.next_cursor
        with pytest.raises(ViewInputError, match="another view or sort"):
            await list_page(
                conn,
                parse_list_request({"view": "all", "sort": "priority", "page": first.next_cursor}),
                ACTOR,
                now=NOW,
                tz=TZ,
            )
        with pytest.raises(ViewInputError, match="another view or sort"):
            await list_page(
                conn,
                parse_list_request({"view": "open", "page": first.next_cursor}),
                ACTOR,
                now=NOW,
                tz=TZ,
            )
