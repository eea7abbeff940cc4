"""Acceptance fixtures: the seeded data, a shared home, and worker processes stopped for sure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import create_database, drop_database, scratch_database
from tests.support.workers import (
    ANCHOR,
    SEED,
    TICKETS,
    Reference,
    Workers,
    request_export,
    wait_status,
)
from ticketexport import seed


@pytest.fixture(scope="session")
def seeded_template(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database with TICKETS seeded tickets, cloned by each test."""
    name = f"te_accept_{template_db[-12:]}"
    url = create_database(server_url, name, template_db)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            seed.seed(conn, tickets=TICKETS, seed=SEED, anchor=ANCHOR)
        yield name
    finally:
        drop_database(server_url, name)


@pytest.fixture
def seeded_url(server_url: str, seeded_template: str) -> Iterator[str]:
    """A fresh copy of the seeded database for one test."""
    with scratch_database(server_url, seeded_template) as url:
        yield url


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


@pytest.fixture(scope="session")
def reference_export(server_url: str, seeded_template: str, run_dir: Path) -> Reference:
    home = run_dir / "acceptance" / "reference"
    home.mkdir(parents=True)
    started = Workers(home)
    with scratch_database(server_url, seeded_template) as url:
        try:
            export_id = request_export(url)
            started.start(url)
            row = wait_status(url, export_id, {"completed", "failed"}, timeout=60, workers=started)
        finally:
            started.stop_all()
    assert row["status"] == "completed", row["error_code"]
    assert row["attempt"] == 1
    assert row["rows_done"] == row["rows_total"] == TICKETS
    return Reference(sha256=row["sha256"], size=row["size_bytes"], rows=row["rows_done"])
