"""`ticketexport healthcheck web|worker` against real `serve` and `worker` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clusters import free_port
from tests.support.servers import Servers
from tests.support.workers import Workers, wait_for

# The workers' settings in tests/support/workers.py: a heartbeat every 0.5 s, and a worker
# not seen for 2 s counts as gone.
SEEN_SECONDS = "2"


def healthcheck(
    process: str, url: str, home: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")}
    env.update(
        {
            "DATABASE_URL": url,
            "TICKETEXPORT_HOME": str(home),
            "TICKETEXPORT_WORKER_SEEN_SECONDS": SEEN_SECONDS,
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "ticketexport", "healthcheck", process],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _healthy(process: str, url: str, home: Path, **settings: str) -> str | None:
    proc = healthcheck(process, url, home, **settings)
    return proc.stdout if proc.returncode == 0 else None


def _unhealthy(process: str, url: str, home: Path, **settings: str) -> str | None:
    """The one line on stderr, once the check exits 1 (the only failure status it uses)."""
    proc = healthcheck(process, url, home, **settings)
    if proc.returncode == 0:
        return None
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ticketexport: unhealthy: "), lines[0]
    return lines[0]


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "host-a", tmp_path / "host-b"
    first.mkdir()
    second.mkdir()
    return first, second


def test_a_worker_is_healthy_only_while_its_own_workers_beat(
    db_url: str, homes: tuple[Path, Path]
) -> None:
    here, elsewhere = homes
    local, remote = Workers(here), Workers(elsewhere)
    try:
        # Nothing runs under this home yet.
        assert "no worker process has registered" in str(_unhealthy("worker", db_url, here))
        worker = local.start(db_url)
        remote.start(db_url)
        report = wait_for("a healthy worker", lambda: _healthy("worker", db_url, here), timeout=60)
        assert report.startswith("healthy: workers "), report
        wait_for(
            "the other host's worker", lambda: _healthy("worker", db_url, elsewhere), timeout=60
        )

        # Frozen, its heartbeat stops: unhealthy, although another worker beats meanwhile.
        worker.pause()
        line = wait_for(
            "the check to notice", lambda: _unhealthy("worker", db_url, here), timeout=60
        )
        assert f"no heartbeat within {SEEN_SECONDS} s" in line, line
        assert _healthy("worker", db_url, elsewhere)

        worker.resume()
        wait_for("the worker to beat again", lambda: _healthy("worker", db_url, here), timeout=60)

        # Killed outright, it leaves its record behind; a dead process is not a worker.
        worker.kill()
        line = wait_for(
            "the check to notice", lambda: _unhealthy("worker", db_url, here), timeout=60
        )
        assert "no worker process has registered" in line, line
    finally:
        local.stop_all()
        remote.stop_all()
    # A worker that stops cleanly removes its record.
    assert list((elsewhere / "run").glob("worker-*.json")) == []


def test_the_web_check_follows_healthz(db_url: str, homes: tuple[Path, Path]) -> None:
    home = homes[0]
    closed = str(free_port())
    line = _unhealthy("web", db_url, home, TICKETEXPORT_PORT=closed)
    assert f"http://127.0.0.1:{closed}/healthz: not answering" in str(line), line

    servers, workers = Servers(home), Workers(home)
    try:
        web = servers.start(db_url, {"TICKETEXPORT_WORKER_SEEN_SECONDS": SEEN_SECONDS})
        port = {"TICKETEXPORT_PORT": str(web.port)}
        # No worker yet: /healthz answers 503 and says why.
        line = _unhealthy("web", db_url, home, **port)
        assert "503" in str(line), line
        assert "worker=missing" in str(line), line
        workers.start(db_url)
        report = wait_for(
            "a healthy web", lambda: _healthy("web", db_url, home, **port), timeout=60
        )
        assert "200 status=ok database=ok migrations=ok worker=ok" in report, report
    finally:
        servers.stop_all()
        workers.stop_all()
