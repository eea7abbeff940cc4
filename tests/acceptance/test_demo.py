"""The demo as the README starts it: empty home, embedded PostgreSQL, a printed login, an
export downloaded, Ctrl+C, and a second start that keeps the data and seeds nothing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browserless import Client
from tests.support.clusters import free_port
from tests.support.workers import REPO, wait_for
from ticketexport import seed

pytestmark = pytest.mark.slow

_LOGIN_LINE = re.compile(r"^\s+(\S+@\S+)\s+(\S+)\s")
# `make demo` runs the virtualenv's console script: the very command started here.
DEMO = [str(Path(sys.executable).with_name("ticketexport")), "demo"]


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
def _demo(home: Path) -> Iterator[tuple[_Demo, Client]]:
    port = free_port()
    demo = _Demo(home, port)
    try:
        assert demo.ready.wait(timeout=240), ("demo never became ready", demo.lines)
        client = Client(f"http://127.0.0.1:{port}")
        wait_for("the demo's web server", client.answers, timeout=60)
        yield demo, client
    finally:
        demo.close()


def _exporting_admin() -> str:
    return next(d for d in seed.DEMO_LOGINS if d.is_admin and d.can_export).email


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
        export_id = client.export("all")
        # The demo's own worker runs the export.
        body = wait_for("the export's file", lambda: client.download(export_id), timeout=120)
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
        assert client.download(export_id) == body
        assert again.interrupt() == 0, again.lines
