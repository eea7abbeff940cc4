"""Retention with real processes: unfinished exports fail at expiry, expired files answer 410."""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.workers import (
    REPO,
    Workers,
    assert_settled,
    export_files,
    export_row,
    request_export,
    wait_for,
    wait_status,
)
from ticketexport import seed

pytestmark = pytest.mark.slow

# Retention is given in hours; these are a few seconds.
SECONDS = 1 / 3600
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A logged-in HTTP client against a real `ticketexport serve` process."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def login(self, email: str, password: str) -> None:
        status, page = self.get("/login")
        assert status == 200
        match = _CSRF.search(page.decode())
        assert match is not None
        form = urllib.parse.urlencode(
            {"email": email, "password": password, "csrf_token": html.unescape(match[1])}
        ).encode()
        with self.opener.open(self.base + "/login", data=form, timeout=10) as response:
            assert response.status == 200
            assert "/login" not in response.url


def _expired_by_db_clock(url: str, export_id: str) -> bool:
    """Whether the database's clock (the one the server and workers judge by) has passed
    the export's expiry."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT expires_at <= clock_timestamp() FROM export_jobs WHERE id = %s", (export_id,)
        ).fetchone()
    return bool(row and row[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def web(seeded_url: str, home: Path) -> Iterator[Browser]:
    """`ticketexport serve` on the test's database and storage, logged in as the admin."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")}
    env.update(
        {
            "DATABASE_URL": seeded_url,
            "TICKETEXPORT_HOME": str(home),
            "TICKETEXPORT_SECRET_KEY": "acceptance-" + "x" * 40,
            "TICKETEXPORT_PORT": str(port),
            "TICKETEXPORT_HOST": "127.0.0.1",
        }
    )
    with (home / "serve.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ticketexport", "serve"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        browser = Browser(f"http://127.0.0.1:{port}")

        def up() -> bool:
            assert proc.poll() is None, (home / "serve.log").read_text()
            try:
                return browser.get("/login")[0] == 200
            except OSError:
                return False

        wait_for("the web server", up, timeout=20)
        admin = next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export)
        browser.login(admin.email, admin.password)
        yield browser
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_queued_past_expiry_fails_instead_of_running(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    export_id = request_export(seeded_url, retention_hours=1 * SECONDS)
    wait_for(
        "the retention to pass", lambda: _expired_by_db_clock(seeded_url, export_id), timeout=30
    )
    workers.start(seeded_url, name="a")
    row = wait_status(seeded_url, export_id, {"failed", "completed"}, timeout=20, workers=workers)
    assert row["status"] == "failed"
    assert row["error_code"] == "expired_before_completion"
    assert row["error_message"]
    assert row["rows_done"] == 0
    assert_settled(seeded_url, export_id, home, workers)


def test_running_past_expiry_fails_and_removes_its_upload(
    seeded_url: str, home: Path, workers: Workers
) -> None:
    """6,000 rows at 150 rows/s (40 seconds) outlive a 12-second retention: maintenance
    ends the export while it streams. The retention leaves a loaded machine ample time to
    start the worker; what is waited for are the export's own events."""
    export_id = request_export(seeded_url, retention_hours=12 * SECONDS)
    workers.start(seeded_url, max_rows_per_s=150, name="a")

    def streaming() -> dict[str, Any] | None:
        row = export_row(seeded_url, export_id)
        assert row["status"] in ("queued", "running"), (row["status"], row["error_code"])
        return row if row["status"] == "running" and row["rows_done"] > 0 else None

    wait_for("the export to stream", streaming, timeout=12, workers=workers)
    row = wait_status(seeded_url, export_id, {"failed", "completed"}, timeout=60, workers=workers)
    assert row["status"] == "failed", "a 40-second export cannot finish inside 12 seconds"
    assert row["error_code"] == "expired_before_completion"
    assert 0 < row["rows_done"] < row["rows_total"]
    assert row["media_item_id"] is None
    assert_settled(seeded_url, export_id, home, workers)


def test_completed_past_expiry_answers_410_then_is_expired_and_deleted(
    seeded_url: str, home: Path, workers: Workers, web: Browser
) -> None:
    # 20 seconds: far more than a loaded machine needs to start a worker, export 6,000 rows
    # and download them; the expiry itself is then waited for, not slept through.
    export_id = request_export(seeded_url, retention_hours=20 * SECONDS)
    worker = workers.start(seeded_url, name="a")
    row = wait_status(seeded_url, export_id, {"completed", "failed"}, timeout=20, workers=workers)
    assert row["status"] == "completed", row["error_code"]
    status, body = web.get(f"/staff/exports/{export_id}/download")
    assert not _expired_by_db_clock(seeded_url, export_id), "too slow to test before expiry"
    assert status == 200
    assert len(body) == row["size_bytes"]
    assert export_files(home, export_id) == [row["object_key"]]

    # No maintenance from here on: the 410 must not depend on cleanup having run.
    worker.proc.terminate()
    assert worker.proc.wait(timeout=20) == 0, "SIGTERM is a clean, graceful stop"
    wait_for(
        "the retention to end",
        lambda: _expired_by_db_clock(seeded_url, export_id),
        timeout=30,
    )
    status, _ = web.get(f"/staff/exports/{export_id}/download")
    assert status == 410
    assert export_row(seeded_url, export_id)["status"] == "completed"
    assert export_files(home, export_id) == [row["object_key"]]

    workers.start(seeded_url, name="b")
    expired = wait_status(seeded_url, export_id, {"expired"}, timeout=15, workers=workers)
    assert expired["media_item_id"] is not None
    wait_for(
        "the expired file to be deleted",
        lambda: export_files(home, export_id) == [],
        timeout=5,
        workers=workers,
    )
    status, _ = web.get(f"/staff/exports/{export_id}/download")
    assert status == 410
