"""`ticketexport healthcheck web|worker`: the checks a container runtime or a monitor runs."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from ticketexport import db
from ticketexport.config import Settings
from ticketexport.embedded import process_alive

# Long enough for a loaded machine, short enough for a container runtime's check timeout.
TIMEOUT_SECONDS = 5
# Under TICKETEXPORT_HOME: one record per running worker process, named by its process id.
RECORDS = "run"


class Unhealthy(Exception):
    """The checked process is not healthy; the message says why, in one line."""


# A worker process's record of its procrastinate workers -----------------------------------
#
# procrastinate registers each worker in procrastinate_workers with an id and refreshes its
# last_heartbeat while the worker runs. A worker process writes the ids of its own workers
# here, so the check asks about exactly those rows: another healthy worker elsewhere must
# not make a stuck one look alive.


def _record_path(home: Path, pid: int) -> Path:
    return home / RECORDS / f"worker-{pid}.json"


def record_workers(home: Path, worker_ids: list[int]) -> None:
    """Write (atomically) which procrastinate workers this process runs."""
    path = _record_path(home, os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps({"pid": os.getpid(), "worker_ids": worker_ids}), "utf-8")
    partial.replace(path)


def forget_workers(home: Path) -> None:
    """Remove this process's record (its workers stopped)."""
    _record_path(home, os.getpid()).unlink(missing_ok=True)


def _live_records(home: Path) -> dict[int, list[int]]:
    """Worker ids by process id, for the processes that are still running."""
    records: dict[int, list[int]] = {}
    for path in sorted((home / RECORDS).glob("worker-*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, ids = int(record["pid"]), [int(i) for i in record["worker_ids"]]
            if process_alive(pid):
                records[pid] = ids
    return records


def check_worker(settings: Settings) -> str:
    """Every worker process running under this home has a recent heartbeat of its own."""
    records = _live_records(settings.home)
    if not records:
        raise Unhealthy(f"no worker process has registered under {settings.home}")
    wanted = sorted(i for ids in records.values() for i in ids)
    with db.database_url(settings) as url:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=TIMEOUT_SECONDS) as conn:
                rows = conn.execute(
                    db.q("workers_beating"),
                    {"ids": wanted, "seconds": settings.worker_seen_seconds},
                ).fetchall()
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise Unhealthy(f"cannot reach the database: {first}") from None
    beating = {int(row[0]) for row in rows}
    silent = [i for i in wanted if i not in beating]
    seconds = f"{settings.worker_seen_seconds:g} s"
    if silent:
        raise Unhealthy(f"worker {', '.join(map(str, silent))}: no heartbeat within {seconds}")
    return f"workers {', '.join(map(str, wanted))}: heartbeat within {seconds}"


# The web process: its own /healthz ---------------------------------------------------------


def _local_url(settings: Settings) -> str:
    # A wildcard listen address is reached on loopback; IPv6 literals need brackets.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104 - compared
        settings.host, settings.host
    )
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


def check_web(settings: Settings) -> str:
    """The web process on TICKETEXPORT_HOST/PORT answers /healthz with 200."""
    url = _local_url(settings)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - http on loopback
            return f"{url}: {response.status} {_checks(response.read())}"
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url}: {exc.code} {_checks(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unhealthy(f"{url}: not answering ({reason})") from None


def _checks(body: bytes) -> str:
    """The checks /healthz reports, compactly: database=ok migrations=ok worker=ok."""
    try:
        data: Any = json.loads(body)
        checks = data if isinstance(data, dict) else {}
        return " ".join(f"{k}={v}" for k, v in checks.items() if isinstance(v, str))
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
