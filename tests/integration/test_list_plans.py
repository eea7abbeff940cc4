"""The list page's other plans (followed tickets first, team by team groups) give the plain plan's
rows, order and counts, with filters, search and keyset cursors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import view_data
from tests.support.databases import scratch_database
from ticketexport.domain.actor import Actor
from ticketexport.views import compiler, cursor, registry
from ticketexport.views.service import builtin_view, parse_list_request

PAGE = 7  # small pages, so every view here spans several cursors
VARIANTS: list[dict[str, str]] = [
    {},
    {"snoozed": "any"},
    {"snoozed": "only"},
    {"type": "closed"},
    {"status": "pending"},
    {"priority": "high"},
    {"assignee": "none"},
    {"q": "a"},
]


@pytest.fixture(scope="module")
def dataset(server_url: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    with (
        scratch_database(server_url, template_db) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        with conn.transaction():
            view_data.build(conn)
        yield conn


def plain_ids(
    conn: psycopg.Connection[Any], view: str, params: dict[str, str], actor: Actor
) -> list[int]:
    """Every row of the view in order, by the plain plan (no limit: what the export runs)."""
    compiled = compiler.compile_list(
        builtin_view(view),
        parse_list_request({"view": view, **params}),
        actor,
        now=view_data.NOW,
        tz=view_data.TZ,
    )
    rows = conn.execute(compiled.statement, compiled.params).fetchall()
    return [int(row[len(compiled.columns)]) for row in rows]


def paged_ids(
    conn: psycopg.Connection[Any],
    view: str,
    params: dict[str, str],
    actor: Actor,
    *,
    grouped: bool,
    followed_first: bool = False,
) -> list[int]:
    """Every row of the view in order, page by page through keyset cursors."""
    request = parse_list_request({"view": view, **params})
    ids: list[int] = []
    after = None
    while True:
        compiled = compiler.compile_list(
            builtin_view(view),
            request,
            actor,
            now=view_data.NOW,
            tz=view_data.TZ,
            after=after,
            limit=PAGE + 1,
            grouped=grouped,
            followed_first=followed_first,
        )
        rows = conn.execute(compiled.statement, compiled.params).fetchall()
        width = len(compiled.columns)
        ids.extend(int(row[width]) for row in rows[:PAGE])
        if len(rows) <= PAGE:
            return ids
        token = cursor.encode(compiled.signature, rows[PAGE - 1][width + 1 :])
        after = cursor.decode(token, compiled.signature, compiled.key_kinds)


def counted(conn: psycopg.Connection[Any], view: str, params: dict[str, str], actor: Actor) -> int:
    statement, bound = compiler.compile_count(
        builtin_view(view),
        parse_list_request({"view": view, **params}),
        actor,
        now=view_data.NOW,
        tz=view_data.TZ,
    )
    row = conn.execute(statement, bound).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("view", ["following", "team-tickets"])
@pytest.mark.parametrize("user_id", [1, 2, 5])
def test_other_plans_give_the_plain_rows(
    dataset: psycopg.Connection[Any], view: str, user_id: int
) -> None:
    actor = Actor(user_id, is_admin=False, permissions=0)
    sizes = {}
    for params in VARIANTS:
        for sort in registry.SORTS:
            with_sort = {**params, "sort": sort}
            expected = plain_ids(dataset, view, with_sort, actor)
            assert len(set(expected)) == len(expected)
            sizes[tuple(params.items())] = len(expected)
            assert counted(dataset, view, with_sort, actor) == len(expected), with_sort
            for grouped in (False, True):
                for followed_first in (False, True):
                    paged = paged_ids(
                        dataset,
                        view,
                        with_sort,
                        actor,
                        grouped=grouped,
                        followed_first=followed_first,
                    )
                    assert paged == expected, (with_sort, grouped, followed_first)
    # The data exercises what the other plans leave out or add: snoozed and closed tickets.
    assert sizes[()] > PAGE
    assert sizes[(("snoozed", "any"),)] > sizes[()]
    assert sizes[(("snoozed", "only"),)] > 0
