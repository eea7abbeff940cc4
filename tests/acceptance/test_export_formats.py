"""csv.gz, xlsx and Parquet from a real worker process hold exactly the CSV export's rows, for every
built-in view at several sizes; LibreOffice Calc opens the workbook and evaluates nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.databases import scratch_database
from tests.support.exports import (
    ADMIN,
    TIMEZONE,
    Exported,
    Exporter,
    admin_actor,
    seeded_database,
    worker_log,
    worker_process,
)
from tests.support.formats import (
    GZIP_TYPE,
    PARQUET_TYPE,
    XLSX_TYPE,
    XML_FORBIDDEN,
    assert_parquet_holds,
    assert_xlsx_holds,
    calc_csv,
    gunzip,
    soffice,
    unguard,
)
from tests.support.services import actor_for, services_for
from tests.support.web import exporting_web
from ticketexport import seed
from ticketexport.exports import formats, service, store
from ticketexport.exports.worker import ExportRun
from ticketexport.storage.local import LocalStorage
from ticketexport.views import registry
from ticketexport.views import saved as saved_views
from ticketexport.views import service as view_service
from ticketexport.views.model import parse_definition

pytestmark = pytest.mark.slow

# Seeded once at the first size, then shrunk by deleting tickets for the next ones.
SIZES = (10_000, 1001, 1, 0)
# Every column but Language (a view holds 20), so every value type reaches a workbook.
TYPED_COLUMNS = [key for key in registry.COLUMNS if key != "language"]


def _shrink_to(url: str, size: int) -> None:
    """Deletes scattered tickets until exactly `size` remain."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM tickets WHERE id IN (SELECT id FROM tickets "
            "ORDER BY md5(id::text) LIMIT greatest(0, (SELECT count(*) FROM tickets) - %s))",
            (size,),
        )
        assert conn.execute("SELECT count(*) FROM tickets").fetchone() == (size,)


def _value_types(exported: Exported) -> list[str]:
    columns = exported.row["request"]["view"]["definition"]["columns"]
    return [registry.COLUMNS[key].value_type for key in columns]


def _check(csv_export: Exported, gz: Exported, book: Exported, typed: Exported) -> int:
    """The csv.gz, the xlsx and the Parquet of one request against its CSV; returns the
    row count."""
    assert gz.headers["Content-Type"] == GZIP_TYPE
    assert "Content-Encoding" not in gz.headers
    assert book.headers["Content-Type"] == XLSX_TYPE
    assert typed.headers["Content-Type"] == PARQUET_TYPE
    everything = ((csv_export, "csv"), (gz, "csv.gz"), (book, "xlsx"), (typed, "parquet"))
    for one, extension in everything:
        assert f'.{extension}"; filename*=' in one.headers["Content-Disposition"]
        assert one.row["size_bytes"] == len(one.data)
    assert gunzip(gz.data) == csv_export.data, gz.params
    rows = csv_export.rows
    assert_xlsx_holds(book.data, rows, _value_types(csv_export))
    assert_parquet_holds(typed.data, rows, _value_types(csv_export), TIMEZONE)
    done = {one.row["rows_done"] for one, _ in everything}
    assert done == {len(rows) - 1}
    return len(rows) - 1


async def test_every_view_in_every_format_holds_the_csv_rows(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    with (
        seeded_database(server_url, template_db, SIZES[0], seed_value=13) as url,
        worker_process(url, home) as worker,
    ):
        actor = admin_actor(url)
        async with exporting_web(
            url, home, timezone=TIMEZONE, email=ADMIN.email, password=ADMIN.password
        ) as web:
            async with web.pool.connection() as conn:
                typed_view = await saved_views.create_saved_view(
                    conn,
                    actor,
                    parse_definition(
                        {
                            "name": "Typed: every column",
                            "columns": TYPED_COLUMNS,
                            "sort": [{"column": "sla_due_at", "direction": "asc"}],
                        }
                    ),
                    system_wide=False,
                )
            views = [{"view": key} for key in registry.BUILTIN_VIEWS]
            views.append({"view": str(typed_view), "sort": "view"})
            exporter = Exporter(web)
            for size in SIZES:
                _shrink_to(url, size)
                requests = [{**view, "format": key} for view in views for key in formats.FORMATS]
                try:
                    exported = await exporter.export_many(requests)
                except (AssertionError, TimeoutError):
                    pytest.fail(f"export did not complete; worker log:\n{worker_log(home)}")
                assert worker.poll() is None, worker_log(home)
                counts = {}
                for at in range(0, len(exported), len(formats.FORMATS)):
                    csv_export, gz, book, typed = exported[at : at + len(formats.FORMATS)]
                    assert [e.params["format"] for e in (csv_export, gz, book, typed)] == list(
                        formats.FORMATS
                    )
                    counts[csv_export.params["view"]] = _check(csv_export, gz, book, typed)
                assert counts["all"] == size
                assert counts[str(typed_view)] == size
                if size == SIZES[0]:
                    # Most views have rows here, so the workbooks' order is really compared.
                    assert sum(1 for n in counts.values() if n > 0) >= 8, counts


# --- LibreOffice ---------------------------------------------------------------------------

HOSTILE = (
    "=SUM(1,2)",
    "+1+2",
    "-3+4",
    "@SUM(1,2)",
    '=HYPERLINK("http://example.com","x")',
    "\t=1+2 after a tab",
    'Comma, and "quotes", and\nline breaks',
    "Tom & Jerry <b>bold</b> ]]>",
    "bell \x07 and escape \x1b",
    "Ünïcödé Привет 你好 😀👍🏽",
    "0012",
    "_x0041_ is Office's escape of A, written as text",
)
LO_COLUMNS = ["id", "title", "description", "tags", "contact_id", "created_at", "snoozed", "tasks"]


async def _export_both(url: str, home: Path) -> tuple[bytes, bytes]:
    """The CSV and the xlsx of one saved view, run in-process."""
    storage = LocalStorage(home / "exports")
    user = actor_for(url, ADMIN.email)
    env = {"TICKETEXPORT_TIMEZONE": "Europe/Berlin"}
    files = []
    async with services_for(url, home, env=env, storage=storage) as deps:
        async with deps.pool.connection() as conn:
            view_id = await saved_views.create_saved_view(
                conn,
                user,
                parse_definition(
                    {
                        "name": "Calc check",
                        "columns": LO_COLUMNS,
                        "sort": [{"column": "id", "direction": "desc"}],
                    }
                ),
                system_wide=False,
            )
        request = view_service.parse_list_request({"view": str(view_id)})
        for key in ("csv", "xlsx"):
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
            assert export.status == "completed", export.error_code
            files.append(b"".join([chunk async for chunk in storage.read(export.file.object_key)]))
    return files[0], files[1]


def _as_calc_shows(value_type: str, text: str) -> str:
    """What Calc's CSV export of the workbook shows for one of our CSV cells."""
    if value_type == "timestamp" and text:
        return text[:10] + " " + text[11:19]  # the number format, no offset
    shown = XML_FORBIDDEN.sub("", unguard(text))
    return shown.replace("\r\n", "\n").replace("\r", "\n")


async def test_libreoffice_opens_the_workbook_and_evaluates_nothing(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    command = soffice()
    with scratch_database(server_url, template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=200, seed=5)
            for title in HOSTILE:
                conn.execute(
                    "INSERT INTO tickets (title, description, status_id, priority_id, tags) "
                    "VALUES (%s, %s, 1, 1, %s)",
                    (title, title, [title[:4], "vpn"]),
                )
        csv_bytes, xlsx_bytes = await _export_both(url, tmp_path / "home")

    calc = calc_csv(command, xlsx_bytes, tmp_path)
    ours = list(csv.reader(io.StringIO(csv_bytes[3:].decode(), newline="")))
    types = [registry.COLUMNS[key].value_type for key in LO_COLUMNS]
    assert calc[0] == ours[0]
    assert len(calc) == len(ours) == 1 + 200 + len(HOSTILE)
    mismatches: list[Any] = []
    for number, (got, want) in enumerate(zip(calc[1:], ours[1:], strict=True), start=2):
        expected = [_as_calc_shows(t, v) for t, v in zip(types, want, strict=True)]
        if got != expected:
            mismatches.append((number, got, expected))
    assert not mismatches, mismatches[:5]
    titles = {row[1] for row in calc[1:]}
    # Text that Calc evaluates when it reads it from a CSV stays the text it is.
    assert {"=SUM(1,2)", "+1+2", "-3+4", "@SUM(1,2)", "0012"} <= titles
