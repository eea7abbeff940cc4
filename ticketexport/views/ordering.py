"""A view's order as SQL: the sort levels, their keys, and the keyset after a page's last
row."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ticketexport.views.columns import COLUMNS, KeyKind, SortKey
from ticketexport.views.model import ResolvedView, SortLevel
from ticketexport.views.scope import Cast, Context

# Sorting --------------------------------------------------------------------------------

_NAMED_SORTS: dict[str, tuple[SortLevel, ...]] = {
    "newest": (SortLevel("created_at", True),),
    "oldest": (SortLevel("created_at", False),),
    "priority": (SortLevel("priority", False), SortLevel("created_at", True)),
    "status": (SortLevel("status", False), SortLevel("created_at", True)),
    "assignee": (SortLevel("assignee", False), SortLevel("created_at", True)),
    "sla": (SortLevel("sla_due_at", False),),
}


def sort_levels(view: ResolvedView, sort: str | None) -> tuple[SortLevel, ...]:
    """The levels of the chosen sort, ending with the ticket id (same direction as the last)."""
    levels = view.definition.sort if sort in (None, "view") else _NAMED_SORTS[sort]
    if levels[-1].column != "id" and all(level.column != "id" for level in levels):
        levels = (*levels, SortLevel("id", levels[-1].descending))
    return levels


def _keys_for(level: SortLevel, ctx: Context) -> list[SortKey]:
    column = COLUMNS[level.column]
    assert column.sort is not None  # a view's sort levels are sortable columns (model.py)
    ctx.joins.update(column.joins)
    return column.sort(ctx, column.display, level.descending)


def sort_keys(levels: tuple[SortLevel, ...], ctx: Context) -> list[SortKey]:
    keys: list[SortKey] = []
    for level in levels:
        keys.extend(_keys_for(level, ctx))
    return keys


_KEY_CASTS: dict[KeyKind, Cast] = {
    "ts": "timestamptz",
    "int": "bigint",
    "text": "text",
    "bool": "text",
}


def bind_key(key: SortKey, value: Any, ctx: Context) -> sql.Composable:
    if key.kind == "bool":
        return sql.SQL("{}::boolean").format(sql.Literal(bool(value)))
    bound = ctx.bind(value, _KEY_CASTS[key.kind])
    if key.kind == "text":
        return sql.SQL('({} COLLATE "C")').format(bound)
    return bound


def keyset_after(keys: list[SortKey], values: tuple[Any, ...], ctx: Context) -> sql.Composable:
    """Rows strictly after the row whose sort key values are `values`, in the keys' order."""
    bound = [bind_key(k, v, ctx) for k, v in zip(keys, values, strict=True)]
    if len({k.descending for k in keys}) == 1:
        # One direction: a row comparison, which a matching btree index answers as a range.
        return sql.SQL("(({}) {} ({}))").format(
            sql.SQL(", ").join(k.expr for k in keys),
            sql.SQL("<" if keys[0].descending else ">"),
            sql.SQL(", ").join(bound),
        )
    clause: sql.Composable | None = None
    for key, value in reversed(list(zip(keys, bound, strict=True))):
        beyond = sql.SQL("({} {} {})").format(
            key.expr, sql.SQL("<" if key.descending else ">"), value
        )
        if clause is None:
            clause = beyond
        else:
            clause = sql.SQL("({} OR ({} = {} AND {}))").format(beyond, key.expr, value, clause)
    assert clause is not None  # there is always at least the id key
    first, first_value = keys[0], bound[0]
    # The redundant leading bound lets the planner use an index range on the first key.
    return sql.SQL("({} {} {} AND {})").format(
        first.expr, sql.SQL("<=" if first.descending else ">="), first_value, clause
    )
