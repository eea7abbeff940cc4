"""Parquet files from COPY's CSV: pyarrow parses each block and writes fixed row groups.

COPY writes the CSV's display text without the formula guard (no spreadsheet evaluates
Parquet), empty values as NULL, no header. pyarrow's CSV reader turns each block into typed
columns in C++ (no Python object per value): digits into int64, the CSV's
`YYYY-MM-DDTHH:MM:SS±HH:MM` into the instant it names, Yes/No into bool, the rest into
strings. So the file holds exactly the CSV's values by construction.

Row groups and the chunks they are written from are cut at fixed row counts, whatever
sizes COPY's blocks come in (they are flushed on time as well as size): the writer splits
pages per chunk, so the same rows give the same bytes. At most one row group and one block
are held at a time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ticketexport.views.registry import Column

# Rows per row group (the last may hold fewer): half the brief's bound of 131,072. A row
# group is what the encoder holds; Arrow's peak for a full group of 131,072 rows measured
# 2.7× that of 65,536 (48 against 18 MiB, on rows shaped like the `all` view's default
# columns), so a 1M-row export would hold far more than a 100k one (bench/README.md).
ROW_GROUP_ROWS = 65_536
# Rows are cut into contiguous chunks of this many, whatever the blocks: the writer splits
# pages per chunk, so fixed chunks give the same bytes, and only a chunk is ever copied.
CHUNK_ROWS = 8_192
COMPRESSION = "zstd"


def _target_type(column: Column, timezone: str) -> pa.DataType:
    if column.value_type == "integer":
        return pa.int64()
    if column.value_type == "timestamp":
        return pa.timestamp("ms", tz=timezone)
    if column.value_type == "boolean":
        return pa.bool_()
    return pa.string()


def _parsed_type(column: Column) -> pa.DataType:
    # The CSV's timestamps carry their offset and whole seconds: parsed as UTC instants,
    # then given the organisation's zone (a cast that changes only the type).
    if column.value_type == "timestamp":
        return pa.timestamp("s", tz="UTC")
    return _target_type(column, "UTC")


def schema(columns: Sequence[Column], timezone: str) -> pa.Schema:
    """One field per column, named by its label, typed as the brief says."""
    return pa.schema([pa.field(c.label, _target_type(c, timezone)) for c in columns])


class _Sink(io.RawIOBase):
    """Where the writer puts its bytes until the next `take`."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        part = bytes(data)
        self._parts.append(part)
        self._position += len(part)
        return len(part)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class ParquetEncoder:
    """Feed COPY's blocks (whole CSV rows) in order, take the file's bytes as they come.
    The methods block on CPU work with the GIL released: call them in a thread."""

    def __init__(self, columns: Sequence[Column], timezone: str) -> None:
        self.schema = schema(columns, timezone)
        names = [c.label for c in columns]
        self._read = pa_csv.ReadOptions(column_names=names, use_threads=False)
        self._parse = pa_csv.ParseOptions(newlines_in_values=True)
        self._convert = pa_csv.ConvertOptions(
            column_types={c.label: _parsed_type(c) for c in columns},
            # Only COPY's NULL (an unquoted empty field) is empty; "NULL", "N/A" and the
            # like are text like any other.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["Yes"],
            false_values=["No"],
        )
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(
            pa.PythonFile(self._sink, mode="w"), self.schema, compression=COMPRESSION
        )
        # Parsed blocks not yet cut into chunks, and the chunks of the row group to come.
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._group: list[pa.RecordBatch] = []
        self._group_rows = 0

    def feed(self, block: bytes) -> bytes:
        """Parse one block of whole rows; the bytes of any row group it completes."""
        if block:
            # The whole block is one parser block, so a row of any length fits in it.
            self._read.block_size = len(block) + 1
            table = pa_csv.read_csv(
                pa.py_buffer(block),
                read_options=self._read,
                parse_options=self._parse,
                convert_options=self._convert,
            ).cast(self.schema)
            self._pending.append(table)
            self._pending_rows += table.num_rows
        while self._pending_rows >= CHUNK_ROWS:
            self._cut(CHUNK_ROWS)
        return self._sink.take()

    def finish(self) -> bytes:
        """The last row group and the footer."""
        if self._pending_rows:
            self._cut(self._pending_rows)
        if self._group_rows:
            self._write()
        self._writer.close()
        return self._sink.take()

    def _cut(self, rows: int) -> None:
        """The first `rows` pending rows become one contiguous chunk of the row group."""
        taken: list[pa.Table] = []
        kept: list[pa.Table] = []
        needed = rows
        for table in self._pending:
            if needed >= table.num_rows:
                taken.append(table)
                needed -= table.num_rows
            elif needed > 0:
                taken.append(table.slice(0, needed))
                kept.append(table.slice(needed))
                needed = 0
            else:
                kept.append(table)
        self._pending = kept
        self._pending_rows -= rows
        chunk = pa.concat_tables(taken).combine_chunks().to_batches()
        self._group.extend(chunk)
        self._group_rows += rows
        if self._group_rows >= ROW_GROUP_ROWS:
            self._write()

    def _write(self) -> None:
        group = pa.Table.from_batches(self._group, schema=self.schema)
        self._group = []
        self._group_rows = 0
        self._writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
