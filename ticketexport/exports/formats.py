"""Export file formats: each one owns its name, content type and how COPY becomes its bytes."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator

from psycopg import sql

from ticketexport.domain.errors import Invalid
from ticketexport.views.compiler import Compiled, aliased, order_by_keys

DEFAULT_FORMAT = "csv"


@dataclasses.dataclass(frozen=True)
class ExportFormat(abc.ABC):
    """One file format an export can be written in."""

    key: str
    label: str
    extension: str
    content_type: str
    # Lines COPY writes before the first row (a CSV header), not counted as rows.
    header_lines: int

    @abc.abstractmethod
    def select(self, compiled: Compiled) -> sql.Composed:
        """The SELECT whose rows COPY writes, from the compiled list query (values inlined)."""

    @abc.abstractmethod
    def copy_statement(self, select: sql.Composable) -> sql.Composed:
        """The COPY … TO STDOUT statement the worker runs."""

    @abc.abstractmethod
    def encode(self, blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The file's bytes from COPY's output blocks, streamed."""


# The formula guard. A cell a spreadsheet would evaluate starts with = + - @ TAB CR or LF,
# or has = + - @ after leading whitespace (some trim it on import: "  =1+1").
# ascii() on the first character is far cheaper per row than left() or a regexp; only a
# cell that starts with whitespace pays for trimming it.
_FORMULA_START = sql.SQL("(61, 43, 45, 64, 9, 13, 10)")
_FORMULA_AFTER_SPACE = sql.SQL("(61, 43, 45, 64)")
# Unicode's white space (and the BOM), which an import may trim; TAB, LF and CR already
# trigger the guard as a first character, but count as whitespace before one that does.
WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_SPACE_START = sql.SQL("({})").format(
    sql.SQL(", ").join(sql.Literal(ord(ch)) for ch in WHITESPACE if ch not in "\t\n\r")
)


BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class Csv(ExportFormat):
    """UTF-8 with a BOM (for Excel), COPY's CSV quoting, one header row of column labels,
    and the formula guard: a text cell a spreadsheet would evaluate is prefixed with '."""

    def select(self, compiled: Compiled) -> sql.Composed:
        # Empty values come out as NULL so COPY's CSV writes an empty cell, not a quoted "".
        return sql.SQL("SELECT {} FROM ({}) AS v ORDER BY {}").format(
            sql.SQL(", ").join(
                sql.SQL(
                    "NULLIF(CASE WHEN ascii(v.{c}) IN {first} THEN '''' || v.{c} "
                    "WHEN ascii(v.{c}) IN {space} THEN "
                    "CASE WHEN ascii(ltrim(v.{c}, {ws})) IN {after} THEN '''' || v.{c} "
                    "ELSE v.{c} END "
                    "ELSE v.{c} END, '') AS {label}"
                ).format(
                    first=_FORMULA_START,
                    space=_SPACE_START,
                    after=_FORMULA_AFTER_SPACE,
                    ws=sql.Literal(WHITESPACE),
                    c=sql.Identifier(f"c{i}"),
                    label=sql.Identifier(column.label),
                )
                for i, column in enumerate(compiled.columns)
            ),
            aliased(compiled),
            order_by_keys(compiled, "v"),
        )

    def copy_statement(self, select: sql.Composable) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(select)

    async def encode(self, blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        yield BOM
        async for block in blocks:
            yield block


CSV = Csv(
    key="csv", label="CSV", extension="csv", content_type="text/csv; charset=utf-8", header_lines=1
)

FORMATS: dict[str, ExportFormat] = {f.key: f for f in (CSV,)}


def get(key: str | None) -> ExportFormat:
    """The format named in a request (absent means CSV); Invalid names the problem."""
    if key is None or key == "":
        return FORMATS[DEFAULT_FORMAT]
    found = FORMATS.get(key)
    if found is None:
        raise Invalid(f"unknown format {key[:40]!r}; use one of {', '.join(FORMATS)}")
    return found
