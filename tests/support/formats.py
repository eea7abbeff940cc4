"""Reading exported csv.gz, xlsx and Parquet files back, and what they must hold given the CSV."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from tests.support import reference_views
from tests.support.components import missing_component, require_module

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
GZIP_TYPE = "application/gzip"
PARQUET_TYPE = "application/vnd.apache.parquet"
# The most rows in a Parquet row group, as the brief bounds it.
PARQUET_ROW_GROUP_ROWS = 131_072
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


# --- Parquet -------------------------------------------------------------------------------

_POLARS_TYPES = {"integer": "Int64", "boolean": "Boolean"}
_DUCKDB_TYPES = {"integer": "BIGINT", "timestamp": "TIMESTAMP WITH TIME ZONE", "boolean": "BOOLEAN"}


def parquet_value(value_type: str, text: str) -> Any:
    """What a Parquet cell holds for a CSV cell's text of a column of `value_type`:
    timestamps as aware datetimes (compared as instants), text without the guard."""
    if text == "":
        return None
    if value_type == "integer":
        return int(text)
    if value_type == "timestamp":
        return dt.datetime.fromisoformat(text)
    if value_type == "boolean":
        return {"Yes": True, "No": False}[text]
    return unguard(text)


def _epoch_ms(value: Any) -> Any:
    return None if value is None else round(value.timestamp() * 1000)


def assert_parquet_holds(
    data: bytes, csv_rows: list[list[str]], value_types: list[str], timezone: str
) -> None:
    """pyarrow, polars and DuckDB each read the CSV's header as the columns and its rows, in
    order, typed; the file is zstd with row groups of at most PARQUET_ROW_GROUP_ROWS."""
    pa = require_module("pyarrow", "pyarrow is not installed")
    pq = require_module("pyarrow.parquet", "pyarrow is not installed")
    pl = require_module("polars", "polars is not installed")
    duckdb = require_module("duckdb", "duckdb is not installed")
    header, body = csv_rows[0], csv_rows[1:]
    assert header, "the CSV has no header"
    expected = [
        [parquet_value(t, v) for t, v in zip(value_types, row, strict=True)] for row in body
    ]

    # pyarrow: the schema exactly, then every cell.
    file = pq.ParquetFile(io.BytesIO(data))
    metadata = file.metadata
    assert metadata.num_rows == len(body)
    for group in range(metadata.num_row_groups):
        assert 0 < metadata.row_group(group).num_rows <= PARQUET_ROW_GROUP_ROWS
        for column in range(metadata.num_columns):
            assert metadata.row_group(group).column(column).compression == "ZSTD"
    types = {
        "integer": pa.int64(),
        "timestamp": pa.timestamp("ms", tz=timezone),
        "boolean": pa.bool_(),
    }
    want_schema = pa.schema(
        [
            pa.field(name, types.get(t, pa.string()))
            for name, t in zip(header, value_types, strict=True)
        ]
    )
    table = file.read()
    assert table.schema.remove_metadata() == want_schema
    # Timestamps compared as epoch milliseconds: Python never finds a wall-clock time that
    # the zone repeats equal to a time in another zone (PEP 495).
    in_ms = [
        [_epoch_ms(v) if t == "timestamp" else v for t, v in zip(value_types, row, strict=True)]
        for row in expected
    ]
    got = _in_ms(value_types, [list(row.values()) for row in table.to_pylist()], timezone)
    assert got == in_ms, _first_difference(got, in_ms)

    # polars
    frame = pl.read_parquet(io.BytesIO(data))
    assert frame.columns == header
    polars_types = {
        **_POLARS_TYPES,
        "timestamp": f"Datetime(time_unit='ms', time_zone='{timezone}')",
    }
    assert [str(d) for d in frame.dtypes] == [polars_types.get(t, "String") for t in value_types]
    got = _in_ms(value_types, [list(row) for row in frame.rows()], timezone)
    assert got == in_ms, _first_difference(got, in_ms)

    # DuckDB: timestamps as epoch milliseconds (its Python conversion of an aware
    # timestamp needs pytz), from a file as DuckDB reads files.
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "export.parquet"
        path.write_bytes(data)
        source = "read_parquet('" + str(path).replace("'", "''") + "')"
        with duckdb.connect() as con:
            relation = con.sql(f"SELECT * FROM {source}")
            assert relation.columns == header
            assert [str(t) for t in relation.types] == [
                _DUCKDB_TYPES.get(t, "VARCHAR") for t in value_types
            ]
            selected = ", ".join(
                f'epoch_ms("{name}")' if t == "timestamp" else f'"{name}"'
                for name, t in zip(header, value_types, strict=True)
            )
            got = [list(row) for row in con.sql(f"SELECT {selected} FROM {source}").fetchall()]
    assert got == in_ms, _first_difference(got, in_ms)


def _in_ms(value_types: list[str], rows: list[list[Any]], timezone: str) -> list[list[Any]]:
    """Rows read back with their timestamps as epoch milliseconds, each checked to be in
    the organisation's zone on the way."""
    out = []
    for row in rows:
        for value_type, value in zip(value_types, row, strict=True):
            if value_type == "timestamp" and value is not None:
                assert str(value.tzinfo) == timezone, value
        out.append(
            [_epoch_ms(v) if t == "timestamp" else v for t, v in zip(value_types, row, strict=True)]
        )
    return out


def _first_difference(got: list[list[Any]], want: list[list[Any]]) -> str:
    if len(got) != len(want):
        return f"{len(got)} rows, the CSV has {len(want)}"
    for number, (a, b) in enumerate(zip(got, want, strict=True), start=2):
        if a != b:
            return f"CSV row {number}: {a!r} != {b!r}"
    return "equal"
