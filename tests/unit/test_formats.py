"""The format seam's pure parts: the streamed ZIP writer, the gzip framing, sheet names."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import struct
import zipfile
from collections.abc import AsyncIterator

import pytest

from ticketexport.domain.errors import Invalid
from ticketexport.exports import formats, xlsx
from ticketexport.exports.ziparchive import LIMIT_32, ZipWriter
from ticketexport.views import registry


def _archive(limit: int = LIMIT_32, streamed: bytes = b"") -> bytes:
    writer = ZipWriter(level=1, limit=limit)
    parts = [writer.member("first.xml", b"<a/>"), writer.begin("streamed.xml")]
    for at in range(0, len(streamed), 1000):
        parts.append(writer.feed(streamed[at : at + 1000]))
    parts += [writer.end(), writer.member("last.xml", b"<z/>" * 50), writer.finish()]
    return b"".join(parts)


def test_zip_members_read_back_in_order_with_the_fixed_time() -> None:
    body = os.urandom(5000) + b"row\n" * 10_000
    data = _archive(streamed=body)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["first.xml", "streamed.xml", "last.xml"]
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read("streamed.xml") == body
        assert archive.read("last.xml") == b"<z/>" * 50
        # Only the streamed member has a data descriptor; nothing is ZIP64.
        assert [i.flag_bits & 0x08 for i in infos] == [0, 8, 0]
        assert all(i.extra == b"" for i in infos)
    assert b"PK\x06\x06" not in data
    assert b"PK\x06\x07" not in data
    streamed = infos[1]
    after = streamed.header_offset + 30 + len("streamed.xml") + streamed.compress_size
    assert data[after : after + 4] == b"PK\x07\x08"
    assert struct.unpack("<III", data[after + 4 : after + 16]) == (
        streamed.CRC,
        streamed.compress_size,
        streamed.file_size,
    )
    assert _archive(streamed=body) == data  # same content, same bytes


def test_zip64_forms_once_sizes_and_offsets_pass_the_limit() -> None:
    # A lowered limit reaches the ZIP64 forms without writing 4 GiB.
    body = os.urandom(3000)
    data = _archive(limit=2000, streamed=body)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        streamed, last = archive.infolist()[1:]
        assert archive.read("streamed.xml") == body
        assert streamed.extra[:2] == b"\x01\x00"  # ZIP64 extra: both sizes
        assert struct.unpack("<HHQQ", streamed.extra) == (1, 16, len(body), streamed.compress_size)
        assert last.extra[:2] == b"\x01\x00"  # its offset is past the limit
        assert last.header_offset > 2000
    after = streamed.header_offset + 30 + len("streamed.xml") + streamed.compress_size
    assert data[after : after + 4] == b"PK\x07\x08"
    assert struct.unpack("<QQ", data[after + 8 : after + 24]) == (
        streamed.compress_size,
        len(body),
    )
    assert b"PK\x06\x06" in data
    assert b"PK\x06\x07" in data


async def _blocks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def _encode(fmt: formats.ExportFormat, parts: list[bytes]) -> bytes:
    layout = formats.Layout(title="All tickets", columns=(registry.COLUMNS["id"],))
    return b"".join([chunk async for chunk in fmt.encode(_blocks(parts), layout)])


async def test_csv_gz_is_gzip_of_exactly_the_csv_bytes() -> None:
    parts = [b"Ticket ID\n", *(f"{n}\n".encode() for n in range(5000)), b""]
    plain = await _encode(formats.CSV, parts)
    packed = await _encode(formats.CSV_GZ, parts)
    assert gzip.decompress(packed) == plain
    assert plain.startswith(formats.BOM)
    # No file name, mtime 0, "fastest", OS unknown: the same bytes on every run.
    assert packed[:10] == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 4, 255])
    assert packed == await _encode(formats.CSV_GZ, parts)
    assert gzip.decompress(await _encode(formats.CSV_GZ, [])) == formats.BOM


async def test_an_empty_workbook_has_the_header_and_an_autofilter_on_it() -> None:
    data = await _encode(formats.XLSX, [])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet = archive.read(xlsx.SHEET).decode()
        book = archive.read("xl/workbook.xml").decode()
    assert '<row r="1"><c r="A1" t="inlineStr" s="2"><is><t>Ticket ID</t></is></c></row>' in sheet
    assert '<autoFilter ref="A1:A1"/>' in sheet
    assert '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>' in sheet
    assert '<sheet name="All tickets"' in book
    assert "'All tickets'!$A$1:$A$1" in book


@pytest.mark.parametrize(
    ("view", "sheet"),
    [
        ("All tickets", "All tickets"),
        ("Q3: open / [urgent]?*\\", "Q3 open urgent"),
        ("'quoted'", "quoted"),
        ("history", "Tickets"),
        ("", "Tickets"),
        ("::", "Tickets"),
        ("bell\x07name", "bellname"),
        ("x" * 40, "x" * 31),
        ("😀" * 20, "😀" * 15),  # 31 UTF-16 units at most
        ("Ünïcödé Привет", "Ünïcödé Привет"),
    ],
)
def test_sheet_names_follow_excels_rules(view: str, sheet: str) -> None:
    assert xlsx.sheet_name(view) == sheet


def test_column_letters() -> None:
    assert [xlsx.column_letters(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "A",
        "B",
        "Z",
        "AA",
        "AB",
        "AZ",
        "BA",
        "ZZ",
        "AAA",
    ]


def test_format_names() -> None:
    assert list(formats.FORMATS) == ["csv", "csv.gz", "xlsx", "parquet"]
    assert formats.get(None) is formats.get("") is formats.CSV
    assert formats.get("xlsx").max_rows == 1_048_575
    assert formats.recorded(None) is formats.CSV
    with pytest.raises(Invalid):
        formats.get("xls")
