"""The demo as the README starts it: empty home, embedded PostgreSQL, a printed login, an
export downloaded, Ctrl+C, and a second start that keeps the data and seeds nothing."""

from __future__ import annotations

import contextlib
import html
import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clusters import free_port
from tests.support.workers import REPO, wait_for
from ticketexport import seed

pytestmark = pytest.mark.slow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN_LINE = re.compile(r"^\s+(\S+@\S+)\s+(\S+)\s")
_EXPORT_PATH = re.compile(r"/staff/exports/([0-9a-f-]{36})$")
# `make demo` runs the virtualenv's console script: the very command started here.
DEMO = [str(Path(sys.executable).with_name("ticketexport")), "demo"]


class _Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base: str) -> None:
        self.base = base

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=30) as response:
                return int(response.status), response.headers.get("Location", ""), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("Location", ""), exc.read()

    def csrf(self, path: str) -> str:
        status, _, page = self.request(path)
        assert status == 200, (path, status)
        match = _CSRF.search(page.decode())
        assert match is not None
        return html.unescape(match[1])

    def login(self, email: str, password: str) -> None:
        token = self.csrf("/login")
        status, location, _ = self.request(
            "/login", {"email": email, "password": password, "csrf_token": token}
        )
        assert (status, "/login" in location) == (303, False), (status, location)


class _Demo:
    """One `ticketexport demo` process; its printed output collected as it comes."""

    def __init__(self, home: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")}
        env.pop("DATABASE_URL", None)
        env.update(
            {
                "TICKETEXPORT_HOME": str(home),
                "TICKETEXPORT_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log = (home.parent / f"demo-{port}.log").open("wb")
        self.proc = subprocess.Popen(
            DEMO, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("press Ctrl+C"):
                self.ready.set()

    def logins(self) -> dict[str, str]:
        return {m[1]: m[2] for line in self.lines if (m := _LOGIN_LINE.match(line))}

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=120)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.interrupt()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def _demo(home: Path) -> Iterator[tuple[_Demo, _Client]]:
    port = free_port()
    demo = _Demo(home, port)
    try:
        assert demo.ready.wait(timeout=240), ("demo never became ready", demo.lines)
        client = _Client(f"http://127.0.0.1:{port}")
        wait_for("the demo's web server", lambda: _answers(client), timeout=60)
        yield demo, client
    finally:
        demo.close()


def _answers(client: _Client) -> bool:
    try:
        return client.request("/login")[0] == 200
    except OSError:
        return False


def _exporting_admin() -> str:
    return next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export).email


def _download(client: _Client, export_id: str) -> bytes | None:
    status, _, body = client.request(f"/staff/exports/{export_id}/download")
    return body if status == 200 else None


def test_demo_from_an_empty_home_exports_and_keeps_its_data_across_a_restart(
    run_dir: Path,
) -> None:
    home = run_dir / "demo" / "home"
    home.mkdir(parents=True)
    email = _exporting_admin()

    with _demo(home) as (demo, client):
        printed = demo.logins()
        assert email in printed, demo.lines
        assert any(line.startswith("seeding ") for line in demo.lines), demo.lines
        client.login(email, printed[email])
        token = client.csrf("/staff/tickets")
        status, location, _ = client.request(
            "/staff/tickets/export", {"view": "all", "csrf_token": token}
        )
        match = _EXPORT_PATH.search(location)
        assert status == 303, (status, location)
        assert match, location
        export_id = match[1]
        # The demo's own worker runs the export.
        body = wait_for("the export's file", lambda: _download(client, export_id), timeout=120)
        header = body.decode("utf-8-sig").splitlines()[0]
        assert header.startswith("Ticket ID,Title,"), header
        rows = body.count(b"\n") - 1
        assert rows > 1000
        assert demo.interrupt() == 0, demo.lines
    # The data lives in the embedded server under the home, not in DATABASE_URL (unset).
    assert any((home / name / "PG_VERSION").exists() for name in ("pgdata", "pgdata-initdb"))

    with _demo(home) as (again, client):
        # Migrated and seeded already: nothing is applied or seeded a second time.
        assert not any(line.startswith(("seeding ", "migrated:")) for line in again.lines)
        client.login(email, again.logins()[email])
        status, _, page = client.request("/staff/exports")
        assert status == 200
        assert export_id in page.decode()
        assert _download(client, export_id) == body
        assert again.interrupt() == 0, again.lines
