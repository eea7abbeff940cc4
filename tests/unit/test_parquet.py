"""The Parquet encoder on COPY's CSV as the format writes it: types, nulls, text as written,
fixed row groups whatever the blocks, the empty file."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
from collections.abc import AsyncIterator

import pyarrow as pa
import pyarrow.parquet as pq

from ticketexport.exports import formats, parquet
from ticketexport.views.registry import COLUMNS, Column

ZONE = "America/St_Johns"
TYPED = tuple(COLUMNS[key] for key in ("id", "title", "contact_id", "created_at", "snoozed"))


async def _blocks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _encode(parts: list[bytes], columns: tuple[Column, ...] = TYPED) -> bytes:
    layout = formats.Layout(title="Typed", columns=columns, timezone=ZONE)

    async def run() -> bytes:
        return b"".join([b async for b in formats.PARQUET.encode(_blocks(parts), layout)])

    return asyncio.run(run())


def test_columns_are_typed_and_hold_the_csv_values() -> None:
    rows = [
        b'7,"=1+2, a ""quoted""\nsecond line",12,2026-03-08T01:59:59-03:30,Yes\n',
        b"8,NULL,,2026-11-01T01:30:00-02:30,No\n",
        b'9,"",,,No\n',  # COPY quotes an empty string; the format never writes one
        b"10,N/A,3,1970-01-01T00:00:00+00:00,Yes\n",
    ]
    table = pq.read_table(io.BytesIO(_encode(rows)))
    assert table.schema.remove_metadata() == pa.schema(
        [
            ("Ticket ID", pa.int64()),
            ("Title", pa.string()),
            ("Contact ID", pa.int64()),
            ("Created", pa.timestamp("ms", tz=ZONE)),
            ("Snoozed", pa.bool_()),
        ]
    )
    got = table.to_pylist()
    assert [r["Ticket ID"] for r in got] == [7, 8, 9, 10]
    # Text as written, no guard; only COPY's NULL is null, never the word.
    assert [r["Title"] for r in got] == ['=1+2, a "quoted"\nsecond line', "NULL", "", "N/A"]
    assert [r["Contact ID"] for r in got] == [12, None, None, 3]
    assert [r["Snoozed"] for r in got] == [True, False, False, True]
    created = [r["Created"] for r in got]
    assert created[2] is None
    # The same instants as the offsets say, in the organisation's zone.
    # Compared as POSIX times: Python never finds a wall-clock time that the zone repeats
    # (the first 01:30 of 1 November) equal to a time in another zone.
    instants = [dt.datetime(2026, 3, 8, 5, 29, 59), dt.datetime(2026, 11, 1, 4, 0)]
    assert [c.timestamp() for c in created[:2]] == [
        i.replace(tzinfo=dt.UTC).timestamp() for i in instants
    ]
    assert created[3].timestamp() == 0
    assert str(created[0].tzinfo) == ZONE


def test_row_groups_are_fixed_whatever_blocks_copy_hands_over() -> None:
    count = 2 * parquet.ROW_GROUP_ROWS + 5
    lines = [f"{n},Title {n % 97}\n".encode() for n in range(count)]
    columns = (COLUMNS["id"], COLUMNS["title"])
    whole = _encode([b"".join(lines)], columns)
    chance = random.Random(7)  # noqa: S311 (a fixed split, not a secret)
    parts: list[bytes] = []
    at = 0
    while at < count:
        size = chance.choice((1, 3, 1000, 50_000, 140_000))
        parts.append(b"".join(lines[at : at + size]))
        at += size
    assert _encode(parts, columns) == whole
    file = pq.ParquetFile(io.BytesIO(whole))
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups)]
    assert sizes == [parquet.ROW_GROUP_ROWS, parquet.ROW_GROUP_ROWS, 5]
    assert file.metadata.row_group(0).column(1).compression == "ZSTD"
    assert file.read().column("Ticket ID").to_pylist() == list(range(count))


def test_no_rows_is_a_file_with_the_columns() -> None:
    data = _encode([])
    assert data[:4] == data[-4:] == b"PAR1"
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 0
    assert table.column_names == ["Ticket ID", "Title", "Contact ID", "Created", "Snoozed"]
    assert formats.get("parquet").extension == "parquet"
    assert formats.PARQUET.content_type == "application/vnd.apache.parquet"
