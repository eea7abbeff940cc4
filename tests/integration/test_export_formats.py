"""csv.gz, xlsx and Parquet exports in-process: the CSV's rows in each, hostile text, byte-identical
re-runs, the xlsx row limit, and the format on the pages and in the audit rows."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import io
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web

from tests.support.components import missing_component, require_module
from tests.support.databases import Seeding
from tests.support.formats import (
    GZIP_TYPE,
    PARQUET_TYPE,
    XLSX_TYPE,
    assert_parquet_holds,
    assert_xlsx_holds,
    gunzip,
    xlsx_sheet,
)
from tests.support.services import actor_for, services_for
from tests.support.web import running
from ticketexport import seed
from ticketexport.domain.exports import ERROR_MESSAGES
from ticketexport.exports import formats, service, store, xlsx
from ticketexport.exports.formats import BOM
from ticketexport.exports.store import Export
from ticketexport.exports.worker import ExportRun
from ticketexport.services import Services
from ticketexport.storage.local import LocalStorage
from ticketexport.views import registry
from ticketexport.views.model import ListRequest

ANCHOR = dt.date(2026, 6, 1)
TIMEZONE = "America/St_Johns"
# A view holds at most 20 of the 21 columns; Language is text like several others.
EVERY_COLUMN = [key for key in registry.COLUMNS if key != "language"]
ADMIN = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export)

# Text no spreadsheet cell may alter: formula-looking, XML-special, control characters
# (dropped: XML cannot hold them), line breaks, outer blanks, Office's own escape syntax.
HOSTILE_TITLES = (
    "=SUM(1,2)",
    "+1+2",
    "  @lead blanks and trail  ",
    "Tom & Jerry <tag> ]]> \"quoted\" 'single'",
    "Line 1\r\nLine 2\rLine 3\n",
    "\tTab first, bell \x07, escape \x1b, form feed \x0c, vertical tab \x0b",
    "_x0041_ is not A, _x00e9_ nor é",
    "Ünïcödé Привет 你好 مرحبا 😀👍🏽 \ufffe",
)


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=300, seed=3, anchor=ANCHOR)


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with services_for(
        seeded_url,
        tmp_path,
        env={"TICKETEXPORT_TIMEZONE": TIMEZONE},
        storage=LocalStorage(tmp_path / "exports"),
    ) as services:
        yield services


@dataclasses.dataclass(frozen=True)
class Exported:
    """An export run in-process, and its stored bytes (empty when it did not complete)."""

    export: Export
    data: bytes


async def _export(deps: Services, request: ListRequest, key: str) -> Exported:
    """Request and run one export in-process; its row and stored bytes."""
    user = actor_for(deps.database_url)
    requested = await service.request_export(
        deps, user, request, export_format=formats.get(key), client_ip=None
    )
    async with deps.pool.connection() as conn:
        export = await store.get(conn, requested.export_id)
    assert export is not None
    await ExportRun(deps, requested.export_id, export.procrastinate_job_id).run()
    async with deps.pool.connection() as conn:
        export = await store.get(conn, requested.export_id)
    assert export is not None
    data = b""
    if export.status == "completed":
        assert isinstance(deps.storage, LocalStorage)
        assert export.file is not None
        data = b"".join([chunk async for chunk in deps.storage.read(export.file.object_key)])
        assert export.file.size_bytes == len(data)
        assert hashlib.sha256(data).hexdigest() == export.file.sha256
    return Exported(export, data)


def _csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith(BOM)
    return list(csv.reader(io.StringIO(data[len(BOM) :].decode(), newline="")))


async def _saved_view(deps: Services, columns: list[str], sort: list[dict[str, str]]) -> str:
    from ticketexport.views import saved
    from ticketexport.views.model import parse_definition

    definition = parse_definition(
        {"name": "Every / column: [all]?", "columns": columns, "sort": sort}
    )
    async with deps.pool.connection() as conn:
        view_id = await saved.create_saved_view(
            conn, actor_for(deps.database_url), definition, system_wide=False
        )
    return str(view_id)


def _make_hostile(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM tickets ORDER BY id LIMIT %s", (len(HOSTILE_TITLES),)
            )
        ]
        for ticket_id, title in zip(ids, HOSTILE_TITLES, strict=True):
            conn.execute(
                # Fractions of a second: the CSV shows whole seconds, so must the workbook.
                "UPDATE tickets SET title = %s, description = %s, tags = %s, "
                "created_at = created_at + interval '0.789 s' WHERE id = %s",
                (title, title[::-1], [title[:5], "&<>"], ticket_id),
            )


async def test_every_format_holds_the_csv_rows(deps: Services, seeded_url: str) -> None:
    _make_hostile(seeded_url)
    view_id = await _saved_view(deps, EVERY_COLUMN, [{"column": "title", "direction": "asc"}])
    request = ListRequest(view=view_id, q="", sort="view", filters={}, page=None)
    exported = {key: await _export(deps, request, key) for key in formats.FORMATS}
    for key, row in exported.items():
        assert row.export.status == "completed", (key, row.export.error_code)
        assert row.export.rows_done == row.export.rows_total == 300
        assert row.export.file.content_type == formats.FORMATS[key].content_type
        assert row.export.file.name.endswith("." + key)
        assert row.export.format == key

    csv_bytes = exported["csv"].data
    assert gunzip(exported["csv.gz"].data) == csv_bytes
    rows = _csv_rows(csv_bytes)
    types = [registry.COLUMNS[c].value_type for c in EVERY_COLUMN]
    sheet = assert_xlsx_holds(exported["xlsx"].data, rows, types)
    assert sheet.title == "Every column all"
    # Every hostile title reaches the workbook as written, less what XML cannot hold.
    titles = {cell.value for cell in sheet["B"][1:]}
    assert "=SUM(1,2)" in titles
    assert "Line 1\r\nLine 2\rLine 3\n" in titles
    assert "  @lead blanks and trail  " in titles
    assert "\tTab first, bell , escape , form feed , vertical tab " in titles
    assert "_x005F_x0041_ is not A, _x005F_x00e9_ nor é" in titles  # raw: Excel shows _x0041_
    widths = [sheet.column_dimensions[c].width for c in ("A", "B", "K")]
    assert widths == [13, 48, 20]
    # The Parquet file holds the CSV's values, typed and unguarded, hostile text as written.
    assert_parquet_holds(exported["parquet"].data, rows, types, TIMEZONE)


async def test_reruns_give_the_same_bytes(deps: Services) -> None:
    request = ListRequest(view="all", q="", sort="priority", filters={}, page=None)
    for key in formats.FORMATS:
        first = await _export(deps, request, key)
        second = await _export(deps, request, key)
        assert first.export.id != second.export.id
        assert first.export.file is not None
        assert second.export.file is not None
        assert first.export.file.sha256 == second.export.file.sha256, key
        assert first.data == second.data, key
        if key == "xlsx":
            workbook = first.data
    archive = zipfile.ZipFile(io.BytesIO(workbook))
    assert [i.filename for i in archive.infolist()] == [
        "[Content_Types].xml",
        "_rels/.rels",
        "xl/_rels/workbook.xml.rels",
        "xl/styles.xml",
        "xl/worksheets/sheet1.xml",
        "xl/workbook.xml",
    ]


async def test_a_view_above_the_sheet_limit_fails_at_counting(
    deps: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A million seeded rows would take minutes; the limit is the format's, so lower it.
    small = dataclasses.replace(formats.XLSX, max_rows=299)
    monkeypatch.setitem(formats.FORMATS, "xlsx", small)
    request = ListRequest(view="all", q="", sort=None, filters={}, page=None)
    failed = await _export(deps, request, "xlsx")
    assert failed.export.status == "failed"
    assert failed.export.error_code == "too_many_rows_for_xlsx"
    assert failed.export.error_message == ERROR_MESSAGES["too_many_rows_for_xlsx"]
    assert "CSV" in failed.export.error_message
    assert failed.export.rows_total == 300
    assert failed.export.rows_done == 0
    assert failed.export.file is None
    assert not list((Path(deps.settings.home) / "exports").rglob("*.xlsx"))
    # At the limit it goes through.
    monkeypatch.setitem(formats.FORMATS, "xlsx", dataclasses.replace(small, max_rows=300))
    assert (await _export(deps, request, "xlsx")).export.status == "completed"
    with psycopg.connect(deps.database_url) as conn:
        audits = conn.execute(
            "SELECT action, details->>'format', details->>'error_code' FROM audit_log "
            "WHERE action IN ('export.failed', 'export.completed') ORDER BY id"
        ).fetchall()
    assert audits == [
        ("export.failed", "xlsx", "too_many_rows_for_xlsx"),
        ("export.completed", "xlsx", None),
    ]


async def test_pages_offer_and_show_the_format(seeded_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    # One export of each format is active at once: room for all of them.
    async with running(
        seeded_url,
        storage_url=(home / "exports").as_uri(),
        max_active_exports_per_user=len(formats.FORMATS),
    ) as web:
        assert (await web.login(ADMIN.email, ADMIN.password)).status == 303
        page = await (await web.client.get("/staff/tickets?view=open")).text()
        control = re.search(r'<select name="format"[^>]*>(.*?)</select>', page, re.S)
        assert control is not None, "the list has no format control"
        assert re.findall(r'<option value="([^"]+)"', control.group(1)) == list(formats.FORMATS)
        assert 'id="export-button"' in page
        token = await web.csrf("/staff/tickets")
        ids = {}
        for key in formats.FORMATS:
            response = await web.client.post(
                "/staff/tickets/export",
                data={"csrf_token": token, "view": "open", "format": key},
                allow_redirects=False,
            )
            assert response.status == 303
            ids[key] = response.headers["Location"].rsplit("/", 1)[1]
        bad = await web.client.post(
            "/staff/tickets/export",
            data={"csrf_token": token, "view": "open", "format": "pdf"},
            allow_redirects=False,
        )
        assert bad.status == 400
        for key, export_id in ids.items():
            await ExportRun(web.services, export_id, None).run()
            status = await (await web.client.get(f"/staff/exports/{export_id}")).text()
            label = formats.FORMATS[key].label
            assert f"Format: {label}" in status
            assert f">Download {label}</a>" in status
            download = await web.client.get(f"/staff/exports/{export_id}/download")
            assert download.status == 200
            assert download.headers["Content-Type"] == formats.FORMATS[key].content_type
            assert "Content-Encoding" not in download.headers
            assert re.search(
                rf'filename="tickets-open-\d{{8}}-\d{{6}}\.{re.escape(key)}"',
                download.headers["Content-Disposition"],
            )
            body = await download.read()
            if key == "csv.gz":
                assert download.headers["Content-Type"] == GZIP_TYPE
                assert gunzip(body).startswith(BOM)
            if key == "xlsx":
                assert download.headers["Content-Type"] == XLSX_TYPE
                assert body.startswith(b"PK\x03\x04")
            if key == "parquet":
                assert download.headers["Content-Type"] == PARQUET_TYPE
                assert body.startswith(b"PAR1")
                assert body.endswith(b"PAR1")
        mine = await (await web.client.get("/staff/exports")).text()
        for key in formats.FORMATS:
            assert f'<td data-field="format">{formats.FORMATS[key].label}</td>' in mine
    with psycopg.connect(seeded_url) as conn:
        requested = conn.execute(
            "SELECT details->>'format' FROM audit_log WHERE action = 'export.requested' ORDER BY id"
        ).fetchall()
    assert [r[0] for r in requested] == list(formats.FORMATS)


# Excel's most characters (UTF-16 code units) in one cell.
EXCEL_CELL_LIMIT = 32_767


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def excel_cut(text: str, marker: str) -> str:
    """The longest start of `text` that, followed by `marker`, fits in an Excel cell; the
    text itself when it fits whole."""
    if utf16_units(text) <= EXCEL_CELL_LIMIT:
        return text
    room = EXCEL_CELL_LIMIT - utf16_units(marker)
    kept = ""
    for char in text:
        if utf16_units(kept) + utf16_units(char) > room:
            break
        kept += char
    return kept + marker


# Text that a workbook must hold as it is (or, past Excel's limit, cut there and marked),
# whatever the reader. Descriptions: a title holds at most 500 characters.
CELL_TEXTS = {
    "long": "Long text " + "".join(f"{i:07d}" for i in range(40_000 // 7)) + "end",
    "emoji": "😀" * 20_000,  # 20,000 characters, 40,000 UTF-16 units
    "mixed": ("ab😀" * 11_000)[:32_000],
    "at the limit": "x" * EXCEL_CELL_LIMIT,
    "overlapping escapes": "_x0041_x0007_",
    "escape runs": "__x0041__x0041_x00e9_ and _x12_ and _X0041_ and _x004G_",
}
# Characters a spreadsheet may skip before it sees a formula's first character.
INVISIBLE_LEADS = "\x1c\x1d\x1e\x1f\u0085\u180e\u200b\u200c\u200d\u2060"


async def test_xlsx_cells_hold_what_the_ticket_holds(deps: Services, seeded_url: str) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM tickets ORDER BY id LIMIT 6")]
        for ticket_id, text in zip(ids, CELL_TEXTS.values(), strict=True):
            conn.execute(
                "UPDATE tickets SET description = %s, title = %s WHERE id = %s",
                (text, text[:500], ticket_id),
            )
    view_id = await _saved_view(
        deps, ["id", "title", "description"], [{"column": "id", "direction": "asc"}]
    )
    request = ListRequest(view=view_id, q="", sort="view", filters={}, page=None)
    workbook = await _export(deps, request, "xlsx")
    assert workbook.export.status == "completed", workbook.export.error_code
    _, rows = xlsx_sheet(workbook.data)
    cells = {row[0]: row[1:] for row in rows[1:]}
    marker = xlsx.CUT_MARKER
    assert marker.strip()
    assert utf16_units(marker) < 40
    for ticket_id, (name, text) in zip(ids, CELL_TEXTS.items(), strict=True):
        title, description = cells[ticket_id]
        assert title == text[:500], name
        assert utf16_units(description) <= EXCEL_CELL_LIMIT, name
        assert description == excel_cut(text, marker), (name, description[:40], description[-40:])
    assert cells[ids[0]][1].endswith(marker)
    assert cells[ids[3]][1] == CELL_TEXTS["at the limit"]
    assert cells[ids[4]] == ["_x0041_x0007_", "_x0041_x0007_"]
    # The CSV holds every character.
    text = _csv_rows((await _export(deps, request, "csv")).data)
    assert {row[0]: row[2] for row in text[1:]}[str(ids[0])] == CELL_TEXTS["long"]


async def test_the_formula_guard_looks_past_invisible_leading_characters(
    deps: Services, seeded_url: str
) -> None:
    titles = [f"{lead}=1+2" for lead in INVISIBLE_LEADS] + [
        f"{lead}{lead} -3" for lead in INVISIBLE_LEADS
    ]
    titles += ["\u200bplain", "a\u200b=1+2"]
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        ids = [
            row[0]
            for row in conn.execute("SELECT id FROM tickets ORDER BY id LIMIT %s", (len(titles),))
        ]
        for ticket_id, title in zip(ids, titles, strict=True):
            conn.execute("UPDATE tickets SET title = %s WHERE id = %s", (title, ticket_id))
    view_id = await _saved_view(deps, ["id", "title"], [{"column": "id", "direction": "asc"}])
    request = ListRequest(view=view_id, q="", sort="view", filters={}, page=None)
    rows = _csv_rows((await _export(deps, request, "csv")).data)
    held = {row[0]: row[1] for row in rows[1:]}
    for ticket_id, title in zip(ids, titles, strict=True):
        formula_like = title.lstrip(INVISIBLE_LEADS + " ")[:1] in "=+-@"
        assert held[str(ticket_id)] == ("'" + title if formula_like else title), repr(title)
    assert sum(held[str(i)].startswith("'") for i in ids) == 2 * len(INVISIBLE_LEADS)


def _duckdb_with_httpfs() -> Any:
    """A DuckDB connection with httpfs loaded from the duckdb-ext-httpfs package: the
    extension is never downloaded."""
    duckdb = require_module("duckdb", "duckdb is not installed")
    try:
        package = importlib.metadata.distribution("duckdb-ext-httpfs")
    except importlib.metadata.PackageNotFoundError:
        missing_component("duckdb-ext-httpfs is not installed")
    extensions = Path(str(package.locate_file("duckdb_ext/extensions")))
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET extension_directory = ?", [str(extensions)])
    con.execute("LOAD httpfs")
    return con


# DuckDB reads the last 16 KiB of a remote Parquet file at once (the whole file when it is
# smaller): the footer and what precedes it, never the row groups of a larger file.
DUCKDB_TAIL_READ = 16 * 1024


@pytest.mark.parametrize("seeding", [Seeding(tickets=6000, seed=3, anchor=ANCHOR)])
async def test_duckdb_reads_a_parquet_export_over_http_and_counts_from_the_footer(
    seeded_url: str, tmp_path: Path
) -> None:
    served: list[tuple[str, str, str | None, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.endswith("/download"):
            served.append(
                (request.method, request.path, request.headers.get("Range"), response.status)
            )

    def setup(app: web.Application) -> None:
        app.on_response_prepare.append(record)

    home = tmp_path / "home"
    async with running(seeded_url, storage_url=(home / "exports").as_uri(), setup=setup) as site:
        assert (await site.login(ADMIN.email, ADMIN.password)).status == 303
        view_id = await _saved_view(
            site.services, EVERY_COLUMN, [{"column": "id", "direction": "asc"}]
        )
        token = await site.csrf("/staff/tickets")
        asked = await site.client.post(
            "/staff/tickets/export",
            data={"csrf_token": token, "view": view_id, "format": "parquet"},
            allow_redirects=False,
        )
        assert asked.status == 303
        export_id = asked.headers["Location"].rsplit("/", 1)[1]
        await ExportRun(site.services, export_id, None).run()
        path = f"/staff/exports/{export_id}/download"
        whole = await (await site.client.get(path)).read()
        url = str(site.client.make_url(path))
        cookies = "; ".join(f"{c.key}={c.value}" for c in site.client.session.cookie_jar)
        served.clear()

        def count(cookie: str) -> Any:
            with _duckdb_with_httpfs() as con:
                con.execute(
                    "CREATE SECRET session (TYPE http, EXTRA_HTTP_HEADERS MAP {'Cookie': ?})",
                    [cookie],
                )
                return con.execute("SELECT count(*) FROM read_parquet(?)", [url]).fetchone()

        # DuckDB blocks: it runs in a thread, off the event loop that serves it.
        assert await asyncio.to_thread(count, cookies) == (6000,)
        seen = list(served)
        served.clear()
        duckdb = require_module("duckdb", "duckdb is not installed")
        with pytest.raises(duckdb.HTTPException, match=r"40[134]"):
            await asyncio.to_thread(count, "te_session=forged")
        refused = list(served)

    footer = int.from_bytes(whole[-8:-4], "little") + 8
    tail = max(footer, DUCKDB_TAIL_READ)
    assert len(whole) > 10 * tail, (len(whole), footer)  # so the row groups are far away
    ranges = [r for method, _, r, _ in seen if method == "GET"]
    assert ranges, seen
    assert all(status in (200, 206) for *_, status in seen), seen
    fetched = 0
    for sent in ranges:
        assert sent is not None, seen  # never the whole file
        bounds = re.fullmatch(r"bytes=(\d+)-(\d+)", sent)
        assert bounds is not None, sent
        start, end = int(bounds[1]), int(bounds[2])
        assert len(whole) - tail <= start <= end < len(whole), (sent, len(whole), footer)
        fetched += end - start + 1
    assert fetched <= tail, seen
    assert refused, "the forged session reached no download"
    assert all(status in (401, 403, 404) for *_, status in refused), refused
