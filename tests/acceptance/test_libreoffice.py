"""The exported CSV in LibreOffice Calc (headless): same cells as Python's csv, no formulas."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.components import require_module
from tests.support.databases import scratch_database
from tests.support.exports import ADMIN, guard
from tests.support.formats import calc_csv, ooxml_text, soffice
from tests.support.reference_views import GUARD_FIRST
from tests.support.services import actor_for, services_for
from ticketexport import seed
from ticketexport.exports import formats, service, store, xlsx
from ticketexport.exports.formats import BOM
from ticketexport.exports.worker import ExportRun
from ticketexport.storage.local import LocalStorage
from ticketexport.views import registry
from ticketexport.views import saved as saved_views
from ticketexport.views.model import ListRequest, parse_definition

openpyxl = require_module("openpyxl", "openpyxl is not installed (.venv/bin/pip install openpyxl)")

pytestmark = [pytest.mark.libreoffice, pytest.mark.slow]

# Comma-separated, double-quoted, UTF-8 (76), from line 1, standard column types, "quoted
# field as text" off and "detect special numbers" on: the settings that make Calc evaluate
# a formula-looking cell, so the guard has something to prove.
INFILTER = "CSV:44,34,76,1,,0,false,true,false,false,false"
# The same with "trim spaces" on: Calc then evaluates "  =1+1" as a formula.
TRIMMING_INFILTER = "CSV:44,34,76,1,,0,false,true,false,false,true"

# Titles and descriptions a spreadsheet would take as formulas, or that stress quoting.
ADVERSARIAL = (
    ("=SUM(1,2)", "=1+2"),
    ("=1+2", "+1+2 in the description"),
    ("+1+2", "-3+4"),
    ("-3+4", "@SUM(1,2)"),
    ("@SUM(1,2)", '=HYPERLINK("http://example.com","click")'),
    ("\t=1+2 after a tab", "\r=1+2 after a carriage return"),
    ("\r=SUM(1,2) after a CR", "\t@SUM(1,2)"),
    ('=HYPERLINK("http://example.com","x")', "=cmd|' /C calc'!A0"),
    ("-", "="),
    ("\n=1+2 after a line feed", "  =1+1 after spaces"),
    ("\u00a0@SUM(1,2) after a no-break space", " \t-3+4 after a space and a tab"),
    ('Comma, and "quotes", and\nline breaks', 'Line 1\r\nLine 2\rLine 3\n"end"'),
    ("Ünïcödé Привет 你好 مرحبا 😀👍🏽", "emoji only 👨‍💻"),
    ("1,5", "0012"),
)
ADVERSARIAL_TAGS = ["=1+2", "vpn", "a,b"]
COLUMNS = ["id", "title", "description", "tags", "contact", "created_at", "tasks", "status"]


def _convert(
    command: str, sources: list[Path], out: Path, profile: Path, infilter: str = INFILTER
) -> list[Path]:
    """Headless CSV → xlsx with a private profile (never the user's, never a shared one)."""
    out.mkdir()
    result = subprocess.run(
        [
            command,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            f"--infilter={infilter}",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(out),
            *map(str, sources),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    converted = [out / (source.stem + ".xlsx") for source in sources]
    missing = [p.name for p in converted if not p.exists()]
    assert result.returncode == 0, result
    assert not missing, (missing, result.stdout, result.stderr)
    return converted


def _cells(path: Path, *, data_only: bool) -> list[list[Any]]:
    """(value, data_type) per cell, trailing empties dropped, one list per row."""
    book = openpyxl.load_workbook(path, data_only=data_only)
    rows = []
    for row in book.active.iter_rows():
        cells = [(cell.value, cell.data_type) for cell in row]
        while cells and cells[-1][0] is None:
            cells.pop()
        rows.append(cells)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def calc_lines(text: str) -> str:
    """Calc keeps one kind of line break inside a cell: CRLF and a lone CR become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _same_cell(text: str, value: Any, data_type: str) -> bool:
    """Whether Calc's cell holds what Python's csv read.

    Calc turns digit strings into numbers (ticket ids, "0012", "1,5" stays text as the
    decimal separator is '.'); a number is equal when it is the same number. Everything
    else must be the identical string (up to Calc's one kind of line break); an empty
    field is an empty cell."""
    if text == "":
        return value is None
    if data_type == "f":
        return False
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return False
    return bool(value == calc_lines(text))


def _guarded(text: str) -> bool:
    """Whether a cell the file holds is a value with the formula guard's quote."""
    return text.startswith("'") and guard(text[1:]) == text


def _add_adversarial(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = []
        for title, description in ADVERSARIAL:
            row = conn.execute(
                "INSERT INTO tickets (title, description, status_id, priority_id, tags) "
                "VALUES (%s, %s, 1, 1, %s) RETURNING id",
                (title, description, ADVERSARIAL_TAGS),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


async def _export(
    url: str,
    home: Path,
    *,
    columns: list[str] | None = None,
    export_format: formats.ExportFormat = formats.CSV,
) -> bytes:
    """A saved view over the seeded tickets plus the adversarial ones, run in-process."""
    storage = LocalStorage(home / "exports")
    user = actor_for(url, ADMIN.email)
    env = {"TICKETEXPORT_TIMEZONE": "Europe/Berlin"}
    if columns is None:
        columns = [*COLUMNS, *(c for c in registry.COLUMNS if c not in COLUMNS)][:20]
    async with services_for(url, home, env=env, storage=storage) as deps:
        pool = deps.pool
        async with pool.connection() as conn:
            view_id = await saved_views.create_saved_view(
                conn,
                user,
                parse_definition(
                    {
                        "name": "Spreadsheet check =1+2",
                        "columns": columns,
                        "sort": [{"column": "id", "direction": "desc"}],
                    }
                ),
                system_wide=False,
            )
        request = ListRequest(view=str(view_id), q="", sort=None, filters={}, page=None)
        requested = await service.request_export(
            deps, user, request, export_format=export_format, client_ip=None
        )
        async with pool.connection() as conn:
            export = await store.get(conn, requested.export_id)
        assert export is not None
        await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
        async with pool.connection() as conn:
            export = await store.get(conn, requested.export_id)
        assert export is not None
        assert export.status == "completed", export.error_code
        return b"".join([chunk async for chunk in storage.read(export.file.object_key)])


async def test_libreoffice_reads_the_export_cell_for_cell(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    command = soffice()
    with scratch_database(server_url, template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=250, seed=3)
        adversarial_ids = _add_adversarial(url)
        data = await _export(url, tmp_path / "home")

    assert data.startswith(BOM)
    exported = tmp_path / "export.csv"
    exported.write_bytes(data)
    expected = list(csv.reader(io.StringIO(data[len(BOM) :].decode("utf-8"), newline="")))
    assert len(expected) == 1 + 250 + len(ADVERSARIAL)

    # The control: an unguarded formula that Calc, with the same settings, does evaluate.
    control = tmp_path / "control.csv"
    control.write_bytes(BOM + b'Ticket ID,Title\n1,=1+2\n2,"=SUM(1,2)"\n3,plain\n4,  =1+1\n')

    xlsx, control_xlsx = _convert(
        command, [exported, control], tmp_path / "out", tmp_path / "lo-profile"
    )

    evaluated = _cells(control_xlsx, data_only=True)
    formulas = _cells(control_xlsx, data_only=False)
    assert evaluated[1][1] == (3, "n"), evaluated
    assert evaluated[2][1] == (3, "n"), evaluated
    assert formulas[1][1] == ("=1+2", "f"), formulas
    assert formulas[3][1] == ("plain", "s"), formulas

    raw = _cells(xlsx, data_only=False)
    values = _cells(xlsx, data_only=True)
    assert len(raw) == len(expected)
    mismatches = []
    guarded = 0
    for number, (want, got, shown) in enumerate(zip(expected, raw, values, strict=True)):
        # Calc keeps empty trailing fields as no cell at all.
        padded = got + [(None, "n")] * (len(want) - len(got))
        assert len(padded) == len(want), (number, want, got)
        for column, (text, (value, data_type), (cached, _)) in enumerate(
            zip(want, padded, shown + [(None, "n")] * len(want), strict=False)
        ):
            if _guarded(text):
                guarded += 1
                # Never a formula, never its result: the very text the file holds.
                if data_type != "s" or value != calc_lines(text) or cached != value:
                    mismatches.append((number, column, text, value, data_type, cached))
            elif not _same_cell(text, value, data_type):
                mismatches.append((number, column, text, value, data_type, cached))
    assert not mismatches, mismatches[:10]

    # Every guard character reached the spreadsheet, and the hand-made rows are all there.
    firsts = {text[1] for row in expected[1:] for text in row if _guarded(text)}
    assert set(GUARD_FIRST) <= firsts
    # And cells guarded for what follows their leading white space.
    assert {" ", "\u00a0"} <= firsts
    assert guarded >= 3 * len(ADVERSARIAL)
    by_id = {row[0]: row for row in expected[1:]}
    first = by_id[str(adversarial_ids[0])]
    assert first[1:4] == ["'=SUM(1,2)", "'=1+2", "'=1+2, vpn, a,b"]
    row_of_first = next(i for i, row in enumerate(expected) if row is first)
    assert values[row_of_first][1] == ("'=SUM(1,2)", "s")
    spaced = by_id[str(adversarial_ids[9])]
    assert spaced[1:3] == ["'\n=1+2 after a line feed", "'  =1+1 after spaces"]
    multiline = by_id[str(adversarial_ids[11])]
    assert multiline[1] == 'Comma, and "quotes", and\nline breaks'
    assert multiline[2] == 'Line 1\r\nLine 2\rLine 3\n"end"'

    # Told to trim spaces, Calc evaluates "  =1+1" (the control); a guarded cell stays the
    # very text the file holds.
    trimmed_xlsx, trimmed_control = _convert(
        command,
        [exported, control],
        tmp_path / "out-trimmed",
        tmp_path / "lo-profile",
        infilter=TRIMMING_INFILTER,
    )
    assert _cells(trimmed_control, data_only=True)[4][1] == (2, "n")
    assert _cells(trimmed_control, data_only=False)[4][1] == ("=1+1", "f")
    trimmed = _cells(trimmed_xlsx, data_only=True)
    formulas_left = [
        (number, column, text, cell)
        for number, (want, got) in enumerate(zip(expected, trimmed, strict=True))
        for column, (text, cell) in enumerate(zip(want, got, strict=False))
        if _guarded(text) and cell != (calc_lines(text), "s")
    ]
    assert not formulas_left, formulas_left[:10]


# Cells a workbook must hold as written: Excel's escape syntax in runs that share an
# underscore, and text past Excel's cell limit (cut there and marked), in UTF-16 units.
WORKBOOK_TEXTS = (
    "_x0041_x0007_",
    "__x0041__x0041_x00e9_ and _X0041_",
    "Long text " + "".join(f"{i:07d}" for i in range(40_000 // 7)),
    "😀" * 20_000,
)
EXCEL_CELL_LIMIT = 32_767


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitted(text: str) -> str:
    """What an Excel cell can hold of `text`: all of it, or as much as fits before the
    marker, counted in UTF-16 units."""
    if _utf16(text) <= EXCEL_CELL_LIMIT:
        return text
    room = EXCEL_CELL_LIMIT - _utf16(xlsx.CUT_MARKER)
    kept, used = [], 0
    for char in text:
        used += _utf16(char)
        if used > room:
            break
        kept.append(char)
    return "".join(kept) + xlsx.CUT_MARKER


async def test_libreoffice_reads_the_workbook_cells_as_written(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    command = soffice()
    with scratch_database(server_url, template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=5, seed=3)
            ids = []
            for text in WORKBOOK_TEXTS:
                # A title holds at most 500 characters; a description any length.
                row = conn.execute(
                    "INSERT INTO tickets (title, description, status_id, priority_id) "
                    "VALUES (%s, %s, 1, 1) RETURNING id",
                    (text[:500], text),
                ).fetchone()
                assert row is not None
                ids.append(str(row[0]))
        data = await _export(
            url,
            tmp_path / "home",
            columns=["id", "title", "description"],
            export_format=formats.XLSX,
        )
    rows = calc_csv(command, data, tmp_path)
    calc = {row[0]: row[1:] for row in rows[1:]}
    for ticket_id, text in zip(ids, WORKBOOK_TEXTS, strict=True):
        title, description = calc[ticket_id]
        assert title == text[:500]
        assert description == _fitted(text), (description[:40], description[-40:])
    assert calc[ids[0]] == ["_x0041_x0007_", "_x0041_x0007_"]
    assert calc[ids[2]][1].endswith(xlsx.CUT_MARKER)
    # openpyxl holds the same cells, Office's escapes decoded as Excel decodes them.
    book = openpyxl.load_workbook(io.BytesIO(data))
    held = {
        str(row[0].value): [ooxml_text(cell.value) for cell in row[1:]]
        for row in book.active.iter_rows(min_row=2)
    }
    assert {i: held[i] for i in ids} == {i: calc[i] for i in ids}
