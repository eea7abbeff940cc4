"""Promise 1 end to end: a real worker process's CSV equals every page of the list."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.exports import (
    ADMIN,
    TIMEZONE,
    Exported,
    Exporter,
    admin_actor,
    guard,
    list_everything,
    seeded_database,
    unguard,
    walk_list_pages,
    worker_log,
    worker_process,
)
from tests.support.web import exporting_web
from ticketexport.domain.actor import Actor
from ticketexport.views import registry
from ticketexport.views import saved as saved_views
from ticketexport.views.model import parse_definition

pytestmark = pytest.mark.slow

SIZES = (0, 1, 50, 999, 1000, 1001, 10_000)
SORTS = tuple(registry.SORTS)
# Big enough that every built-in view has rows to compare and several list pages.
VIEWS_TICKETS = 1500
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+05:30$")


async def _assert_equals_list(web: Any, actor: Actor, exported: Exported) -> list[list[str]]:
    """The file against the list service's pages at the export's as-of instant."""
    request = exported.row["request"]
    assert request["timezone"] == TIMEZONE
    labels, listed = await list_everything(
        web.pool, exported.params, actor, now=exported.row["as_of"]
    )
    rows = exported.rows
    context = f"export {exported.export_id} of {exported.params}"
    assert rows[0] == labels, context
    assert len(rows) - 1 == len(listed), context
    expected = [[guard(value) for value in row] for row in listed]
    for number, (got, want) in enumerate(zip(rows[1:], expected, strict=True), start=1):
        assert got == want, f"{context}: data row {number} differs"
    assert exported.row["rows_done"] == exported.row["rows_total"] == len(listed)
    assert exported.row["size_bytes"] == len(exported.data)
    assert exported.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert exported.headers["Content-Disposition"].startswith("attachment; ")
    return listed


def _unguarded(rows: list[list[str]]) -> list[list[str]]:
    return [[unguard(v) for v in r] for r in rows]


def _shrink_to(url: str, size: int) -> None:
    """Deletes tickets (for real, as the product does) until exactly `size` remain.

    Scattered ids go, not the newest or oldest, so the remaining rows keep gaps and every
    sort still has ties to break."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM tickets WHERE id IN (SELECT id FROM tickets "
            "ORDER BY md5(id::text) LIMIT greatest(0, (SELECT count(*) FROM tickets) - %s))",
            (size,),
        )
        count = conn.execute("SELECT count(*) FROM tickets").fetchone()
    assert count == (size,)


# Each group is one seeded database, one worker process and one app: the first size is
# seeded, the next ones are reached by deleting tickets in between.
SIZE_GROUPS = ((50, 1, 0), (1001, 1000, 999), (10_000,))
assert sorted(s for group in SIZE_GROUPS for s in group) == sorted(SIZES)


@pytest.mark.parametrize("sizes", SIZE_GROUPS, ids=lambda group: "-".join(map(str, group)))
async def test_all_view_every_sort_equals_the_list(
    server_url: str, template_db: str, tmp_path: Path, sizes: tuple[int, ...]
) -> None:
    home = tmp_path / "home"
    with (
        seeded_database(server_url, template_db, sizes[0]) as url,
        worker_process(url, home) as worker,
    ):
        actor = admin_actor(url)
        async with exporting_web(
            url, home, timezone=TIMEZONE, email=ADMIN.email, password=ADMIN.password
        ) as web:
            exporter = Exporter(web)
            for size in sizes:
                _shrink_to(url, size)
                try:
                    exported = await exporter.export_many(
                        [{"view": "all", "sort": sort} for sort in SORTS]
                    )
                except (AssertionError, TimeoutError):
                    pytest.fail(f"export did not complete; worker log:\n{worker_log(home)}")
                assert worker.poll() is None, worker_log(home)
                listed = await asyncio.gather(
                    *(_assert_equals_list(web, actor, one) for one in exported)
                )
                assert [len(rows) for rows in listed] == [size] * len(SORTS)
                files = {one.params["sort"]: one.rows for one in exported}
                _check_orders(files, size)
                # The pages as a browser gets them, for one sort per size (not 200 pages
                # × 7 sorts at 10,000): same rows and order, raw where the file guards.
                if size <= 1001:
                    sort = SORTS[SIZES.index(size) % len(SORTS)]
                    labels, shown, pages = await walk_list_pages(
                        web, urllib.parse.urlencode({"view": "all", "sort": sort})
                    )
                    assert pages == max(1, -(-size // 50))
                    assert [labels, *shown] == [files[sort][0], *_unguarded(files[sort][1:])]


def _check_orders(files: dict[str, list[list[str]]], size: int) -> None:
    """Facts about the files that do not lean on the list service at all."""
    # 'view' on a built-in view is the view's own order: newest first.
    assert files["view"] == files["newest"]
    header = files["newest"][0]
    assert all(rows[0] == header for rows in files.values())
    if not size:
        return
    ids = [int(row[0]) for row in files["newest"][1:]]
    assert len(set(ids)) == size
    for sort, rows in files.items():
        assert sorted(int(row[0]) for row in rows[1:]) == sorted(ids), sort
    at = header.index("Created")
    created = [row[at] for row in files["newest"][1:]]
    assert all(_TIMESTAMP.match(value) for value in created), created[:3]
    # Same offset everywhere, so the text orders like the instant.
    assert created == sorted(created, reverse=True)
    oldest = [row[at] for row in files["oldest"][1:]]
    assert oldest == sorted(oldest)


SAVED_VIEWS: tuple[tuple[bool, dict[str, Any]], ...] = (
    (
        False,
        {
            "name": "Open urgent work — описание",
            "conditions_and": [
                {"field": "status", "operator": "type_is", "value": "open"},
                {"field": "priority", "operator": "any_of", "value": ["urgent", "high"]},
            ],
            "columns": [
                "id",
                "title",
                "description",
                "tags",
                "tasks",
                "snoozed_until",
                "priority",
                "assignee",
            ],
            "sort": [
                {"column": "priority", "direction": "asc"},
                {"column": "created_at", "direction": "desc"},
            ],
        },
    ),
    (
        False,
        {
            "name": "Formula-looking or printers",
            "conditions_or": [
                {"field": "title", "operator": "starts_with", "value": "="},
                {"field": "description", "operator": "contains", "value": "printer"},
                {"field": "tags", "operator": "contains", "value": "vpn"},
                {"field": "description", "operator": "starts_with", "value": "+"},
                {"field": "description", "operator": "starts_with", "value": "-"},
                {"field": "description", "operator": "starts_with", "value": "@"},
            ],
            "columns": [
                "title",
                "tags",
                "description",
                "created_by",
                "sla_due_at",
                "sla_status",
                "updated_at",
                "closed_at",
                "snoozed",
                "language",
                "category",
                "contact_id",
                "contact",
                "id",
            ],
            "sort": [
                {"column": "team", "direction": "asc"},
                {"column": "assignee", "direction": "desc"},
                {"column": "sla_due_at", "direction": "asc"},
                {"column": "title", "direction": "desc"},
            ],
        },
    ),
    (
        True,
        {
            "name": "Everything, six levels",
            "conditions_and": [
                {
                    "field": "created_at",
                    "operator": "within_past",
                    "value": {"amount": 400, "unit": "days"},
                }
            ],
            "conditions_or": [
                {"field": "has_tasks", "operator": "is_true", "value": None},
                {"field": "sla_breached", "operator": "is_true", "value": None},
                {"field": "snoozed", "operator": "is_true", "value": None},
            ],
            "columns": [k for k in registry.COLUMNS if k != "contact_id"],
            "sort": [
                {"column": "status", "direction": "asc"},
                {"column": "priority", "direction": "desc"},
                {"column": "language", "direction": "asc"},
                {"column": "category", "direction": "desc"},
                {"column": "snoozed_until", "direction": "asc"},
                {"column": "created_at", "direction": "asc"},
            ],
        },
    ),
    (
        False,
        {
            "name": "Unowned or closed recently",
            "conditions_and": [{"field": "assignee", "operator": "is_empty", "value": None}],
            "conditions_or": [
                {"field": "team", "operator": "is_empty", "value": None},
                {"field": "closed_at", "operator": "preset", "value": "last_month"},
                {"field": "tags", "operator": "is_not_empty", "value": None},
            ],
            "columns": ["id", "tags", "tasks", "snoozed_until", "description", "closed_at"],
            "sort": [
                {"column": "tags", "direction": "desc"},
                {"column": "closed_at", "direction": "asc"},
            ],
        },
    ),
)


def _adjust_seed(url: str) -> None:
    """Seeded timestamps spread over two years and every open ticket has an owner: a few
    closings inside the past week and a few unowned open tickets give 'Recently closed'
    and 'Unassigned' rows to compare."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tickets SET assignee_id = NULL, team_id = NULL "
            "WHERE id IN (SELECT t.id FROM tickets t "
            "  JOIN ticket_statuses s ON s.id = t.status_id "
            "  WHERE s.status_type = 'open' ORDER BY md5(t.id::text) LIMIT 60)"
        )
        conn.execute(
            "UPDATE tickets SET closed_at = now() - make_interval(hours => (id % 200)::int), "
            "updated_at = greatest(updated_at, now() - make_interval(hours => (id % 200)::int)) "
            "WHERE id IN (SELECT t.id FROM tickets t "
            "  JOIN ticket_statuses s ON s.id = t.status_id "
            "  WHERE s.status_type = 'closed' AND t.created_at < now() - interval '10 days' "
            "  ORDER BY t.id LIMIT 40)"
        )


async def _create_saved_views(web: Any, actor: Actor) -> list[str]:
    ids = []
    async with web.pool.connection() as conn:
        for system_wide, data in SAVED_VIEWS:
            view_id = await saved_views.create_saved_view(
                conn, actor, parse_definition(data), system_wide=system_wide
            )
            ids.append(str(view_id))
    return ids


async def test_every_view_equals_the_list(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with (
        seeded_database(server_url, template_db, VIEWS_TICKETS, seed_value=5) as url,
        worker_process(url, home) as worker,
    ):
        _adjust_seed(url)
        actor = admin_actor(url)
        async with exporting_web(
            url, home, timezone=TIMEZONE, email=ADMIN.email, password=ADMIN.password
        ) as web:
            saved_ids = await _create_saved_views(web, actor)
            requests: list[dict[str, str]] = [{"view": key} for key in registry.BUILTIN_VIEWS]
            for index, view_id in enumerate(saved_ids):
                requests.append({"view": view_id, "sort": "view"})
                requests.append({"view": view_id, "sort": SORTS[index % 6]})
            requests += [
                {"view": "open", "priority": "high", "snoozed": "any", "sort": "assignee"},
                {"view": "all", "q": "printer", "sort": "oldest"},
                {"view": "all", "type": "closed", "assignee": "none", "sort": "status"},
                {"view": saved_ids[2], "q": "Ü", "sort": "sla"},
                {"view": saved_ids[0], "q": "😀", "sort": "priority"},
                {"view": saved_ids[1], "q": "Принтер", "sort": "newest"},
            ]
            try:
                exported = await Exporter(web).export_many(requests)
            except (AssertionError, TimeoutError):
                pytest.fail(f"export did not complete; worker log:\n{worker_log(home)}")
            assert worker.poll() is None, worker_log(home)
            sizes: dict[str, int] = {}
            for one in exported:
                listed = await _assert_equals_list(web, actor, one)
                sizes[urllib.parse.urlencode(one.params)] = len(listed)
            # Every built-in view and saved view has rows here, so order is really tested
            # (the emptiness of the small ones is covered by the sizes test).
            empty = [key for key, n in sizes.items() if n == 0]
            assert not empty, sizes
            # Every guarded first character reaches a file at least once.
            everything = [v for one in exported for row in one.rows[1:] for v in row]
            for first in "=+-@":
                assert any(v.startswith("'" + first) for v in everything), first
            # The saved views' pages in the browser: the file is what they show.
            for view_id in saved_ids[:2]:
                file_rows = next(
                    one.rows for one in exported if one.params == {"view": view_id, "sort": "view"}
                )
                labels, shown, _ = await walk_list_pages(
                    web, urllib.parse.urlencode({"view": view_id, "sort": "view"})
                )
                assert [labels, *shown] == [file_rows[0], *_unguarded(file_rows[1:])]
