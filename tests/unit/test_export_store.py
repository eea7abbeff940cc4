"""The export rows have one owner: exports/store.py runs every statement on them and is the
one place a row becomes an Export."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

from ticketexport import db
from ticketexport.domain.exports import Stage, Status
from ticketexport.exports.store import Export, ExportState

PACKAGE = Path(db.__file__).resolve().parent
_NAME_USE = re.compile(r"""\bq\(\s*["']([a-z_][a-z0-9_]*)["']\s*\)""")
_TABLES = re.compile(r"\b(export_jobs|media_items)\b")
# Reports that read the rows among other tables, each from the room it reports for: the
# event hub's one query for streams and sessions, the audit row in a requester's name, the
# queue's status page and the metrics.
REPORTS = re.compile(r"^(stream_states|audit_insert_for_requester|queue_\w+|metrics_\w+)$")

CLICK = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def _uses() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for match in _NAME_USE.finditer(path.read_text(encoding="utf-8")):
            used.setdefault(match.group(1), set()).add(path.relative_to(PACKAGE).as_posix())
    return used


def test_every_statement_on_the_export_rows_runs_in_the_store() -> None:
    uses = _uses()
    on_exports = {name for name, text in db.queries().items() if _TABLES.search(text)}
    assert {"export_get", "export_list", "export_complete", "media_item_lost"} <= on_exports
    elsewhere = {
        name: sorted(uses.get(name, set()) - {"exports/store.py"})
        for name in on_exports
        if not REPORTS.match(name)
    }
    assert {name: where for name, where in elsewhere.items() if where} == {}


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.UUID("0b5a7c1e-8a43-4c59-9c1e-2f1d3f8e9a10"),
        "status": "completed",
        "stage": None,
        "attempt": 2,
        "rows_done": 300,
        "rows_total": 300,
        "error_code": None,
        "error_message": None,
        "requester_id": 7,
        "expires_at": CLICK + dt.timedelta(hours=24),
        "file_lost_at": None,
        "requester_email": "ana@example.com",
        "requester_name": "Ana",
        "requested_at": CLICK,
        "as_of": CLICK,
        "as_of_snapshot": "100:100:",
        "as_of_lsn": "0/1A2B3C4",
        "view_name": "All tickets",
        "request": {"format": "xlsx"},
        "started_at": CLICK,
        "progress_at": CLICK,
        "heartbeat_at": CLICK,
        "finished_at": CLICK,
        "cancel_requested_at": None,
        "auto_downloaded_at": None,
        "procrastinate_job_id": 41,
        "retry_of_id": None,
        "read_from": "primary",
        "standby_fallback": None,
        "standby_conflicts": 0,
        "cleanup_failures": 0,
        "media_item_id": uuid.UUID("5d1f0c2a-1111-4a5b-8c9d-0e1f2a3b4c5d"),
        "file_name": "tickets.xlsx",
        "size_bytes": 1234,
        "content_type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "storage_backend": "local",
        "object_key": "exports/0b5a7c1e-8a43-4c59-9c1e-2f1d3f8e9a10/2/tickets.xlsx",
        "sha256": "0" * 64,
    }
    row.update(changes)
    return row


def test_a_row_reads_as_a_typed_export() -> None:
    export = Export.from_row(_row())
    assert export.id == "0b5a7c1e-8a43-4c59-9c1e-2f1d3f8e9a10"
    assert export.status is Status.COMPLETED
    assert export.format == "xlsx"
    # A request this code did not write is shown, not trusted: no frozen request.
    assert export.frozen is None
    assert export.file is not None
    assert (export.file.name, export.file.size_bytes) == ("tickets.xlsx", 1234)
    assert export.file.media_item_id == "5d1f0c2a-1111-4a5b-8c9d-0e1f2a3b4c5d"
    assert not export.active


def test_an_export_without_a_file_has_none() -> None:
    export = Export.from_row(
        _row(
            status="running",
            stage="exporting",
            media_item_id=None,
            **dict.fromkeys(
                ("file_name", "size_bytes", "content_type", "storage_backend", "object_key"), None
            ),
            sha256=None,
            request={"format": 3},
        )
    )
    assert export.file is None
    assert export.stage is Stage.EXPORTING
    assert export.active
    assert export.format is None


def test_a_stream_state_reads_the_same_fields() -> None:
    row = _row(id="0b5a7c1e-8a43-4c59-9c1e-2f1d3f8e9a10", kind="export")
    state = ExportState.from_row(row)
    full = Export.from_row(_row())
    assert state == ExportState(
        **{name: getattr(full, name) for name in ExportState.__dataclass_fields__}
    )
