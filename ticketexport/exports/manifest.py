"""The manifest of a completed export: what its file holds, its size and SHA-256, and for CSV
a CSV on the Web (CSVW) table description so CSVW tools read the file typed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ticketexport.exports import formats
from ticketexport.exports.frozen import FrozenRequest
from ticketexport.exports.store import Export
from ticketexport.views import model as view_model
from ticketexport.views.columns import COLUMNS, Column
from ticketexport.views.compiler import changes_columns

CSVW_CONTEXT = "http://www.w3.org/ns/csvw"
# The CSV's timestamps, YYYY-MM-DDTHH:MM:SS±HH:MM, in CSVW's date format pattern.
CSV_TIMESTAMP_FORMAT = "yyyy-MM-ddTHH:mm:ssXXX"


def _type(column: Column, export_format: str) -> str:
    """How this format's file holds the column's values."""
    kind = column.value_type
    if kind == "integer":
        return "integer"
    if kind == "timestamp":
        return "datetime"
    # A spreadsheet holds booleans as the Yes/No text the CSV shows.
    if kind == "boolean" and export_format != "xlsx":
        return "boolean"
    return "string"


def _csvw_datatype(column: Column) -> str | dict[str, str]:
    kind = column.value_type
    if kind == "integer":
        return "integer"
    if kind == "timestamp":
        return {"base": "dateTimeStamp", "format": CSV_TIMESTAMP_FORMAT}
    if kind == "boolean":
        return {"base": "boolean", "format": "Yes|No"}
    return "string"


def columns_of(frozen: FrozenRequest) -> tuple[Column, ...]:
    """The file's columns, in order: the frozen view definition's; a file of changes puts
    Change, and Ticket ID when the view lacks it, before them."""
    definition = view_model.parse_definition(frozen.view.definition)
    if frozen.since is None:
        return tuple(COLUMNS[key] for key in definition.columns)
    return changes_columns(definition.columns)


def csvw(file_name: str, columns: tuple[Column, ...]) -> dict[str, Any]:
    """A CSVW table description of the CSV file: its dialect (UTF-8 with a BOM, one header
    row, LF line ends) and its columns with their titles and datatypes. An empty cell is
    null, as the CSV writes an empty value."""
    return {
        "@context": CSVW_CONTEXT,
        "url": file_name,
        "dialect": {
            "encoding": "utf-8",
            "header": True,
            "headerRowCount": 1,
            "delimiter": ",",
            "quoteChar": '"',
            "doubleQuote": True,
            "lineTerminators": ["\n"],
            "skipInitialSpace": False,
        },
        "tableSchema": {
            "columns": [
                {
                    "name": column.key,
                    "titles": column.label,
                    "datatype": _csvw_datatype(column),
                    "null": "",
                }
                for column in columns
            ],
        },
    }


def _instant(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build(export: Export) -> dict[str, Any]:
    """The manifest of a completed export (its file recorded)."""
    if export.file is None:
        raise ValueError("an export without a file has no manifest")
    frozen = export.frozen
    columns: tuple[Column, ...] = ()
    if frozen is not None:
        try:
            columns = columns_of(frozen)
        except (view_model.ViewInputError, KeyError):
            # A view definition this code did not write: no columns claimed.
            columns = ()
    export_format = formats.recorded(export.format).key
    request: dict[str, Any] | None = None
    if frozen is not None:
        request = {
            "view": frozen.view.key,
            "view_name": frozen.view.name,
            "q": frozen.q,
            "sort": frozen.sort,
            "filters": dict(frozen.filters),
            "columns": [column.key for column in columns],
            "timezone": frozen.timezone,
            "format": export_format,
            "since": frozen.since.export_id if frozen.since else None,
        }
    manifest: dict[str, Any] = {
        "export_id": export.id,
        "view": frozen.view.key if frozen else None,
        "request": request,
        "format": export_format,
        "file_name": export.file.name,
        "bytes": export.file.size_bytes,
        "sha256": export.file.sha256,
        "rows": export.rows_done,
        "as_of": _instant(export.as_of),
        "requested_at": _instant(export.requested_at),
        "completed_at": _instant(export.finished_at),
        # The earlier export a file of changes is measured from.
        "since": frozen.since.export_id if frozen and frozen.since else None,
        "columns": [
            {"name": column.key, "label": column.label, "type": _type(column, export_format)}
            for column in columns
        ],
    }
    if export_format == "csv":
        manifest["csvw"] = csvw(export.file.name, columns)
    return manifest
