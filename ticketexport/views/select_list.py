"""The select list: each column's displayed value and typed value as SQL."""

from __future__ import annotations

from psycopg import sql

from ticketexport.views.columns import COLUMNS
from ticketexport.views.scope import Context

# Display text of each column ------------------------------------------------------------


def display(column: str, ctx: Context) -> sql.Composable:
    """The SQL text expression for one column's displayed value ('' for empty)."""
    declared = COLUMNS[column]
    ctx.joins.update(declared.joins)
    return declared.display(ctx)


def typed_value(column: str, ctx: Context) -> sql.Composable:
    """The SQL of one column's typed value (columns.Column.value), its display where it has
    none."""
    declared = COLUMNS[column]
    if declared.value is None:
        return display(column, ctx)
    ctx.joins.update(declared.joins)
    return declared.value(ctx)
