"""The manifest of every format: its SHA-256, size and row count match the file, its columns
the file's header, and a CSVW implementation reads the CSV typed through its description."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
import pytest_asyncio

from tests.support.api import api, run_worker
from tests.support.components import require_module
from tests.support.formats import gunzip, xlsx_sheet
from tests.support.services import actor_for
from tests.support.web import Web, insert_tickets, make_user, running
from ticketexport import tokens
from ticketexport.exports.formats import BOM
from ticketexport.tokens import TokenRequest
from ticketexport.views import saved
from ticketexport.views.model import parse_definition

csvw = require_module("csvw", "the csvw package (the test extra) is not installed")

ADMIN = "manifest.admin@example.com"
STAFF = "manifest.staff@example.com"
COLUMNS = [
    "id",
    "title",
    "status",
    "contact_id",
    "created_at",
    "closed_at",
    "tags",
    "snoozed",
    "snoozed_until",
    "tasks",
]


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 25, title="Manifest")
    # Text a CSV reader must not mistake: a formula (guarded), a quote, a comma, a newline.
    conn.execute("UPDATE tickets SET title = '=1+2, \"x\"' || chr(10) || 'y' WHERE id = 2")
    conn.execute("UPDATE tickets SET snoozed_until = now() + interval '1 day' WHERE id = 3")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=512, admin=True),
        STAFF: make_user(conn, STAFF, permissions=512),
    }


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int]) -> AsyncIterator[Web]:
    async with running(db_url, max_active_exports_per_user=0) as client:
        yield client


async def _token_and_view(web: Web) -> tuple[str, int]:
    user = actor_for(web.services.database_url, ADMIN)
    definition = parse_definition(
        {
            "name": "Manifest view",
            "conditions_and": [],
            "conditions_or": [],
            "columns": COLUMNS,
            "sort": [{"column": "id", "direction": "asc"}],
        }
    )
    async with web.pool.connection() as conn:
        view_id = await saved.create_saved_view(conn, user, definition, system_wide=False)
        created = await tokens.create_token(
            conn,
            user,
            TokenRequest(name="manifest", scopes=("exports:read", "exports:write"), days=1),
            client_ip=None,
        )
    return created.secret, view_id


def _rows(export_format: str, data: bytes) -> int:
    if export_format in ("csv", "csv.gz"):
        text = (gunzip(data) if export_format == "csv.gz" else data)[len(BOM) :].decode()
        return len(list(csv.reader(io.StringIO(text, newline="")))) - 1
    if export_format == "xlsx":
        _, cells = xlsx_sheet(data)
        return len(cells) - 1
    return int(pq.read_metadata(io.BytesIO(data)).num_rows)


def _header(export_format: str, data: bytes) -> list[str]:
    if export_format in ("csv", "csv.gz"):
        text = (gunzip(data) if export_format == "csv.gz" else data)[len(BOM) :].decode()
        return next(csv.reader(io.StringIO(text, newline="")))
    if export_format == "xlsx":
        _, cells = xlsx_sheet(data)
        return [str(cell) for cell in cells[0]]
    return list(pq.read_schema(io.BytesIO(data)).names)


@pytest.mark.parametrize("export_format", ["csv", "csv.gz", "xlsx", "parquet"])
async def test_the_manifest_matches_the_file(
    web: Web, db_url: str, export_format: str, tmp_path: Path
) -> None:
    secret, view_id = await _token_and_view(web)
    made = await api(
        web, "POST", "/exports", secret, json={"view": str(view_id), "format": export_format}
    )
    assert made.status == 202, await made.text()
    export = await made.json()
    assert export["format"] == export_format
    # No manifest before there is a file.
    assert (await api(web, "GET", f"/exports/{export['id']}/manifest", secret)).status == 404
    await run_worker(db_url, export["id"])
    file = await api(web, "GET", f"/exports/{export['id']}/file", secret)
    assert file.status == 200
    data = await file.read()
    response = await api(web, "GET", f"/exports/{export['id']}/manifest", secret)
    assert response.status == 200
    manifest = await response.json()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == len(data)
    assert manifest["rows"] == _rows(export_format, data) == 25
    assert manifest["export_id"] == export["id"]
    assert manifest["view"] == str(view_id)
    assert manifest["format"] == export_format
    assert manifest["since"] is None
    assert manifest["request"]["columns"] == COLUMNS
    assert manifest["file_name"] == file.headers["Content-Disposition"].split('"')[1]
    for key in ("as_of", "requested_at", "completed_at"):
        assert dt.datetime.fromisoformat(manifest[key]).tzinfo is not None
    assert [c["name"] for c in manifest["columns"]] == COLUMNS
    assert [c["label"] for c in manifest["columns"]] == _header(export_format, data)
    types = {c["name"]: c["type"] for c in manifest["columns"]}
    assert types["id"] == types["contact_id"] == "integer"
    assert types["created_at"] == "datetime"
    assert types["title"] == "string"
    assert types["snoozed"] == ("string" if export_format == "xlsx" else "boolean")
    assert ("csvw" in manifest) == (export_format == "csv")
    # The page's manifest is the same document, for those who may download.
    await web.login(ADMIN)
    page = await web.client.get(f"/staff/exports/{export['id']}/manifest")
    assert page.status == 200
    assert await page.json() == manifest
    if export_format == "csv":
        _check_csvw(manifest, data, tmp_path)


def _check_csvw(manifest: dict[str, Any], data: bytes, tmp_path: Path) -> None:
    """A CSVW implementation validates the description against the file and reads it typed."""
    (tmp_path / manifest["file_name"]).write_bytes(data)
    metadata = tmp_path / "manifest-metadata.json"
    metadata.write_text(json.dumps(manifest["csvw"]), encoding="utf-8")
    validator = csvw.CSVW(str(metadata), validate=True)
    assert validator.is_valid, validator.warnings
    assert len(validator.to_json()["tables"][0]["row"]) == manifest["rows"]
    table = csvw.Table.from_file(metadata)
    rows = list(table.iterdicts(strict=True))
    assert len(rows) == manifest["rows"]
    first = rows[0]
    assert first["id"] == 1
    assert isinstance(first["created_at"], dt.datetime)
    assert first["created_at"].tzinfo is not None
    assert first["snoozed"] is False
    assert rows[2]["snoozed"] is True
    assert first["closed_at"] is None
    assert rows[1]["title"] == '\'=1+2, "x"\ny'


async def test_manifest_needs_download_rights(web: Web, db_url: str) -> None:
    user = actor_for(web.services.database_url, STAFF)
    async with web.pool.connection() as conn:
        created = await tokens.create_token(
            conn,
            user,
            TokenRequest(name="staff", scopes=("exports:read", "exports:write"), days=1),
            client_ip=None,
        )
    made = await api(web, "POST", "/exports", created.secret, json={})
    export_id = (await made.json())["id"]
    await run_worker(db_url, export_id)
    # Its requester, not an administrator: the file and the manifest are not theirs to have.
    for path in ("file", "manifest"):
        response = await api(web, "GET", f"/exports/{export_id}/{path}", created.secret)
        assert response.status == 404
    await web.login(STAFF)
    assert (await web.client.get(f"/staff/exports/{export_id}/manifest")).status == 403
    await web.logout_cookies()
    assert (await web.client.get(f"/staff/exports/{export_id}/manifest")).status == 401
    await web.login(ADMIN)
    assert (await web.client.get(f"/staff/exports/{export_id}/manifest")).status == 200
