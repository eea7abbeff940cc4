"""Saved views in Postgres: who sees them, who edits them, and their stored definitions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ticketexport.db import q
from ticketexport.domain.actor import Actor
from ticketexport.domain.permissions import Permission
from ticketexport.views import registry
from ticketexport.views.model import (
    ViewDefinition,
    ViewInputError,
    ViewNotFound,
    definition_to_json,
    parse_definition,
)


@dataclasses.dataclass(frozen=True)
class SavedViewRow:
    id: int
    name: str
    owner_id: int | None
    system_wide: bool
    editable: bool


@dataclasses.dataclass(frozen=True)
class SavedView(SavedViewRow):
    definition: ViewDefinition


def can_manage_system_views(actor: Actor) -> bool:
    return bool(actor.permissions & Permission.MANAGE_SYSTEM_VIEWS)


def _editable(owner_id: int | None, actor: Actor) -> bool:
    return owner_id == actor.id if owner_id is not None else can_manage_system_views(actor)


async def list_saved_views(conn: psycopg.AsyncConnection[Any], actor: Actor) -> list[SavedViewRow]:
    """The actor's own views and the system-wide ones, system-wide first, by name."""
    cur = await conn.execute(q("views_saved_list"), {"user_id": actor.id})
    return [
        SavedViewRow(row[0], row[1], row[2], row[2] is None, _editable(row[2], actor))
        for row in await cur.fetchall()
    ]


async def get_saved_view(
    conn: psycopg.AsyncConnection[Any], view_id: int, actor: Actor
) -> SavedView:
    """One saved view the actor may see, or ViewNotFound."""
    cur = await conn.execute(q("views_saved_get"), {"id": view_id, "user_id": actor.id})
    row = await cur.fetchone()
    if row is None:
        raise ViewNotFound()
    definition = parse_definition(
        {
            "name": row[1],
            "conditions_and": row[3],
            "conditions_or": row[4],
            "columns": list(row[5]),
            "sort": row[6],
        }
    )
    return SavedView(row[0], row[1], row[2], row[2] is None, _editable(row[2], actor), definition)


async def _check_references(conn: psycopg.AsyncConnection[Any], d: ViewDefinition) -> None:
    """Names and ids in conditions must exist when the view is saved."""
    wanted: dict[registry.FieldType, set[Any]] = {}
    for c in (*d.conditions_and, *d.conditions_or):
        kind = registry.FIELDS[c.field].type
        op = registry.operator(kind, c.operator)
        if op is None or op.value_kind not in ("ids", "priority_ref"):
            continue
        values: Iterable[Any] = c.value if isinstance(c.value, list) else [c.value]
        wanted.setdefault(kind, set()).update(values)
    for kind, values in wanted.items():
        if kind is registry.FieldType.STATUS:
            cur = await conn.execute(q("views_statuses"))
            known: set[Any] = {row[0] for row in await cur.fetchall()}
            what = "status"
        elif kind is registry.FieldType.PRIORITY:
            cur = await conn.execute(q("views_priorities"))
            known = {row[0] for row in await cur.fetchall()}
            what = "priority"
        else:
            query = "views_known_teams" if kind is registry.FieldType.TEAM else "views_known_users"
            cur = await conn.execute(q(query), {"ids": sorted(values)})
            known = {row[0] for row in await cur.fetchall()}
            what = "team" if kind is registry.FieldType.TEAM else "user"
        missing = sorted(values - known, key=str)
        if missing:
            raise ViewInputError(f"unknown {what} {missing[0]!r} in the view's conditions")


def _row_params(d: ViewDefinition) -> dict[str, Any]:
    data = definition_to_json(d)
    return {
        "name": d.name,
        "conditions_and": Jsonb(data["conditions_and"]),
        "conditions_or": Jsonb(data["conditions_or"]),
        "columns": list(d.columns),
        "sort": Jsonb(data["sort"]),
    }


async def create_saved_view(
    conn: psycopg.AsyncConnection[Any],
    actor: Actor,
    definition: ViewDefinition,
    *,
    system_wide: bool,
) -> int:
    """Store a new view owned by the actor, or system-wide (needs Manage System Views)."""
    if system_wide and not can_manage_system_views(actor):
        raise PermissionError("system-wide views need the Manage System Views permission")
    await _check_references(conn, definition)
    params = _row_params(definition)
    params["owner_id"] = None if system_wide else actor.id
    params["created_by_id"] = actor.id
    cur = await conn.execute(q("views_saved_insert"), params)
    row = await cur.fetchone()
    assert row is not None  # INSERT … RETURNING always yields the new row
    return int(row[0])


async def _editable_view(
    conn: psycopg.AsyncConnection[Any], actor: Actor, view_id: int
) -> SavedView:
    view = await get_saved_view(conn, view_id, actor)
    if not view.editable:
        raise PermissionError(
            "changing a system-wide view needs the Manage System Views permission"
        )
    return view


async def update_saved_view(
    conn: psycopg.AsyncConnection[Any],
    actor: Actor,
    view_id: int,
    definition: ViewDefinition,
    *,
    system_wide: bool,
) -> None:
    """Replace a view's definition; making it (or keeping it) system-wide needs permission 256."""
    view = await _editable_view(conn, actor, view_id)
    if (system_wide or view.system_wide) and not can_manage_system_views(actor):
        raise PermissionError("system-wide views need the Manage System Views permission")
    await _check_references(conn, definition)
    params = _row_params(definition)
    params["id"] = view_id
    # A private view keeps its owner; a system view made private becomes the actor's.
    params["owner_id"] = None if system_wide else (view.owner_id or actor.id)
    await conn.execute(q("views_saved_update"), params)


async def delete_saved_view(conn: psycopg.AsyncConnection[Any], actor: Actor, view_id: int) -> None:
    """Delete a view the actor may edit."""
    await _editable_view(conn, actor, view_id)
    await conn.execute(q("views_saved_delete"), {"id": view_id})
