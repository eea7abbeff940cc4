"""The live export status page in real Chromium, against a real web and worker process."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import html.parser
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.support import reference_views
from tests.support.components import missing_component, require_module
from tests.support.databases import scratch_database
from ticketexport import accounts
from ticketexport.exports.service import copy_application_name
from ticketexport.seed import DEMO_LOGINS, seed
from ticketexport.web import times

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# axe-core, installed by `npm ci` (package.json); injected into pages to check them.
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
# The README's pictures. Taken on every run; written here when TICKETEXPORT_SCREENSHOTS=1
# (`make screenshots`), so a plain test run leaves the working tree alone.
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
# The organisation's zone: one whose abbreviation (IST) browsers do not know by themselves.
TIMEZONE = "Asia/Kolkata"
# A time as people read it, in that zone: `6 Dec 2026, 18:36 IST`.
READABLE = re.compile(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d IST")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TICKETS = 2000
# Rows per second the worker may write: the 2,000-row export takes about three seconds,
# long enough to watch it move and to cancel it halfway.
THROTTLE = 600
LOGINS = {login.email: login for login in DEMO_LOGINS}
ADMIN_EXPORT = "admin.export@example.com"
AGENT_EXPORT = "agent.export@example.com"
BOM = b"\xef\xbb\xbf"
DENIED = "Downloading requires an administrator with the Import / Export Tickets permission"

# Records every state the status page shows, as the page shows it: the badge text and the
# percent at the start of the aria-live progress line, one entry per visible change.
OBSERVER = """
window.__states = [];
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("export");
  if (!root) { return; }
  var badge = root.querySelector('[data-field="status"]');
  var line = root.querySelector('[data-field="announce"]');
  function record() {
    var match = /^\\s*(\\d+)%/.exec(line.textContent);
    var state = {status: badge.textContent.trim(), percent: match ? Number(match[1]) : null};
    var last = window.__states[window.__states.length - 1];
    if (!last || last.status !== state.status || last.percent !== state.percent) {
      window.__states.push(state);
    }
  }
  record();
  new MutationObserver(record).observe(root, {subtree: true, childList: true,
                                               characterData: true});
});
"""


# --- processes ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One `python -m ticketexport …` child with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ticketexport", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class Stack:
    """A seeded database, a `serve` process and a `worker` process started on demand."""

    def __init__(
        self, db_url: str, base_url: str, web: Process, worker: Process, shots: Path
    ) -> None:
        self.db_url = db_url
        self.base_url = base_url
        self.web = web
        self.worker = worker
        self.shots = shots

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def start_worker(self) -> None:
        self.worker.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.worker.running, self.worker.tail()
            if self.sql(
                "SELECT 1 FROM procrastinate_workers WHERE last_heartbeat > now() - interval '5 s'"
            ):
                return
            time.sleep(0.1)
        pytest.fail(f"the worker did not start:\n{self.worker.tail()}")


@pytest.fixture(scope="module")
def stack(server_url: str, template_db: str, run_dir: Path) -> Iterator[Stack]:
    home = run_dir / f"browser-{secrets.token_hex(4)}"
    home.mkdir()
    with scratch_database(server_url, template_db) as db_url:
        with psycopg.connect(db_url, autocommit=True) as conn:
            seed(conn, tickets=TICKETS, seed=5)
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "TICKETEXPORT_HOME": str(home),
            "TICKETEXPORT_SECRET_KEY": secrets.token_hex(16),
            "TICKETEXPORT_HOST": "127.0.0.1",
            "TICKETEXPORT_PORT": str(port),
            "TICKETEXPORT_EXPORT_MAX_ROWS_PER_S": str(THROTTLE),
            "TICKETEXPORT_HEARTBEAT_SECONDS": "1",
            "TICKETEXPORT_WORKER_SEEN_SECONDS": "3",
            "TICKETEXPORT_TIMEZONE": TIMEZONE,
        }
        web = Process(["serve"], env, home / "web.log")
        worker = Process(["worker", "--concurrency", "2"], env, home / "worker.log")
        base_url = f"http://127.0.0.1:{port}"
        web.start()
        try:
            _wait_http(f"{base_url}/login", web)
            yield Stack(db_url, base_url, web, worker, home / "screenshots")
        finally:
            worker.stop()
            web.stop()


def _wait_http(url: str, proc: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.running, proc.tail()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer:\n{proc.tail()}")


# --- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_component(f"{CHROMIUM} is not installed")
    sync_api = require_module("playwright.sync_api", "playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Session:
    """One signed-in browser context with a page that records states and downloads."""

    def __init__(self, browser: Any, stack: Stack, email: str, *, javascript: bool = True) -> None:
        self.stack = stack
        self.context = browser.new_context(
            accept_downloads=True,
            base_url=stack.base_url,
            java_script_enabled=javascript,
            viewport=VIEWPORT,
        )
        self.context.add_init_script(OBSERVER)
        if AXE.exists():
            # As the page's own script would be, but not subject to its CSP.
            self.context.add_init_script(path=str(AXE))
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.downloads: list[Any] = []
        self.page.on("download", lambda download: self.downloads.append(download))
        self.page.goto("/login")
        self.page.fill('input[name="email"]', email)
        self.page.fill('input[name="password"]', LOGINS[email].password)
        self.page.click('form.login-form button[type="submit"]')
        self.page.wait_for_url("**/staff/**")

    def export(self, query: str = "view=all") -> str:
        """Click Export to CSV on the list; returns the new export's id."""
        self.page.goto(f"/staff/tickets?{query}")
        self.page.click("#export-button")
        self.page.wait_for_url("**/staff/exports/*")
        export_id = self.page.get_attribute("#export", "data-export-id")
        assert export_id
        return export_id

    def badge(self) -> str:
        return str(self.page.text_content('#export [data-field="status"]')).strip()

    def wait_status(self, status: str, timeout: float = 20) -> None:
        self.page.wait_for_function(
            "s => document.querySelector('#export [data-field=\"status\"]')"
            ".textContent.trim() === s",
            arg=status,
            timeout=timeout * 1000,
        )

    def states(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("window.__states"))

    def text(self, selector: str) -> str:
        return " ".join(str(self.page.text_content(selector)).split())

    def fields(self, *names: str) -> dict[str, str]:
        """Several fields of the status page, read at one moment."""
        found: dict[str, str] = self.page.evaluate(
            "names => Object.fromEntries(names.map(n => [n, document.querySelector("
            "'#export [data-field=\"' + n + '\"]').textContent.trim()]))",
            list(names),
        )
        return found

    def accessibility_problems(self) -> list[dict[str, Any]]:
        """axe-core's findings on the page as it is now (every rule, every impact)."""
        if not AXE.exists():
            missing_component("axe-core is not installed (run `npm ci`)")
        return list(
            self.page.evaluate(
                "async () => (await axe.run(document)).violations.map(v => "
                "({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"
            )
        )

    def screenshot(self, name: str) -> None:
        folder = SCREENSHOTS if os.environ.get("TICKETEXPORT_SCREENSHOTS") == "1" else None
        folder = folder or self.stack.shots
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sessions(browser: Any, stack: Stack) -> Iterator[Callable[..., Session]]:
    opened: list[Session] = []

    def open_session(email: str, *, javascript: bool = True) -> Session:
        opened.append(Session(browser, stack, email, javascript=javascript))
        return opened[-1]

    yield open_session
    for session in opened:
        with contextlib.suppress(Exception):
            session.close()


# --- the list, as the browser sees it --------------------------------------------------


class _ListPage(html.parser.HTMLParser):
    """Header labels, rows of cell text, and the next-page link of one list page."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.next_url: str | None = None
        self._cell: list[str] | None = None
        self._in_row = False
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and "data-ticket" in found:
            self._in_row = True
            self.rows.append([])
        elif tag == "td" and self._in_row:
            self._cell = []
        elif tag == "th" and "data-column" in found:
            self._in_th = True
            self.header.append("")
        elif tag == "a" and found.get("id") == "next-page":
            self.next_url = found.get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._in_row = False
        elif tag == "th":
            self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_th:
            self.header[-1] += data


def list_rows(session: Session, path: str) -> tuple[list[str], list[list[str]]]:
    """Every row of a view, across all its pages, as the signed-in user's list shows it."""
    header: list[str] = []
    rows: list[list[str]] = []
    url: str | None = path
    while url:
        response = session.context.request.get(url)
        assert response.status == 200, response.text()[:500]
        parser = _ListPage()
        parser.feed(response.text())
        header = header or parser.header
        rows.extend(parser.rows)
        url = parser.next_url
    return header, rows


def guarded(cell: str) -> str:
    """The CSV's formula guard: text that a spreadsheet would run gets a leading quote."""
    return reference_views.csv_guard(cell)


def csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith(BOM), "the file starts with a UTF-8 BOM"
    text = data[len(BOM) :].decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline="")))


def _downloaded_states(stack: Stack, export_id: str) -> list[tuple[Any, ...]]:
    return stack.sql(
        "SELECT actor_email, details->>'auto' FROM audit_log "
        "WHERE export_id = %s AND action = 'export.downloaded' ORDER BY id",
        (export_id,),
    )


# --- the tests ------------------------------------------------------------------------


def test_export_moves_live_and_downloads_once(
    stack: Stack, sessions: Callable[..., Session]
) -> None:
    worker_was_running = stack.worker.running
    # No worker while the request is made, so the page is sure to show it queued.
    stack.worker.stop()
    admin = sessions(ADMIN_EXPORT)
    export_id = admin.export("view=all")
    assert admin.badge() == "queued"
    if not worker_was_running:
        # No worker has ever run against this database: the page says why nothing moves.
        assert admin.page.is_visible("text=Waiting for a worker")
    # Not started, not finished, and counted in the navigation.
    assert admin.text('[data-field="started"]') == ""
    assert admin.text('[data-field="finished"]') == ""
    assert admin.text("#nav-exports") == "My exports (1)"
    stack.start_worker()
    # Started appears the moment the page learns the export runs.
    admin.page.wait_for_function(
        "() => window.__states.some(s => s.status === 'running' && s.percent > 0)"
    )
    shown = admin.fields("status", "started", "finished")
    if shown["status"] == "running":
        assert READABLE.fullmatch(shown["started"].removesuffix(" (just now)")), shown
        assert shown["finished"] == "", shown
        admin.screenshot("export-running")
    admin.wait_status("completed", timeout=30)
    admin.page.wait_for_timeout(300)
    # Completed appears too, the label says so, and the navigation no longer counts it,
    # all without a reload.
    # Written as the server writes times: readable inside <time datetime="ISO">, and
    # recent, which the server would say too.
    live = admin.page.evaluate(
        "() => ['started', 'finished'].map(n => {"
        " const dd = document.querySelector('#export [data-field=\"' + n + '\"]');"
        " const time = dd.querySelector('time');"
        " return [time.getAttribute('datetime'), time.textContent,"
        " dd.querySelector('.ago').textContent]; })"
    )
    for stamp, text, age in live:
        assert STAMP.fullmatch(stamp), live
        assert READABLE.fullmatch(text), live
        assert text == times.readable(dt.datetime.fromisoformat(stamp), ZoneInfo(TIMEZONE))
        assert age in ("(just now)", "(1 min ago)"), live
    started_live, finished_live = live[0][0], live[1][0]
    assert admin.text('[data-field="finished-label"]') == "Completed at"
    assert admin.text("#nav-exports") == "My exports"
    # The live times are the times the database recorded, to within the page's delay.
    recorded = stack.sql(
        "SELECT started_at, finished_at FROM export_jobs WHERE id = %s", (export_id,)
    )[0]
    for live, actual in zip((started_live, finished_live), recorded, strict=True):
        assert abs((dt.datetime.fromisoformat(live) - actual).total_seconds()) < 3, (live, actual)

    # The sequence the page showed: queued, then running with a rising percent, then done.
    states = admin.states()
    statuses = [
        s["status"]
        for i, s in enumerate(states)
        if i == 0 or states[i - 1]["status"] != s["status"]
    ]
    assert statuses == ["queued", "running", "completed"], states
    running = [
        s["percent"] for s in states if s["status"] == "running" and s["percent"] is not None
    ]
    assert running == sorted(running), f"percent went down: {states}"
    assert len({p for p in running if 0 < p < 100}) >= 2, f"too few progress steps: {states}"
    assert states[-1] == {"status": "completed", "percent": 100}

    # The requester's browser downloaded the file by itself, exactly once.
    deadline = time.monotonic() + 10
    while not admin.downloads and time.monotonic() < deadline:
        admin.page.wait_for_timeout(100)
    admin.page.wait_for_timeout(1500)
    assert len(admin.downloads) == 1
    download = admin.downloads[0]
    assert download.suggested_filename.startswith("tickets-all-tickets-")
    assert download.suggested_filename.endswith(".csv")
    data = Path(download.path()).read_bytes()

    # The file is the view: the list's rows across all its pages, in order, cell by cell.
    header, rows = list_rows(admin, "/staff/tickets?view=all")
    assert len(rows) == TICKETS
    table = csv_rows(data)
    assert table[0] == header
    assert len(table) - 1 == len(rows)
    expected = [[guarded(cell) for cell in row] for row in rows]
    for index, (got, want) in enumerate(zip(table[1:], expected, strict=True)):
        assert got == want, f"row {index + 1} differs"
    assert any(cell.startswith("'") for row in table[1:] for cell in row), (
        "the seeded data exercises the formula guard"
    )

    # A reload does not download again, and the page offers a button instead.
    admin.page.reload()
    admin.page.wait_for_timeout(1500)
    assert len(admin.downloads) == 1
    assert admin.page.is_visible('#export [data-field="download"]')

    # A second browser, same person: a button, never a second automatic download.
    other = sessions(ADMIN_EXPORT)
    other.page.goto(f"/staff/exports/{export_id}")
    other.wait_status("completed")
    other.page.wait_for_timeout(1500)
    assert other.downloads == []
    assert other.page.is_visible('#export [data-field="download"]')
    assert other.page.get_attribute("#export", "data-auto-download") == "false"
    again = other.context.request.get(f"/staff/exports/{export_id}/download?auto=1")
    assert again.status == 204
    assert _downloaded_states(stack, export_id) == [(ADMIN_EXPORT, "true")]

    # The button still works for someone allowed, and gives the same bytes.
    with other.page.expect_download() as clicked:
        other.page.click('#export [data-field="download"]')
    assert Path(clicked.value.path()).read_bytes() == data

    # The navigation counts running exports; none now.
    assert other.page.text_content("#nav-exports").strip() == "My exports"


def test_cancel_mid_way(stack: Stack, sessions: Callable[..., Session]) -> None:
    stack.start_worker()
    admin = sessions(ADMIN_EXPORT)
    export_id = admin.export("view=all&sort=oldest")
    admin.page.wait_for_function(
        "() => window.__states.some(s => s.status === 'running' && s.percent > 0)"
    )
    # The navigation counted it while it ran (the page was rendered before it finished).
    admin.page.reload()
    nav = admin.page.text_content("#nav-exports").strip()
    status = admin.badge()
    if status in ("queued", "running"):
        assert nav == "My exports (1)"
    admin.page.click("text=Cancel export")
    admin.wait_status("cancelled")
    assert admin.page.is_visible("text=This export was cancelled.")
    assert not admin.page.is_visible("text=Cancel export")
    assert admin.page.is_visible("form[action$='/retry'] button")
    # Within two seconds no COPY for it runs in the database.
    deadline = time.monotonic() + 2
    while stack.sql(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
        (copy_application_name(export_id),),
    ):
        assert time.monotonic() < deadline, "the COPY still runs two seconds after cancel"
        time.sleep(0.1)
    row = stack.sql(
        "SELECT status, rows_done, rows_total FROM export_jobs WHERE id = %s", (export_id,)
    )
    assert row[0][0] == "cancelled"
    assert 0 < row[0][1] < TICKETS, f"not cancelled mid-way: {row}"
    admin.page.wait_for_timeout(500)
    assert admin.downloads == []


def test_retry_after_permission_revoked(stack: Stack, sessions: Callable[..., Session]) -> None:
    stack.worker.stop()
    admin = sessions(ADMIN_EXPORT)
    export_id = admin.export("view=all&sort=priority")
    assert admin.badge() == "queued"
    # The navigation counts the user's queued and running exports.
    assert " ".join(str(admin.page.text_content("#nav-exports")).split()) == "My exports (1)"
    admin.page.wait_for_timeout(200)
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        accounts.set_user(conn, ADMIN_EXPORT, remove_roles=["administrator"])
    try:
        stack.start_worker()
        admin.wait_status("failed")
    finally:
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            accounts.set_user(conn, ADMIN_EXPORT, add_roles=["administrator"])
    message = admin.page.text_content('#export [data-field="error"]')
    assert message
    assert "permission" in message.lower()
    assert stack.sql("SELECT error_code FROM export_jobs WHERE id = %s", (export_id,)) == [
        ("permission_revoked",)
    ]
    # The Retry form was on the page all along, hidden; the live failure revealed it.
    admin.page.click("form[action$='/retry'] button")
    admin.page.wait_for_url(lambda url: export_id not in url and "/staff/exports/" in url)
    retried = admin.page.get_attribute("#export", "data-export-id")
    assert retried
    assert retried != export_id
    admin.wait_status("completed", timeout=30)
    assert stack.sql("SELECT retry_of_id::text FROM export_jobs WHERE id = %s", (retried,)) == [
        (export_id,)
    ]
    deadline = time.monotonic() + 10
    while not admin.downloads and time.monotonic() < deadline:
        admin.page.wait_for_timeout(100)
    assert len(admin.downloads) == 1
    table = csv_rows(Path(admin.downloads[0].path()).read_bytes())
    assert len(table) == TICKETS + 1


def test_non_admin_requester_reads_why_and_gets_no_file(
    stack: Stack, sessions: Callable[..., Session]
) -> None:
    stack.start_worker()
    agent = sessions(AGENT_EXPORT)
    export_id = agent.export("view=all&sort=status")
    assert agent.page.get_attribute("#export", "data-auto-download") == "false"
    agent.wait_status("completed", timeout=30)
    assert agent.page.is_visible(f"text={DENIED}")
    assert agent.page.locator('#export [data-field="download"]').count() == 0
    agent.page.wait_for_timeout(1500)
    assert agent.downloads == []
    # The server says the same, whatever the page shows.
    response = agent.context.request.get(f"/staff/exports/{export_id}/download")
    assert response.status == 403
    response = agent.context.request.get(f"/staff/exports/{export_id}/download?auto=1")
    assert response.status == 403
    # After a refresh the first paint alone says it (no script needed).
    agent.page.reload()
    assert agent.page.is_visible(f"text={DENIED}")
    # My exports lists it as completed, with no download link.
    agent.page.goto("/staff/exports")
    row = agent.page.locator(f"tr:has(a[href='/staff/exports/{export_id}'])")
    assert row.locator('[data-field="status"]').text_content() == "completed"
    assert row.locator("a[href$='/download']").count() == 0


def test_my_exports_updates_live_and_marks_expired(
    stack: Stack, sessions: Callable[..., Session]
) -> None:
    stack.start_worker()
    admin = sessions(ADMIN_EXPORT)
    export_id = admin.export("view=all&sort=assignee")
    admin.page.goto("/staff/exports")
    row = admin.page.locator(f"tr:has(a[href='/staff/exports/{export_id}'])")
    assert row.get_attribute("data-events-url") == f"/staff/exports/{export_id}/events"
    first = row.locator('[data-field="status"]').text_content()
    assert first in ("queued", "running")
    # Newest first: the export just requested heads the list.
    assert admin.page.locator("table.exports tbody tr").first.get_attribute("data-events-url") == (
        f"/staff/exports/{export_id}/events"
    )
    # The row moves by itself, and offers the file once there is one; the navigation's
    # count follows (read together with the row, which may have finished already).
    now = admin.page.evaluate(
        "id => [document.querySelector(`tr:has(a[href='/staff/exports/${id}']) "
        "[data-field=status]`).textContent, document.getElementById('nav-exports')"
        ".textContent.replace(/\\s+/g, ' ').trim()]",
        export_id,
    )
    assert now[1] == ("My exports (1)" if now[0] in ("queued", "running") else "My exports"), now
    row.locator('[data-field="status"]:text-is("completed")').wait_for(timeout=30_000)
    row.locator("a[href$='/download']").wait_for()
    assert admin.page.url.endswith("/staff/exports")
    # Requested and expires read as people read them, with ISO in the datetime attribute;
    # the request is recent, so it also says how long ago.
    requested, expires = row.locator("time").all()
    for cell in (requested, expires):
        assert READABLE.fullmatch(str(cell.text_content())), cell.text_content()
        assert STAMP.fullmatch(str(cell.get_attribute("datetime")))
    assert re.fullmatch(
        r"\((just now|\d+ min ago)\)", str(row.locator(".ago").first.text_content())
    )
    assert admin.text("#nav-exports") == "My exports"
    assert admin.accessibility_problems() == []
    admin.screenshot("my-exports")

    # Without JavaScript the first paint alone is complete.
    plain = sessions(ADMIN_EXPORT, javascript=False)
    plain.page.goto(f"/staff/exports/{export_id}")
    assert plain.badge() == "completed"
    assert plain.page.get_attribute("progress", "value") == "100"
    announce = " ".join(str(plain.page.text_content('[data-field="announce"]')).split())
    assert announce == f"100% · {TICKETS:,} of {TICKETS:,} rows"
    assert str(plain.page.text_content('[data-field="elapsed"]')).startswith("Took ")
    details = str(plain.page.text_content("dl.details"))
    assert export_id in details
    assert "Alex Morgan (admin.export@example.com)" in details
    assert "View: All tickets" in details
    # Requested, as of, started, completed and expires: readable, with ISO for machines.
    stamps = plain.page.locator("dl.details time").all_text_contents()
    assert len(stamps) == 5, stamps
    assert all(READABLE.fullmatch(t) for t in stamps), stamps
    isos = plain.page.eval_on_selector_all(
        "dl.details time", "ts => ts.map(t => t.getAttribute('datetime'))"
    )
    assert all(STAMP.fullmatch(t) and t.endswith("+05:30") for t in isos), isos
    assert plain.page.is_visible('#export [data-field="download"]')
    assert plain.page.get_attribute("#export", "data-events-url") == (
        f"/staff/exports/{export_id}/events"
    )
    assert plain.page.locator('[aria-live="polite"]').count() == 1

    # An admin with the permission sees everyone's exports, with who asked.
    admin.page.goto("/staff/exports?all=1")
    assert admin.page.text_content("h1") == "Everyone's exports"
    assert admin.page.locator("th:text-is('By')").count() == 1

    # Past its expiry the status page says so and links to nothing; the list marks it.
    stack.sql(
        "UPDATE export_jobs SET requested_at = now() - interval '73 hours', "
        "expires_at = now() - interval '1 hour' WHERE id = %s",
        (export_id,),
    )
    admin.page.goto(f"/staff/exports/{export_id}")
    assert admin.badge() == "expired"
    assert admin.page.is_visible("text=This export has expired")
    assert not admin.page.is_visible('#export [data-field="download"]')
    assert admin.context.request.get(f"/staff/exports/{export_id}/download").status == 410
    admin.page.goto("/staff/exports")
    row = admin.page.locator(f"tr:has(a[href='/staff/exports/{export_id}'])")
    assert row.locator('[data-field="status"]').text_content() == "expired"
    assert row.locator("a[href$='/download']").count() == 0
    assert admin.downloads == []


def test_each_format_downloads_with_its_name_and_type(
    stack: Stack, sessions: Callable[..., Session]
) -> None:
    import gzip
    import zipfile

    stack.start_worker()
    admin = sessions(ADMIN_EXPORT)
    kinds = {
        "csv.gz": "application/gzip",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "parquet": "application/vnd.apache.parquet",
    }
    for key, content_type in kinds.items():
        admin.page.goto("/staff/tickets?view=open")
        admin.page.select_option("#export-format", key)
        before = len(admin.downloads)
        admin.page.click("#export-button")
        admin.page.wait_for_url("**/staff/exports/*")
        export_id = admin.page.get_attribute("#export", "data-export-id")
        admin.wait_status("completed", timeout=30)
        deadline = time.monotonic() + 10
        while len(admin.downloads) == before and time.monotonic() < deadline:
            admin.page.wait_for_timeout(100)
        assert len(admin.downloads) == before + 1, key
        download = admin.downloads[-1]
        assert re.fullmatch(
            rf"tickets-open-\d{{8}}-\d{{6}}\.{re.escape(key)}", download.suggested_filename
        )
        data = Path(download.path()).read_bytes()
        if key == "csv.gz":
            # Saved as sent: Chromium would have unpacked a Content-Encoding: gzip body.
            assert gzip.decompress(data).startswith(BOM)
        elif key == "parquet":
            assert data[:4] == data[-4:] == b"PAR1"
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                assert archive.testzip() is None
                assert "xl/worksheets/sheet1.xml" in archive.namelist()
        response = admin.context.request.get(f"/staff/exports/{export_id}/download")
        assert response.headers["content-type"] == content_type
        assert "content-encoding" not in response.headers
        assert response.body() == data


# The geometry of the ticket list, as laid out: the scrolling region, the last column's
# header, and every cell whose text is cut short (with its title).
LIST_GEOMETRY = """() => {
  const wrap = document.querySelector('.table-wrap');
  const heads = [...document.querySelectorAll('table.tickets th')];
  const last = heads[heads.length - 1].getBoundingClientRect();
  const cut = [...document.querySelectorAll('table.tickets td')]
    .filter(td => td.querySelector('.cell').scrollWidth > td.querySelector('.cell').clientWidth)
    .map(td => ({column: heads[td.cellIndex].dataset.column, text: td.textContent,
                 title: td.getAttribute('title')}));
  return {regionRight: wrap.getBoundingClientRect().right, lastRight: last.right,
          scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth, cut: cut,
          focusable: wrap.tabIndex >= 0, label: wrap.getAttribute('aria-label')};
}"""


def test_the_list_fits_1400_px_and_scrolls_by_keyboard_when_it_must(
    stack: Stack, sessions: Callable[..., Session]
) -> None:
    admin = sessions(ADMIN_EXPORT)
    admin.page.goto("/staff/tickets?view=all")
    shown = admin.page.evaluate(LIST_GEOMETRY)
    # The default columns fit: the last one is whole, nothing to scroll.
    assert shown["lastRight"] <= shown["regionRight"], shown
    assert shown["scrollWidth"] <= shown["clientWidth"], shown
    # Long values are cut, never timestamps; the full text is in the title.
    assert shown["cut"], "the seeded titles are long enough to be cut"
    for cell in shown["cut"]:
        assert not cell["column"].endswith("_at"), cell
        assert cell["title"] == cell["text"], cell
    assert admin.accessibility_problems() == []
    admin.screenshot("tickets-list")

    # Twenty columns do not fit: the table scrolls within its region, which the keyboard
    # reaches and scrolls.
    owner = stack.sql("SELECT id FROM users WHERE email = %s", (ADMIN_EXPORT,))[0][0]
    columns = [
        "id", "title", "status", "priority", "language", "category", "assignee", "team",
        "contact_id", "contact", "sla_status", "sla_due_at", "created_at", "updated_at",
        "closed_at", "tags", "created_by", "description", "snoozed", "snoozed_until",
    ]  # fmt: skip
    view_id = stack.sql(
        "INSERT INTO saved_views (name, owner_id, created_by_id, columns, sort) "
        'VALUES (\'Every column\', %s, %s, %s, \'[{"column": "id", "direction": "asc"}]\') '
        "RETURNING id",
        (owner, owner, columns),
    )[0][0]
    try:
        admin.page.goto(f"/staff/tickets?view={view_id}")
        wide = admin.page.evaluate(LIST_GEOMETRY)
        assert wide["scrollWidth"] > wide["clientWidth"], wide
        assert wide["focusable"], wide
        assert wide["label"], wide
        admin.page.focus(".table-wrap")
        admin.page.keyboard.press("End")
        admin.page.keyboard.press("ArrowRight")
        admin.page.wait_for_function("() => document.querySelector('.table-wrap').scrollLeft > 0")
        assert admin.accessibility_problems() == []
    finally:
        stack.sql("DELETE FROM saved_views WHERE id = %s", (view_id,))


def test_export_changes_since_this_one(stack: Stack, sessions: Callable[..., Session]) -> None:
    """The button appears live when the export completes; its file holds the one ticket
    changed since, and the new status page names the export it is measured from."""
    stack.start_worker()
    admin = sessions(ADMIN_EXPORT)
    export_id = admin.export("view=all&sort=oldest")
    admin.wait_status("completed", timeout=30)
    button = admin.page.locator("form[action$='/changes'] button")
    assert button.is_visible()
    assert button.text_content() == "Export changes since this one"
    changed = stack.sql(
        "UPDATE tickets SET title = 'Changed since the export' "
        "WHERE id = (SELECT min(id) FROM tickets) RETURNING id"
    )
    button.click()
    admin.page.wait_for_url(lambda url: export_id not in url and "/staff/exports/" in url)
    delta = admin.page.get_attribute("#export", "data-export-id")
    assert delta
    assert delta != export_id
    since = admin.text('[data-field="since"]')
    assert since.startswith(f"Changes since export {export_id[:8]} (data as of ")
    assert " up to " in since
    assert admin.page.get_attribute('[data-field="since"] a', "href") == (
        f"/staff/exports/{export_id}"
    )
    admin.wait_status("completed", timeout=30)
    deadline = time.monotonic() + 10
    while len(admin.downloads) < 2 and time.monotonic() < deadline:
        admin.page.wait_for_timeout(100)
    assert len(admin.downloads) == 2
    table = csv_rows(Path(admin.downloads[-1].path()).read_bytes())
    assert table[0][:3] == ["Change", "Ticket ID", "Title"]
    assert [row[:3] for row in table[1:]] == [
        ["upsert", str(changed[0][0]), "Changed since the export"]
    ]
