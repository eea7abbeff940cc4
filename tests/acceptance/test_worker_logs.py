"""A real worker's JSON log lines about an export carry its export id and job id."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.workers import Workers, json_log_lines, request_export, wait_status

pytestmark = pytest.mark.slow


def test_worker_log_lines_carry_export_and_job_ids(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    export_id = request_export(seeded_url)
    worker = workers.start(seeded_url, name="a")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=60, workers=workers)
    assert row["status"] == "completed", row["error_code"]
    job_id = row["procrastinate_job_id"]

    # The lines the export's own code writes are found by their ids alone ...
    mine = worker.log_entries(export_id=export_id, job_id=job_id)
    assert [e["event"] for e in mine if "event" in e] == ["started", "completed"]
    completed = next(e for e in mine if e.get("event") == "completed")
    assert (completed["attempt"], completed["rows"], completed["bytes"]) == (
        1,
        row["rows_done"],
        row["size_bytes"],
    )
    # ... and every line of the worker that names the export also names its job.
    entries = json_log_lines(worker.output())
    about_it = [e for e in entries if export_id in str(e.get("export_id", ""))]
    assert about_it
    assert all(e.get("job_id") == job_id for e in about_it), about_it
