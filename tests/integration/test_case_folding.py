"""Case-insensitive matching, case by case, for the characters where lower-casing is not
obvious: İ and ı, ß and ẞ, Σ with σ and the final ς. Each character's simple lower case,
one character never two, ς folded to σ; the search and a text condition must agree with
the independent reference (tests/support/reference_views.py)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.support import reference_views
from ticketexport.domain.actor import Actor
from ticketexport.views import saved
from ticketexport.views.model import parse_definition
from ticketexport.views.service import list_page, parse_list_request

NOW = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
ME = Actor(1, is_admin=False, permissions=0)
TITLES = ["İstanbul office", "ıspanak order", "Straße 5", "GROẞE box", "ΟΔΟΣ sign", "λόγος"]

# (query, the titles it finds)
CASES = {
    "dotted capital I finds i": ("istanbul", ["İstanbul office"]),
    "dotted capital I is i": ("İSTANBUL", ["İstanbul office"]),
    "capital I is not dotless ı": ("ISPANAK", []),
    "dotless ı finds itself": ("ıSPANAK", ["ıspanak order"]),
    "ß finds ß": ("STRAßE", ["Straße 5"]),
    "ss never finds ß": ("strasse", []),
    "capital ẞ is ß": ("große", ["GROẞE box"]),
    "ß finds capital ẞ": ("GROßE", ["GROẞE box"]),
    "SS never finds ẞ": ("GROSSE", []),
    "σ finds Σ": ("οδοσ", ["ΟΔΟΣ sign"]),
    "final ς finds Σ": ("οδος", ["ΟΔΟΣ sign"]),
    "Σ finds final ς": ("ΛΌΓΟΣ", ["λόγος"]),
    "σ finds final ς": ("λόγοσ", ["λόγος"]),
}


@pytest.fixture
async def aconn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO users (id, email, first_name, last_name, password_hash) "
            "VALUES (1, 'me@example.test', 'Me', '', 'x')"
        )
        for title in TITLES:
            await conn.execute(
                "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
                "VALUES (%s, 1, 1, %s, %s)",
                (title, NOW, NOW),
            )
        yield conn


async def _titles(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> list[str]:
    cur = await conn.execute("SELECT title FROM tickets WHERE id = ANY(%s) ORDER BY id", (ids,))
    return [row[0] for row in await cur.fetchall()]


@pytest.mark.parametrize(("query", "found"), list(CASES.values()), ids=list(CASES))
async def test_search_and_contains_fold_case_one_character_at_a_time(
    aconn: psycopg.AsyncConnection[Any], query: str, found: list[str]
) -> None:
    # The reference says the same, so the two statements of the rule agree here too.
    assert [t for t in TITLES if reference_views.fold(query) in reference_views.fold(t)] == found
    searched = await list_page(
        aconn, parse_list_request({"view": "all", "q": query}), ME, now=NOW, tz="UTC"
    )
    assert await _titles(aconn, searched.ticket_ids) == found
    definition = parse_definition(
        {
            "name": "Folded",
            "conditions_and": [{"field": "title", "operator": "contains", "value": query}],
            "conditions_or": [],
            "columns": ["id", "title"],
            "sort": [{"column": "id", "direction": "asc"}],
        }
    )
    view_id = await saved.create_saved_view(aconn, ME, definition, system_wide=False)
    conditioned = await list_page(
        aconn, parse_list_request({"view": str(view_id)}), ME, now=NOW, tz="UTC"
    )
    assert await _titles(aconn, conditioned.ticket_ids) == found
