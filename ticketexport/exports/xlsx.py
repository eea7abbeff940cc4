"""The parts of an XLSX workbook: one worksheet whose rows PostgreSQL renders as XML.

Each exported row leaves COPY as one line holding its whole `<row>` element, so the worker
only counts lines and compresses; no Python code touches a cell. What the cells hold:

- integer columns (Ticket ID, Contact ID): number cells;
- timestamp columns: number cells holding the organisation's wall-clock time as an Excel
  serial (days since 1899-12-30), to the second, styled `yyyy-mm-dd hh:mm:ss`;
- everything else (booleans as Yes/No, tags, Tasks): inline string cells holding the text
  the list shows. A typed string cell is never evaluated, so there is no formula guard.
- empty values: no cell.

XML 1.0 cannot hold the control characters U+0001–U+0008, U+000B, U+000C, U+000E–U+001F,
nor U+FFFE and U+FFFF: they are removed from the text (PostgreSQL text never holds
U+0000). CR and LF are written as character references so that XML parsers keep them and
each row stays one COPY line. Every underscore that starts what looks like Office's own
escape of a character (`_x0041_`) is escaped (`_x005F_x0041_`), as Excel writes it, so
that it reads back as written; runs that share an underscore (`_x0041_x0007_`) included.

Excel holds at most 32,767 characters (UTF-16 code units) in a cell and offers to repair a
workbook holding more, so longer text is cut to fit and ends with `CUT_MARKER`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from psycopg import sql

from ticketexport.views.compiler import Compiled, aliased, order_by_keys
from ticketexport.views.registry import Column

# Rows per worksheet: 1,048,576 in Excel and LibreOffice, one of them the header.
MAX_ROWS = 1_048_575
SHEET = "xl/worksheets/sheet1.xml"

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

# Cell styles (cellXfs in styles.xml): 1 the date-time format, 2 the bold header.
_DATE_STYLE = 1
_HEADER_STYLE = 2

CONTENT_TYPES = (
    _XML + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    "</Types>"
).encode()

ROOT_RELS = (
    _XML + f'<Relationships xmlns="{_PKG_REL}">'
    f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
).encode()

WORKBOOK_RELS = (
    _XML + f'<Relationships xmlns="{_PKG_REL}">'
    f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_REL}/styles" Target="styles.xml"/>'
    "</Relationships>"
).encode()

STYLES = (
    _XML + f'<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>'
    '<fonts count="2">'
    '<font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    "</fonts>"
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3">'
    '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
).encode()

# What XML 1.0 cannot hold (PostgreSQL text never holds U+0000).
FORBIDDEN = "".join(
    [*map(chr, range(0x01, 0x09)), "\x0b", "\x0c", *map(chr, range(0x0E, 0x20)), "\ufffe\uffff"]
)
_FORBIDDEN_RE = re.compile(f"[{re.escape(FORBIDDEN)}]")
_FORBIDDEN_CLASS = sql.Literal(f"[{FORBIDDEN}]")
# The most UTF-16 code units Excel holds in a cell, and what ends a text cut to fit.
CELL_LIMIT = 32_767
CUT_MARKER = " [… cut at 32,767 characters]"
# Only text longer than this many bytes can exceed the limit (a character is at most two
# UTF-16 units and at least one byte): octet_length() is a cheap first look.
_CUT_BYTES = CELL_LIMIT // 2
# A character outside the Basic Multilingual Plane takes two UTF-16 units, and a character
# PostgreSQL text never holds beside it (U+FFFF, also dropped as XML cannot hold it) stands
# for the second; see _cut.
_ASTRAL = "[\U00010000-\U0010ffff]"
_SECOND_UNIT = "\uffff"

# Excel's sheet-name rules: 1–31 characters, none of these, no apostrophe at either end.
_SHEET_NAME_DROP = re.compile(r"[:\\/?*\[\]]")
SHEET_NAME_MAX = 31


def column_letters(index: int) -> str:
    """A, B, …, Z, AA, … for the 0-based column `index`."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def sheet_name(view_name: str) -> str:
    """The view's name as Excel accepts a sheet name: forbidden characters become spaces,
    at most 31 UTF-16 units (Excel counts those), no apostrophe at either end, never empty
    and never the reserved "History"."""
    name = _SHEET_NAME_DROP.sub(" ", _FORBIDDEN_RE.sub("", view_name))
    name = " ".join(name.split())
    while len(name.encode("utf-16-le")) > 2 * SHEET_NAME_MAX:
        name = name[:-1]
    name = name.strip().strip("'").strip()
    if not name or name.casefold() == "history":
        return "Tickets"
    return name


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a file shows besides the rows: the view's name, the columns, and the
    organisation's time zone (a typed format's timestamps carry it)."""

    title: str
    columns: Sequence[Column]
    timezone: str = "UTC"


def _width(column: Column) -> float:
    # Widths are in characters of the default font; the header needs room for its filter
    # button. Declared per column (views/columns.py), so the file is read only once.
    return float(max(column.width, len(column.label) + 4))


def sheet_head(layout: Layout) -> bytes:
    """The worksheet up to and including the header row: frozen first row, column widths."""
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{_width(c):g}" customWidth="1"/>'
        for i, c in enumerate(layout.columns, start=1)
    )
    header = "".join(
        f'<c r="{column_letters(i)}1" t="inlineStr" s="{_HEADER_STYLE}"><is><t>'
        f"{escape(c.label)}</t></is></c>"
        for i, c in enumerate(layout.columns)
    )
    return (
        _XML + f'<worksheet xmlns="{_MAIN}" xmlns:r="{_REL}">'
        '<sheetViews><sheetView tabSelected="1" workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
        "</sheetView></sheetViews>"
        '<sheetFormatPr defaultRowHeight="15"/>'
        f"<cols>{cols}</cols>"
        f'<sheetData><row r="1">{header}</row>\n'
    ).encode()


def _range(layout: Layout, rows: int) -> str:
    last = column_letters(max(len(layout.columns), 1) - 1)
    return f"A1:{last}{rows + 1}"


def sheet_tail(layout: Layout, rows: int) -> bytes:
    """The worksheet after its last row: the autofilter over the header and every row."""
    return f'</sheetData><autoFilter ref="{_range(layout, rows)}"/></worksheet>'.encode()


def workbook(layout: Layout, rows: int) -> bytes:
    """The workbook part: its one sheet and the autofilter's hidden defined name."""
    name = sheet_name(layout.title)
    last = column_letters(max(len(layout.columns), 1) - 1)
    quoted = "'" + name.replace("'", "''") + "'"
    reference = escape(f"{quoted}!$A$1:${last}${rows + 1}")
    return (
        _XML + f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
        "<bookViews><workbookView/></bookViews>"
        f'<sheets><sheet name={quoteattr(name)} sheetId="1" r:id="rId1"/></sheets>'
        '<definedNames><definedName name="_xlnm._FilterDatabase" localSheetId="0" hidden="1">'
        f"{reference}</definedName></definedNames>"
        "</workbook>"
    ).encode()


# --- rows, rendered by PostgreSQL -------------------------------------------------------


def _cut(value: sql.Composable) -> sql.Composable:
    """`value` cut to fit an Excel cell with CUT_MARKER after it, or as it is when it fits.

    Counted in UTF-16 units, as Excel counts: each astral character gets a U+FFFF after it,
    so that the first N characters of that are exactly N units; an astral character whose
    second unit falls past the cut goes too. (A U+FFFF in the text itself counts as one
    more unit and is dropped here and anyway: the cut may come a character early, never
    late.)"""
    room = CELL_LIMIT - len(CUT_MARKER.encode("utf-16-le")) // 2
    units = sql.SQL("regexp_replace({v}, {astral}, {paired}, 'g')").format(
        v=value,
        astral=sql.Literal(f"({_ASTRAL})"),
        paired=sql.Literal("\\1" + _SECOND_UNIT),
    )
    cut = sql.SQL(
        "replace(regexp_replace(left({units}, {room}), {last}, ''), {second}, '') || {marker}"
    ).format(
        units=units,
        room=sql.Literal(room),
        last=sql.Literal(f"{_ASTRAL}$"),
        second=sql.Literal(_SECOND_UNIT),
        marker=sql.Literal(CUT_MARKER),
    )
    return sql.SQL(
        "(CASE WHEN octet_length({v}) > {bytes} AND length({units}) > {limit} "
        "THEN {cut} ELSE {v} END)"
    ).format(
        v=value,
        bytes=sql.Literal(_CUT_BYTES),
        units=units,
        limit=sql.Literal(CELL_LIMIT),
        cut=cut,
    )


def _text(value: sql.Composable) -> sql.Composable:
    """The XML character data of a text value (see the module docstring)."""
    # Each step looks before it rewrites; translate() would be the obvious way to drop
    # characters, but costs more than the rest of the row.
    clean = sql.SQL(
        "(CASE WHEN {v} ~ {chars} THEN regexp_replace({v}, {chars}, '', 'g') ELSE {v} END)"
    ).format(v=value, chars=_FORBIDDEN_CLASS)
    unescaped = sql.SQL(
        "(CASE WHEN strpos({v}, '_x') > 0 "
        "THEN regexp_replace({v}, '_(?=x[0-9A-Fa-f]{{4}}_)', '_x005F_', 'g') ELSE {v} END)"
    ).format(v=clean)
    out: sql.Composable = unescaped
    for char, reference in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        out = sql.SQL("replace({}, {}, {})").format(out, sql.Literal(char), sql.Literal(reference))
    for char, reference in (("\r", "&#13;"), ("\n", "&#10;")):
        out = sql.SQL("replace({}, {}, {})").format(out, sql.Literal(char), sql.Literal(reference))
    return out


def _cell(column: Column, letters: str, value: sql.Composable, *, escape: bool) -> sql.Composable:
    """One cell's XML, '' when the value is empty (no cell: the row's cells carry their
    references). The concatenation is NULL when the value is, hence the coalesce. `escape`
    False is for text known to hold nothing that needs escaping (see select)."""
    ref = sql.SQL("{} || w.n || '\"'").format(sql.Literal(f'<c r="{letters}'))
    if column.value_type == "integer":
        body: sql.Composable = sql.SQL("'><v>' || {} || '</v></c>'").format(value)
    elif column.value_type == "timestamp":
        # Seconds of the wall-clock time since 1970-01-01 → days since 1899-12-30. float8's
        # shortest text is exact enough that every reader rounds back to the same second.
        body = sql.SQL(
            "' s=\"{}\"><v>' || (date_part('epoch', {}) / 86400 + 25569) || '</v></c>'"
        ).format(sql.SQL(str(_DATE_STYLE)), value)
    else:
        text = sql.SQL("NULLIF({}, '')").format(value)
        body = sql.SQL(
            "' t=\"inlineStr\"><is><t xml:space=\"preserve\">' || {} || '</t></is></c>'"
        ).format(_text(text) if escape else text)
    return sql.SQL("coalesce({} || {}, '')").format(ref, body)


# Any character that text needs changed or escaped for: when a row's text holds none (by
# far the most rows), its cells are written as they are. Testing the row's text once
# against this costs a fraction of escaping each cell (translate() alone would make the
# export several times slower).
_NEEDS_ESCAPING = sql.Literal(f"[{FORBIDDEN}\r\n&<>]|_x")


def select(compiled: Compiled) -> sql.Composed:
    """One text column per row: its `<row>` element, in the list's order. Row numbers start
    at 2 (the header is row 1); `compiled` holds typed values (compile_list's `typed`)."""
    window = sql.SQL(", ").join(
        sql.SQL("v.{} {}").format(sql.Identifier(f"k{i}"), sql.SQL("DESC" if desc else "ASC"))
        for i, desc in enumerate(compiled.key_desc)
    )
    is_text = [c.value_type not in ("integer", "timestamp") for c in compiled.columns]
    # Text values are cut to fit a cell once, in the inner query, so that both ways of
    # writing a row below see them cut.
    values = [
        sql.SQL("w.{}").format(sql.Identifier(f"{'t' if text else 'c'}{i}"))
        for i, text in enumerate(is_text)
    ]
    texts = [value for value, text in zip(values, is_text, strict=True) if text]
    cut = [
        sql.SQL(", {} AS {}").format(
            _cut(sql.SQL("v.{}").format(sql.Identifier(f"c{i}"))), sql.Identifier(f"t{i}")
        )
        for i, text in enumerate(is_text)
        if text
    ]

    def row(*, escape: bool) -> sql.Composable:
        cells = [
            _cell(column, column_letters(i), value, escape=escape)
            for i, (column, value) in enumerate(zip(compiled.columns, values, strict=True))
        ]
        return sql.SQL(" || ").join(
            [sql.SQL("'<row r=\"' || w.n || '\">'"), *cells, sql.SQL("'</row>'")]
        )

    rendered = row(escape=True)
    if texts:
        rendered = sql.SQL("CASE WHEN concat({}) ~ {} THEN {} ELSE {} END").format(
            sql.SQL(", ").join(texts), _NEEDS_ESCAPING, rendered, row(escape=False)
        )
    return sql.SQL(
        "SELECT {row} FROM (SELECT v.*, (row_number() OVER (ORDER BY {window}) + 1)::text AS n"
        "{cut} FROM ({rows}) AS v) AS w ORDER BY {order}"
    ).format(
        row=rendered,
        window=window,
        cut=sql.Composed(cut),
        rows=aliased(compiled),
        order=order_by_keys(compiled, "w"),
    )


def copy_statement(select: sql.Composable) -> sql.Composed:
    """COPY as CSV with a delimiter and a quote character that the rows never contain (both
    are among the characters removed from text), so each row's XML leaves as it is, one
    line per row: the text format would escape its backslashes and tabs."""
    return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')").format(
        select
    )
