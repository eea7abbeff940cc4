"""A real worker's JSON log lines about an export carry its export id and job id."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.workers import (
    Workers,
    json_log_lines,
    request_export,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow


def test_worker_log_lines_carry_export_and_job_ids(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    export_id = request_export(seeded_url)
    worker = workers.start(seeded_url, name="a")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=60, workers=workers)
    assert row["status"] == "completed", row["error_code"]
    job_id = row["procrastinate_job_id"]
    # The row turns completed when the worker commits; its log line follows a moment later.
    wait_for(
        "the worker's completion line",
        lambda: "completed" in worker.events(export_id),
        timeout=30,
        workers=workers,
    )

    # The lines the export's own code writes are found by their ids alone ...
    mine = worker.log_entries(export_id=export_id, job_id=job_id)
    events = [e["event"] for e in mine if "event" in e]
    # A loaded machine may add a line (a late heartbeat, say); the attempt's own start and
    # end are always there, in order, and nothing failed.
    assert events[0] == "started", events
    assert events[-1] == "completed", events
    assert not {"failed", "retrying", "stopped"} & set(events), events
    completed = next(e for e in mine if e.get("event") == "completed")
    assert (completed["attempt"], completed["rows"], completed["bytes"]) == (
        1,
        row["rows_done"],
        row["size_bytes"],
    )
    # ... and every line the export job writes names both (maintenance, which runs in the
    # same process, may name the export under its own job).
    entries = json_log_lines(worker.output())
    about_it = [
        e
        for e in entries
        if e.get("export_id") == export_id and e.get("logger") == "ticketexport.exports.worker"
    ]
    assert about_it
    assert all(e.get("job_id") == job_id for e in about_it), about_it
