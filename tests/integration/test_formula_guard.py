"""The CSV's formula guard in PostgreSQL, cell by cell: a text a spreadsheet would evaluate
gets a leading quote, also behind the white space an import may trim; anything else is
written as it is, and a workbook's text cells never carry the guard. The independent
statement of the rule is reference_views.csv_guard."""

from __future__ import annotations

import csv
import datetime
import html
import io
from typing import Any

import psycopg

from tests.support import reference_views
from ticketexport.domain.actor import Actor
from ticketexport.exports import formats
from ticketexport.views import compiler
from ticketexport.views.model import ResolvedView, parse_definition
from ticketexport.views.service import parse_list_request

NOW = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC)
TITLES = {
    "equals": "=1+1",
    "plus": "+1",
    "minus": "-1",
    "at": "@SUM(A1)",
    "tab": "\t=1",
    "space then equals": " =1+1",
    "spaces then at": "   @x",
    "no-break space then plus": "\u00a0+1",
    "ideographic space then minus": "\u3000-1",
    "line feed": "\n1",
    "carriage return": "\r1",
    "space then text": "  plain",
    "equals inside": "a=1",
    "plain": "Printer",
}


UNGUARDED = {"space then text", "equals inside", "plain"}


def test_the_guard_cell_by_cell(conn: psycopg.Connection[Any]) -> None:
    for title in TITLES.values():
        conn.execute(
            "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
            "VALUES (%s, 1, 1, %s, %s)",
            (title, NOW, NOW),
        )
    definition = parse_definition(
        {
            "name": "Guarded",
            "conditions_and": [],
            "conditions_or": [],
            "columns": ["title", "id"],
            "sort": [{"column": "id", "direction": "asc"}],
        }
    )
    view = ResolvedView(
        key="1", name="Guarded", definition=definition, saved_view_id=1, builtin=None
    )
    actor = Actor(1, is_admin=False, permissions=0)  # type: ignore[arg-type]
    rows = compiler.compile_export(
        view, parse_list_request({"view": "1"}), actor, NOW, "UTC", snapshot=None
    ).rows
    selected = conn.execute(formats.CSV.select(rows)).fetchall()
    assert [row[1] for row in selected] == [str(n) for n in range(1, len(TITLES) + 1)]
    written = [row[0] for row in selected]
    for (case, title), cell in zip(TITLES.items(), written, strict=True):
        assert cell == reference_views.csv_guard(title), case
        assert cell.startswith("'") == (case not in UNGUARDED), case
    # The same cells through the worker's COPY statement: a header, then COPY's quoting.
    with conn.cursor().copy(formats.CSV.copy_statement(formats.CSV.select(rows))) as copy:
        data = b"".join(bytes(block) for block in copy).decode("utf-8")
    assert list(csv.reader(io.StringIO(data, newline=""))) == [["Title", "Ticket ID"]] + [
        list(row) for row in selected
    ]

    # A workbook holds text cells as they are: the guard is the CSV's alone.
    typed = compiler.compile_export(
        view, parse_list_request({"view": "1"}), actor, NOW, "UTC", snapshot=None, typed=True
    ).rows
    with conn.cursor().copy(formats.XLSX.copy_statement(formats.XLSX.select(typed))) as copy:
        sheet_rows = b"".join(bytes(block) for block in copy).decode("utf-8").splitlines()
    assert len(sheet_rows) == len(TITLES)
    for (case, title), row in zip(TITLES.items(), sheet_rows, strict=True):
        if "\n" not in title and "\r" not in title:  # line breaks are written escaped
            assert f">{html.escape(title, quote=False)}</t>" in row, (case, row)
