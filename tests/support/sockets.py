"""Sockets around the suite's database: its Unix-domain socket URL, and a server that is
not there yet."""

from __future__ import annotations

import contextlib
import socket
import threading

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.components import missing_component


def _system_id(url: str) -> int | None:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        return int(row[0]) if row else None
    return None


def unix_socket_url(url: str) -> str:  # noqa: RET503 - missing_component never returns
    """`url` by way of the server's Unix-domain socket (the same server, checked by its
    system identifier). A socket's buffers hold some 200 kB; loopback TCP's grow to tens of
    megabytes, enough to take a whole export's output from the server before the reader
    has read a fraction of it."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if host.startswith("/"):
        return url
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT system_identifier, current_setting('unix_socket_directories') "
            "FROM pg_control_system()"
        ).fetchone()
    assert row is not None
    wanted, directories = int(row[0]), str(row[1])
    for directory in (d.strip() for d in directories.split(",")):
        if not directory.startswith("/"):
            continue
        params.pop("hostaddr", None)
        candidate = make_conninfo(**{**params, "host": directory})
        if _system_id(candidate) == wanted:
            return candidate
    missing_component(f"the database server at {host} has no Unix-domain socket this host reaches")


class LateServer:
    """A TCP port that drops every connection until `open()`, then relays to `url`'s server.

    It stands for a database still initialising when a client starts; `attempts` counts the
    connections dropped, so a test can wait for retries instead of for time.
    """

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = make_conninfo(url, host="127.0.0.1", port=self.port)
        self.attempts = 0
        self.attempted = threading.Condition()
        self._open = False
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def open(self) -> None:
        self._open = True

    def wait_for_attempts(self, count: int, timeout: float = 60) -> None:
        with self.attempted:
            assert self.attempted.wait_for(lambda: self.attempts >= count, timeout), self.attempts

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._open:
                # Counted before the client can see the close and give up.
                with self.attempted:
                    self.attempts += 1
                    self.attempted.notify_all()
                client.close()
                continue
            family, address = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(address)
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=_pump, args=(source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        self._listener.close()
        self._accepting.join(timeout=5)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
