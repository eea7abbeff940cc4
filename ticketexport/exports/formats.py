"""Export file formats: each one owns its name, content type and how COPY becomes its bytes."""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import struct
import zlib
from collections.abc import AsyncIterator

from psycopg import sql

from ticketexport.domain import cells
from ticketexport.domain.errors import Invalid
from ticketexport.exports import xlsx
from ticketexport.exports.xlsx import Layout
from ticketexport.exports.ziparchive import ZipWriter
from ticketexport.views.compiler import Compiled, aliased, order_by_keys

__all__ = [
    "BOM",
    "CSV",
    "CSV_GZ",
    "DEFAULT_FORMAT",
    "FORMATS",
    "PARQUET",
    "XLSX",
    "ExportFormat",
    "Layout",
]

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
    # The compiled rows hold typed values (columns.Column.value), not display text.
    typed: bool = False
    # The most rows a file can hold, and the error code of an export above it.
    max_rows: int | None = None
    too_many_rows: str = ""

    @abc.abstractmethod
    def select(self, compiled: Compiled) -> sql.Composed:
        """The SELECT whose rows COPY writes, from the compiled list query (values inlined)."""

    @abc.abstractmethod
    def copy_statement(self, select: sql.Composable) -> sql.Composed:
        """The COPY … TO STDOUT statement the worker runs."""

    @abc.abstractmethod
    def encode(self, blocks: AsyncIterator[bytes], layout: Layout) -> AsyncIterator[bytes]:
        """The file's bytes from COPY's output blocks, streamed; `layout` names the view and
        its columns for a format that shows them besides the rows."""


# The formula guard (ticketexport/domain/cells.py), in SQL: ascii() on the first character
# is far cheaper per row than left() or a regexp; only a cell that starts with one of these
# characters pays for trimming them.
_FORMULA_START = sql.SQL("({})").format(
    sql.SQL(", ").join(sql.Literal(ord(ch)) for ch in cells.FORMULA_START)
)
_FORMULA_AFTER_SPACE = sql.SQL("({})").format(
    sql.SQL(", ").join(sql.Literal(ord(ch)) for ch in cells.FORMULA_AFTER_SPACE)
)
LEADING_INVISIBLE = cells.LEADING_INVISIBLE
_SPACE_START = sql.SQL("({})").format(
    sql.SQL(", ").join(sql.Literal(ord(ch)) for ch in LEADING_INVISIBLE if ch not in "\t\n\r")
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
                    ws=sql.Literal(LEADING_INVISIBLE),
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

    async def encode(self, blocks: AsyncIterator[bytes], layout: Layout) -> AsyncIterator[bytes]:
        yield BOM
        async for block in blocks:
            yield block


CSV = Csv(
    key="csv", label="CSV", extension="csv", content_type="text/csv; charset=utf-8", header_lines=1
)


# Level 1, measured on the 1M-ticket CSV of `all` (147 MB; bench/formats.py and zlib alone,
# on a loaded 2-core machine): level 1 makes it 5.5× smaller in 6 s of one core, level 3
# 6.3× in 10 s, level 6 (zlib's default) 8.1× in 21 s, as long as the whole COPY takes. At
# level 1 the compression, which overlaps the COPY in a thread, keeps the streaming stage
# within 1.3× of the CSV's; at 6 the worker's compression, not PostgreSQL, would set the pace.
GZIP_LEVEL = 1
# RFC 1952 header: deflate, no flags (so no file name), mtime 0 (so re-runs give the same
# bytes), XFL 4 ("fastest", as level 1 is), OS 255 (unknown).
_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 4, 255])


class _Gzip:
    """Deflate state and the CRC and length that the gzip trailer needs."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc = 0
        self.size = 0

    def compress(self, block: bytes) -> bytes:
        # zlib releases the GIL here: run in a thread, the compression of one block overlaps
        # the reading of the next.
        self.crc = zlib.crc32(block, self.crc)
        self.size += len(block)
        return self.deflate.compress(block)

    def finish(self) -> bytes:
        return self.deflate.flush() + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class CsvGzip(Csv):
    """gzip of exactly the CSV's bytes, compressed as they stream (no uncompressed copy)."""

    async def encode(self, blocks: AsyncIterator[bytes], layout: Layout) -> AsyncIterator[bytes]:
        gzip = _Gzip()
        yield _GZIP_HEADER
        async for block in super().encode(blocks, layout):
            out = await asyncio.to_thread(gzip.compress, block)
            if out:
                yield out
        yield gzip.finish()


# Sent as a file of its own, never as Content-Encoding: a browser would unpack that one.
CSV_GZ = CsvGzip(
    key="csv.gz",
    label="Compressed CSV (.csv.gz)",
    extension="csv.gz",
    content_type="application/gzip",
    header_lines=1,
)


# Deflate level of the workbook's parts, for the same reason as GZIP_LEVEL: the worksheet's
# XML carries more bytes per row than the CSV, so the compression's pace matters more still.
XLSX_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class Xlsx(ExportFormat):
    """One worksheet of typed cells, its rows rendered as XML by PostgreSQL (exports.xlsx),
    zipped as they stream."""

    def select(self, compiled: Compiled) -> sql.Composed:
        return xlsx.select(compiled)

    def copy_statement(self, select: sql.Composable) -> sql.Composed:
        return xlsx.copy_statement(select)

    async def encode(self, blocks: AsyncIterator[bytes], layout: Layout) -> AsyncIterator[bytes]:
        archive = ZipWriter(level=XLSX_LEVEL)
        # The fixed parts first, the workbook (which names the autofilter's range) last.
        yield b"".join(
            [
                archive.member("[Content_Types].xml", xlsx.CONTENT_TYPES),
                archive.member("_rels/.rels", xlsx.ROOT_RELS),
                archive.member("xl/_rels/workbook.xml.rels", xlsx.WORKBOOK_RELS),
                archive.member("xl/styles.xml", xlsx.STYLES),
                archive.begin(xlsx.SHEET),
                archive.feed(xlsx.sheet_head(layout)),
            ]
        )
        rows = 0
        async for block in blocks:
            rows += block.count(b"\n")  # one line per row: text never holds a raw LF
            out = await asyncio.to_thread(archive.feed, block)
            if out:
                yield out
        yield b"".join(
            [
                archive.feed(xlsx.sheet_tail(layout, rows)),
                archive.end(),
                archive.member("xl/workbook.xml", xlsx.workbook(layout, rows)),
                archive.finish(),
            ]
        )


XLSX = Xlsx(
    key="xlsx",
    label="Excel (.xlsx)",
    extension="xlsx",
    content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    header_lines=0,
    typed=True,
    max_rows=xlsx.MAX_ROWS,
    too_many_rows="too_many_rows_for_xlsx",
)


@dataclasses.dataclass(frozen=True)
class Parquet(ExportFormat):
    """Typed columns named by the CSV's labels, holding the CSV's values (exports.parquet):
    COPY writes the CSV's text without the guard, pyarrow parses and writes it."""

    def select(self, compiled: Compiled) -> sql.Composed:
        # Empty values come out as NULL (an unquoted empty field), as in the CSV.
        return sql.SQL("SELECT {} FROM ({}) AS v ORDER BY {}").format(
            sql.SQL(", ").join(
                sql.SQL("NULLIF(v.{}, '')").format(sql.Identifier(f"c{i}"))
                for i in range(len(compiled.columns))
            ),
            aliased(compiled),
            order_by_keys(compiled, "v"),
        )

    def copy_statement(self, select: sql.Composable) -> sql.Composed:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(select)

    async def encode(self, blocks: AsyncIterator[bytes], layout: Layout) -> AsyncIterator[bytes]:
        # Imported here: pyarrow adds about 30 MiB to a process, which the web processes and
        # a worker that never writes Parquet need not carry.
        from ticketexport.exports import parquet

        # One thread of its own does all the encoding: Arrow's allocator keeps memory per
        # thread, and spread over the default executor's threads the worker's peak grew by
        # a fifth from 100k to 1M rows (flat on one thread).
        loop = asyncio.get_running_loop()
        thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parquet")
        try:
            encoder = await loop.run_in_executor(
                thread, parquet.ParquetEncoder, layout.columns, layout.timezone
            )
            async for block in blocks:
                out = await loop.run_in_executor(thread, encoder.feed, block)
                if out:
                    yield out
            yield await loop.run_in_executor(thread, encoder.finish)
        finally:
            thread.shutdown(wait=False)


PARQUET = Parquet(
    key="parquet",
    label="Parquet (.parquet)",
    extension="parquet",
    content_type="application/vnd.apache.parquet",
    header_lines=0,
)

# In the order the export control offers them.
FORMATS: dict[str, ExportFormat] = {f.key: f for f in (CSV, CSV_GZ, XLSX, PARQUET)}


def recorded(key: str | None) -> ExportFormat:
    """The format a stored request names, for showing it (requests from before formats were
    recorded are CSV)."""
    return FORMATS.get(key or DEFAULT_FORMAT, CSV)


def get(key: str | None) -> ExportFormat:
    """The format named in a request (absent means CSV); Invalid names the problem."""
    if key is None or key == "":
        return FORMATS[DEFAULT_FORMAT]
    found = FORMATS.get(key)
    if found is None:
        raise Invalid(f"unknown format {key[:40]!r}; use one of {', '.join(FORMATS)}")
    return found
