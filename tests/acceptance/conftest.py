"""Acceptance fixtures: the seeded data, a shared home, and worker processes stopped for sure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import SeededTemplates, Seeding, scratch_database
from tests.support.servers import Servers
from tests.support.workers import (
    SEEDING,
    TICKETS,
    Reference,
    Workers,
    request_export,
    stored_digest,
    wait_status,
)


@pytest.fixture(scope="session")
def seeding() -> Seeding:
    """The data behind `seeded_url` here: TICKETS seeded tickets."""
    return SEEDING


@pytest.fixture
def home(run_dir: Path, request: pytest.FixtureRequest) -> Path:
    """TICKETEXPORT_HOME shared by every worker of one test (so local storage is shared)."""
    path = run_dir / "acceptance" / f"{request.node.name[:60]}-{os.urandom(3).hex()}"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def workers(home: Path) -> Iterator[Workers]:
    started = Workers(home)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def servers(home: Path) -> Iterator[Servers]:
    started = Servers(home)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def reference_export(
    server_url: str, seeded_templates: SeededTemplates, seeding: Seeding, run_dir: Path
) -> Reference:
    home = run_dir / "acceptance" / "reference"
    home.mkdir(parents=True)
    started = Workers(home)
    with scratch_database(server_url, seeded_templates.name(seeding)) as url:
        try:
            export_id = request_export(url)
            started.start(url)
            row = wait_status(url, export_id, {"completed", "failed"}, timeout=60, workers=started)
        finally:
            started.stop_all()
    assert row["status"] == "completed", row["error_code"]
    assert row["attempt"] == 1
    assert row["rows_done"] == row["rows_total"] == TICKETS
    # The reference is the bytes in storage, not the hash the worker recorded.
    assert stored_digest(home, row["object_key"]) == (row["sha256"], row["size_bytes"])
    return Reference(sha256=row["sha256"], size=row["size_bytes"], rows=row["rows_done"])
