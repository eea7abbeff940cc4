"""Real `ticketexport serve` OS processes for one test, sharing its database."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Server:
    """One `ticketexport serve` process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class Servers:
    """Starts web processes for one test and always stops them, even when the test fails."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.secret = secrets.token_hex(24)
        self.started: list[Server] = []

    def start(self, database_url: str, env: dict[str, str] | None = None) -> Server:
        """One more `serve` on a free port, with the test's settings in `env`; waits until
        it answers."""
        name = f"web-{len(self.started) + 1}"
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TICKETEXPORT_", "DATABASE_URL"))
        }
        environment.update(
            {
                "DATABASE_URL": database_url,
                "TICKETEXPORT_HOME": str(self.home),
                # One key for all: a session or login form from one process works on another.
                "TICKETEXPORT_SECRET_KEY": self.secret,
                "TICKETEXPORT_HOST": "127.0.0.1",
                "TICKETEXPORT_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
        )
        log_path = self.home / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ticketexport", "serve"],
                env=environment,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(name=name, proc=proc, port=port, log_path=log_path)
        self.started.append(server)
        self._wait(server)
        return server

    def pair(self, database_url: str, env: dict[str, str] | None = None) -> list[Server]:
        """Two web processes with the same settings on one database."""
        return [self.start(database_url, env), self.start(database_url, env)]

    def _wait(self, server: Server) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                pytest.fail(f"{server.name} exited:\n{server.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/login", timeout=2) as response:  # noqa: S310 - a local URL
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        pytest.fail(f"{server.name} did not answer:\n{server.output()[-3000:]}")

    def stop_all(self) -> None:
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self.started:
            try:
                server.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=5)

    def outputs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.output()[-4000:]}" for s in self.started)


# How long a refused start may take; a process still running after it was not refused.
REFUSAL_SECONDS = 90


def refused_start(command: str, database_url: str, home: Path, env: dict[str, str]) -> str:
    """`ticketexport <command>` must stop at start with one line on stderr, naming
    TICKETEXPORT_STORAGE_URL, and status 2; returns that line. Only the settings in `env`
    reach it (no TICKETEXPORT_, storage credential or DATABASE_URL of this process)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TICKETEXPORT_", "DATABASE_URL", "AWS_", "AZURE_"))
    }
    environment.update(
        {
            "DATABASE_URL": database_url,
            "TICKETEXPORT_HOME": str(home),
            "TICKETEXPORT_SECRET_KEY": "x" * 32,
            "TICKETEXPORT_PORT": str(free_port()),
            **env,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticketexport", command],
        env=environment,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`{command}` started instead of refusing:\n{err[-2000:]}")
    assert proc.returncode == 2, (proc.returncode, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ticketexport: error: "), lines[0]
    assert "TICKETEXPORT_STORAGE_URL" in lines[0], lines[0]
    return lines[0]
