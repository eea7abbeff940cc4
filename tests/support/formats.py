"""Reading exported csv.gz and xlsx files back, and what they must hold given the CSV."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from tests.support import reference_views
from tests.support.components import missing_component, require_module

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
GZIP_TYPE = "application/gzip"
# What XML 1.0 cannot hold; the workbook drops these characters from text.
XML_FORBIDDEN = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def gunzip(data: bytes) -> bytes:
    """The member's bytes, after checking the header is the fixed one re-runs rely on."""
    assert data[:4] == b"\x1f\x8b\x08\x00", data[:10]  # deflate, no flags: no file name
    assert data[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0"
    return gzip.decompress(data)


def unguard(value: str) -> str:
    """A CSV cell's text without the formula guard (the brief's rule, read backwards)."""
    return reference_views.csv_unguard(value)


def ooxml_text(value: str) -> str:
    """A string cell's text as Excel shows it: Office's _xHHHH_ escapes decoded."""
    return _OOXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def expected_cell(value_type: str, text: str) -> Any:
    """What an xlsx cell holds for a CSV cell's text of a column of `value_type`."""
    if text == "":
        return None
    if value_type == "integer":
        return int(text)
    if value_type == "timestamp":
        # The organisation's wall-clock time, as the CSV's offset timestamp shows it.
        return dt.datetime.fromisoformat(text).replace(tzinfo=None)
    return XML_FORBIDDEN.sub("", unguard(text)) or None


def xlsx_sheet(data: bytes) -> tuple[Any, list[list[Any]]]:
    """The only worksheet (openpyxl) and its cell values, row by row, header included;
    every cell's type checked against its value on the way."""
    openpyxl = require_module("openpyxl", "openpyxl is not installed")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0), info.filename
    book = openpyxl.load_workbook(io.BytesIO(data))
    assert len(book.worksheets) == 1
    sheet = book.worksheets[0]
    width = sheet.max_column
    rows: list[list[Any]] = []
    for row in sheet.iter_rows(min_row=1, max_col=width):
        values: list[Any] = []
        for cell in row:
            value = cell.value
            if isinstance(value, dt.datetime):
                assert cell.number_format == "yyyy-mm-dd hh:mm:ss", cell.coordinate
            elif isinstance(value, str):
                assert cell.data_type == "s", cell.coordinate
                value = ooxml_text(value)
            else:
                assert value is None or type(value) is int, (cell.coordinate, value)
            values.append(value)
        rows.append(values)
    return sheet, rows


def assert_xlsx_holds(data: bytes, csv_rows: list[list[str]], value_types: list[str]) -> Any:
    """The workbook holds the CSV's header and rows, in order, each cell typed."""
    sheet, rows = xlsx_sheet(data)
    header, body = csv_rows[0], csv_rows[1:]
    if not body and not header:
        raise AssertionError("the CSV has no header")
    assert rows[0] == header
    assert len(rows) - 1 == len(body)
    for number, (got, want) in enumerate(zip(rows[1:], body, strict=True), start=2):
        padded = got + [None] * (len(header) - len(got))
        expected = [expected_cell(t, v) for t, v in zip(value_types, want, strict=True)]
        assert padded == expected, f"row {number} differs"
    assert sheet.freeze_panes == "A2"
    last = sheet.cell(row=1, column=len(header)).column_letter
    assert sheet.auto_filter.ref == f"A1:{last}{len(body) + 1}"
    return sheet


def soffice() -> str:
    """LibreOffice's command, or a skip (a failure in CI) when it is not installed."""
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        missing_component("LibreOffice (soffice) not installed")
    assert found is not None
    return found


def calc_csv(command: str, xlsx_bytes: bytes, tmp_path: Path) -> list[list[str]]:
    """The workbook as Calc (headless, a private profile) saves it as UTF-8 CSV: each cell's
    text as Calc holds it."""
    source = tmp_path / "export.xlsx"
    source.write_bytes(xlsx_bytes)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            command,
            f"-env:UserInstallation={(tmp_path / 'lo-profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76,1",
            "--outdir",
            str(out),
            str(source),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    converted = out / "export.csv"
    assert result.returncode == 0, result
    assert converted.exists(), (result.stdout, result.stderr)
    return list(csv.reader(io.StringIO(converted.read_text("utf-8"), newline="")))
