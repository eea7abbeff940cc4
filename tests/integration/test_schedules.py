"""Schedules over HTTP and through the ticker at given instants: creation, the access matrix,
exactly one run per tick, skipped and catch-up ticks, revoked owners, delivery and mail."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import email
import email.policy
import io
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import psycopg
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller

from tests.support.objectstores import Azurite, SeaweedFS
from tests.support.servers import free_port
from tests.support.sftp import sftp_server
from tests.support.web import Web, insert_tickets, make_user, running
from ticketexport.exports import maintenance
from ticketexport.exports.worker import ExportRun
from ticketexport.schedules import delivery
from ticketexport.schedules.ticker import run_due
from ticketexport.storage.backends import from_url

EXPORT = 512
ADMIN = "sched.admin@example.com"
OWNER = "sched.owner@example.com"
OTHER = "sched.other@example.com"
NOBODY = "sched.nobody@example.com"
ADMIN_ONLY = "sched.adminonly@example.com"


@pytest.fixture
def people(conn: psycopg.Connection[Any]) -> dict[str, int]:
    insert_tickets(conn, 30, title="Scheduled")
    return {
        ADMIN: make_user(conn, ADMIN, permissions=EXPORT, admin=True),
        OWNER: make_user(conn, OWNER, permissions=EXPORT),
        OTHER: make_user(conn, OTHER, permissions=EXPORT),
        NOBODY: make_user(conn, NOBODY),
        ADMIN_ONLY: make_user(conn, ADMIN_ONLY, admin=True),
    }


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    return tmp_path / "drop"


@pytest_asyncio.fixture
async def web(db_url: str, people: dict[str, int], drop: Path) -> AsyncIterator[Web]:
    async with running(
        db_url,
        heartbeat_seconds=0.2,
        destinations=(("drop", drop.as_uri()), ("broken", (drop / "file" / "x").as_uri())),
        max_schedules_per_user=3,
    ) as client:
        yield client


async def _create(web: Web, expect: int = 303, **fields: str) -> Any:
    token = await web.csrf("/staff/tickets")
    data = {
        "csrf_token": token,
        "view": "all",
        "name": "Morning report",
        "cadence": "every",
        "every_minutes": "5",
        **fields,
    }
    response = await web.client.post("/staff/schedules", data=data, allow_redirects=False)
    assert response.status == expect, await response.text()
    return response


async def _create_id(web: Web, **fields: str) -> int:
    response = await _create(web, **fields)
    match = re.fullmatch(r"/staff/schedules/([0-9]+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def _schedule(conn: psycopg.Connection[Any], schedule_id: int) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT next_tick, paused_at, paused_reason, last_tick FROM schedules WHERE id = %s",
        (schedule_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip(("next_tick", "paused_at", "paused_reason", "last_tick"), row, strict=True))


def _runs(conn: psycopg.Connection[Any], schedule_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id::text, schedule_tick, status, error_code, delivery_status "
        "FROM export_jobs WHERE schedule_id = %s ORDER BY requested_at",
        (schedule_id,),
    ).fetchall()


def _actions(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id").fetchall()]


async def test_create_and_see_a_schedule(web: Web, conn: psycopg.Connection[Any]) -> None:
    await web.login(OWNER)
    page = await (await web.client.get("/staff/tickets?view=all&q=Sched")).text()
    assert 'id="schedule-button">Schedule…' in page
    assert 'action="/staff/schedules"' in page
    schedule_id = await _create_id(web, q="Sched", sort="oldest", format="xlsx")
    shown = await web.client.get(f"/staff/schedules/{schedule_id}")
    text = await shown.text()
    assert shown.status == 200
    assert "Every 5 minutes" in text
    assert "Search: “Sched”" in text
    assert "Excel" in text
    listed = await (await web.client.get("/staff/schedules")).text()
    assert f'data-schedule="{schedule_id}"' in listed
    row = conn.execute("SELECT request, owner_id FROM schedules WHERE id = %s", (schedule_id,))
    request, _owner_id = row.fetchone()  # type: ignore[misc]
    assert request["q"] == "Sched"
    assert request["sort"] == "oldest"
    assert request["format"] == "xlsx"
    assert request["requester"]["email"] == OWNER
    assert "schedule.created" in _actions(conn)


async def test_access_matrix(web: Web, conn: psycopg.Connection[Any]) -> None:
    await web.login(OWNER)
    mine = await _create_id(web)
    await web.logout_cookies()

    # Someone else with 512 sees nothing of it: 404 on every route, and it is audited.
    await web.login(OTHER)
    assert (await web.client.get(f"/staff/schedules/{mine}")).status == 404
    token = await web.csrf("/staff/schedules")
    for action in ("pause", "resume", "run", "delete"):
        response = await web.client.post(
            f"/staff/schedules/{mine}/{action}", data={"csrf_token": token}, allow_redirects=False
        )
        assert response.status == 404, action
    assert (await web.client.get("/staff/schedules/999999")).status == 404
    assert (await web.client.get("/staff/schedules?all=1")).status == 403
    listed = await (await web.client.get("/staff/schedules")).text()
    assert f'data-schedule="{mine}"' not in listed
    await web.logout_cookies()

    # Without 512: no Schedule… on the list page, and creating answers 403.
    await web.login(NOBODY)
    page = await (await web.client.get("/staff/tickets")).text()
    assert "schedule-button" not in page
    await _create(web, expect=403)
    await web.logout_cookies()

    # An admin without 512 may not create either, nor see others' schedules.
    await web.login(ADMIN_ONLY)
    await _create(web, expect=403)
    assert (await web.client.get(f"/staff/schedules/{mine}")).status == 404
    await web.logout_cookies()

    # A destination needs admin and 512.
    await web.login(OWNER)
    await _create(web, expect=403, destination="drop")
    await web.logout_cookies()

    # An admin with 512 sees everyone's, and may act on them.
    await web.login(ADMIN)
    assert (await web.client.get(f"/staff/schedules/{mine}")).status == 200
    everyone = await (await web.client.get("/staff/schedules?all=1")).text()
    assert f'data-schedule="{mine}"' in everyone
    assert OWNER in everyone
    token = await web.csrf("/staff/schedules")
    paused = await web.client.post(
        f"/staff/schedules/{mine}/pause", data={"csrf_token": token}, allow_redirects=False
    )
    assert paused.status == 303
    assert _schedule(conn, mine)["paused_at"] is not None

    # Without csrf_token, nothing changes.
    response = await web.client.post(f"/staff/schedules/{mine}/resume", allow_redirects=False)
    assert response.status in (400, 403)
    assert _schedule(conn, mine)["paused_at"] is not None
    await web.logout_cookies()

    # Not signed in: POSTs answer 401, pages send to the login.
    response = await web.client.post(f"/staff/schedules/{mine}/run", allow_redirects=False)
    assert response.status == 401
    response = await web.client.get("/staff/schedules", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/login")
    denied = conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'schedule.denied'"
    ).fetchone()
    assert denied is not None
    assert denied[0] >= 6


async def test_the_per_owner_limit_answers_429(web: Web, conn: psycopg.Connection[Any]) -> None:
    await web.login(OWNER)
    for n in range(3):
        await _create_id(web, name=f"Report {n}")
    response = await _create(web, expect=429, name="One too many")
    assert "most allowed" in await response.text()
    count = conn.execute("SELECT count(*) FROM schedules").fetchone()
    assert count == (3,)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"name": "x" * 101}, "name is too long"),
        ({"name": "bad\u200bname"}, "invisible"),
        ({"name": "nul\x00"}, ""),
        ({"cadence": "yearly"}, "cadence must be one of"),
        ({"every_minutes": "4"}, "between 5 and 1440"),
        ({"every_minutes": "99999999999999999999"}, "whole number"),
        ({"every_minutes": "5", "minute": "3"}, "minute does not apply"),
        ({"cadence": "hourly", "every_minutes": "", "minute": "77"}, "between 0 and 59"),
        ({"cadence": "daily", "every_minutes": "", "time": "25:00"}, "HH:MM"),
        ({"cadence": "weekly", "every_minutes": "", "time": "07:00", "weekday": "x"}, "weekday"),
        ({"mode": "delta"}, "mode must be full or changes"),
        ({"destination": "nowhere"}, "destination must be one of"),
        ({"notify": "yes"}, "notify must be 1"),
        ({"notify": "1"}, "mail is not configured"),
        ({"format": "pdf"}, ""),
        ({"view": "nope"}, ""),
        ({"sort": "sideways"}, ""),
        ({"bogus": "1"}, "bogus"),
    ],
)
async def test_hostile_creation_fields_are_400(
    web: Web, conn: psycopg.Connection[Any], fields: dict[str, str], message: str
) -> None:
    await web.login(ADMIN)
    response = await _create(web, expect=400, **fields)
    assert message in await response.text()
    assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


async def test_hostile_paths_and_repeated_fields(web: Web) -> None:
    await web.login(OWNER)
    token = await web.csrf("/staff/tickets")
    for path in (
        "/staff/schedules/99999999999999999999",
        "/staff/schedules/abc",
        "/staff/schedules/-1",
    ):
        assert (await web.client.get(path)).status == 404, path
    assert (await web.client.get("/staff/schedules?all=2")).status == 400
    assert (await web.client.get("/staff/schedules?x=1")).status == 400
    response = await web.client.post(
        "/staff/schedules/99999999999999999999/pause", data={"csrf_token": token}
    )
    assert response.status == 404
    response = await web.client.post(
        "/staff/schedules/1/explode", data={"csrf_token": token}, allow_redirects=False
    )
    assert response.status in (404, 405)
    response = await web.client.post(
        "/staff/schedules",
        data=[("csrf_token", token), ("name", "a"), ("name", "b"), ("cadence", "every")],
        allow_redirects=False,
    )
    assert response.status == 400
    assert "more than once" in await response.text()


async def test_exactly_one_run_per_tick_whatever_the_callers(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    await web.login(OWNER)
    schedule_id = await _create_id(web)
    first = _schedule(conn, schedule_id)["next_tick"]
    assert (first - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() % 300 == 0
    # Before the tick: nothing.
    assert await run_due(web.services, first - dt.timedelta(seconds=1)) == []
    # Eight callers at once at the tick (as eight workers would): one run.
    results = await asyncio.gather(*(run_due(web.services, first) for _ in range(8)))
    taken = [t for result in results for t in result]
    assert [(t.schedule_id, t.tick, t.outcome) for t in taken] == [(schedule_id, first, "run")]
    assert await run_due(web.services, first + dt.timedelta(seconds=30)) == []
    runs = _runs(conn, schedule_id)
    assert [(r[1], r[2]) for r in runs] == [(first, "queued")]
    assert _schedule(conn, schedule_id)["next_tick"] == first + dt.timedelta(minutes=5)
    # The run is an ordinary export of the owner's, on My exports and its status page.
    assert (await web.client.get(f"/staff/exports/{runs[0][0]}")).status == 200
    requested = conn.execute(
        "SELECT actor_email, details->>'schedule_id' FROM audit_log "
        "WHERE action = 'export.requested'"
    ).fetchall()
    assert requested == [(OWNER, str(schedule_id))]

    # The next tick finds that run still queued: skipped, and recorded.
    second = first + dt.timedelta(minutes=5)
    (skip,) = await run_due(web.services, second)
    assert skip.outcome == "skipped"
    assert len(_runs(conn, schedule_id)) == 1
    shown = await (await web.client.get(f"/staff/schedules/{schedule_id}")).text()
    assert "Skipped ticks" in shown
    assert "schedule.tick_skipped" in _actions(conn)

    # After an outage of many periods: one catch-up run, for the latest missed tick.
    conn.execute(
        "UPDATE export_jobs SET status = 'cancelled' WHERE schedule_id = %s", (schedule_id,)
    )
    late = second + dt.timedelta(minutes=47, seconds=10)
    taken = await run_due(web.services, late)
    assert [(t.tick, t.outcome) for t in taken] == [(second + dt.timedelta(minutes=45), "run")]
    assert await run_due(web.services, late) == []
    assert len(_runs(conn, schedule_id)) == 2
    assert _schedule(conn, schedule_id)["next_tick"] == second + dt.timedelta(minutes=50)


async def test_a_revoked_owner_fails_the_run_and_pauses_the_schedule(
    web: Web, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    await web.login(OWNER)
    schedule_id = await _create_id(web)
    tick = _schedule(conn, schedule_id)["next_tick"]
    conn.execute("DELETE FROM user_roles WHERE user_id = %s", (people[OWNER],))
    (taken,) = await run_due(web.services, tick)
    assert taken.outcome == "permission_revoked"
    ((export_id, _, status, code, _),) = _runs(conn, schedule_id)
    assert (status, code) == ("failed", "permission_revoked")
    state = _schedule(conn, schedule_id)
    assert state["paused_at"] is not None
    audited = conn.execute(
        "SELECT action, export_id::text FROM audit_log "
        "WHERE action IN ('export.failed', 'schedule.paused') ORDER BY id"
    ).fetchall()
    assert audited == [("export.failed", export_id), ("schedule.paused", export_id)]
    # Paused: later ticks take nothing.
    assert await run_due(web.services, tick + dt.timedelta(hours=3)) == []


async def test_rights_lost_after_the_tick_are_caught_by_the_worker(
    web: Web, conn: psycopg.Connection[Any], people: dict[str, int]
) -> None:
    await web.login(ADMIN)
    schedule_id = await _create_id(web, destination="drop")
    tick = _schedule(conn, schedule_id)["next_tick"]
    (taken,) = await run_due(web.services, tick)
    assert taken.outcome == "run"
    assert taken.export_id is not None
    # No longer an admin: a file sent outside the product needs one.
    conn.execute("UPDATE users SET is_admin = false WHERE id = %s", (people[ADMIN],))
    await ExportRun(web.services, taken.export_id, None).run()
    ((_, _, status, code, _),) = _runs(conn, schedule_id)
    assert (status, code) == ("failed", "permission_revoked")
    assert _schedule(conn, schedule_id)["paused_at"] is not None
    assert "schedule.paused" in _actions(conn)


async def test_pause_resume_run_and_delete(web: Web, conn: psycopg.Connection[Any]) -> None:
    await web.login(OWNER)
    schedule_id = await _create_id(web, cadence="daily", every_minutes="", time="06:30")
    token = await web.csrf("/staff/schedules")

    async def post(action: str) -> Any:
        return await web.client.post(
            f"/staff/schedules/{schedule_id}/{action}",
            data={"csrf_token": token},
            allow_redirects=False,
        )

    assert (await post("pause")).status == 303
    assert (await post("pause")).status == 409
    tick = _schedule(conn, schedule_id)["next_tick"]
    assert await run_due(web.services, tick + dt.timedelta(days=3)) == []
    assert (await post("resume")).status == 303
    assert (await post("resume")).status == 409
    assert _schedule(conn, schedule_id)["paused_at"] is None
    ran = await post("run")
    assert ran.status == 303
    export_id = ran.headers["Location"].rsplit("/", 1)[1]
    runs = _runs(conn, schedule_id)
    assert [(r[0], r[1]) for r in runs] == [(export_id, None)]
    # One run at a time.
    assert (await post("run")).status == 409
    assert (await post("delete")).status == 303
    assert conn.execute("SELECT count(*) FROM schedules").fetchone() == (0,)
    # The run stays, as an export.
    assert (await web.client.get(f"/staff/exports/{export_id}")).status == 200
    actions = _actions(conn)
    for action in (
        "schedule.created",
        "schedule.paused",
        "schedule.resumed",
        "schedule.run_requested",
        "schedule.deleted",
    ):
        assert action in actions


async def test_delivery_writes_the_file_and_latest_whole(
    web: Web, conn: psycopg.Connection[Any], drop: Path
) -> None:
    await web.login(ADMIN)
    schedule_id = await _create_id(web, name="Daily drop!", destination="drop")
    tick = _schedule(conn, schedule_id)["next_tick"]
    (taken,) = await run_due(web.services, tick)
    assert taken.export_id is not None
    # Queued: nothing to deliver yet.
    assert not await delivery.waiting(web.services)
    await ExportRun(web.services, taken.export_id, None).run()
    assert await delivery.waiting(web.services)
    assert await delivery.deliver_pending(web.services) == 1
    assert not await delivery.waiting(web.services)
    ((_, _, status, _, delivered),) = _runs(conn, schedule_id)
    assert (status, delivered) == ("completed", "delivered")
    download = await web.client.get(f"/staff/exports/{taken.export_id}/download")
    body = await download.read()
    folder = drop / "daily-drop"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2
    assert "latest.csv" in names
    for name in names:
        assert (folder / name).read_bytes() == body
    # Nothing left to deliver.
    assert await delivery.deliver_pending(web.services) == 0
    assert "export.delivered" in _actions(conn)


async def test_an_unreachable_destination_ends_in_delivery_failed(
    web: Web, conn: psycopg.Connection[Any], drop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "BACKOFF", (0.01, 0.01))
    drop.mkdir()
    # A file where the destination's folder should be: nothing can be written under it.
    (drop / "file").write_text("in the way")
    await web.login(ADMIN)
    schedule_id = await _create_id(web, destination="broken")
    (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
    assert taken.export_id is not None
    await ExportRun(web.services, taken.export_id, None).run()
    await delivery.deliver_pending(web.services)
    ((_, _, status, _, delivered),) = _runs(conn, schedule_id)
    assert (status, delivered) == ("completed", "delivery_failed")
    attempts = conn.execute(
        "SELECT delivery_attempts FROM export_jobs WHERE id = %s", (taken.export_id,)
    ).fetchone()
    assert attempts == (3,)
    # The export itself stays completed and downloadable.
    download = await web.client.get(f"/staff/exports/{taken.export_id}/download")
    assert download.status == 200
    shown = await (await web.client.get(f"/staff/schedules/{schedule_id}")).text()
    assert "delivery_failed" in shown
    status_page = await (await web.client.get(f"/staff/exports/{taken.export_id}")).text()
    assert re.search(r'id="export-delivery">delivery_failed<', status_page)
    assert f'href="/staff/schedules/{schedule_id}"' in status_page
    assert "export.delivery_failed" in _actions(conn)
    metrics = await (await web.client.get("/metrics")).text()
    assert "ticketexport_schedule_delivery_failures 1.0" in metrics


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


async def test_mail_about_a_run_has_the_link_and_no_file(
    db_url: str, people: dict[str, int], conn: psycopg.Connection[Any]
) -> None:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        async with running(
            db_url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            mail_from="exports@example.com",
            base_url="https://tickets.example.com",
        ) as web:
            await web.login(OWNER)
            schedule_id = await _create_id(web, notify="1")
            (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
            assert taken.export_id is not None
            await ExportRun(web.services, taken.export_id, None).run()
            assert await delivery.notify_pending(web.services) == 1
            assert await delivery.notify_pending(web.services) == 0
    finally:
        controller.stop()
    (raw,) = inbox.messages
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == OWNER
    assert "completed" in message["Subject"]
    assert not message.is_multipart()
    body = message.get_content()
    assert f"https://tickets.example.com/staff/exports/{taken.export_id}" in body
    assert "Scheduled 1" not in body  # no row of the file
    assert conn.execute(
        "SELECT notify_status FROM export_jobs WHERE id = %s", (taken.export_id,)
    ).fetchone() == ("sent",)


async def test_sftp_delivery_is_never_seen_half_written(
    db_url: str, people: dict[str, int], conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    insert_tickets(conn, 3000, title="A longer title so that the file spans many writes")
    async with (
        sftp_server(tmp_path / "sftp") as server,
        running(
            db_url,
            destinations=(("partner", server.url()),),
            sftp_key_file=str(server.key_file),
            sftp_known_hosts=str(server.known_hosts),
        ) as web,
    ):
        await web.login(ADMIN)
        schedule_id = await _create_id(web, name="Partner feed", destination="partner")
        (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
        assert taken.export_id is not None
        await ExportRun(web.services, taken.export_id, None).run()
        body = await (await web.client.get(f"/staff/exports/{taken.export_id}/download")).read()
        folder = server.root / "incoming" / "partner-feed"
        seen: list[int] = []
        stop = asyncio.Event()

        def look() -> None:
            # A reader polling the folder: whatever final name it finds holds the whole
            # file, never a part of it.
            if not folder.exists():
                return
            for path in folder.iterdir():
                if path.name.endswith(".part"):
                    continue
                data = path.read_bytes()
                assert data == body, (path.name, len(data), len(body))
                seen.append(len(data))

        async def poll() -> None:
            while not stop.is_set():
                await asyncio.to_thread(look)
                await asyncio.sleep(0)

        poller = asyncio.create_task(poll())
        try:
            assert await delivery.deliver_pending(web.services) == 1
        finally:
            stop.set()
            await poller
        look()
    ((_, _, _, _, delivered),) = _runs(conn, schedule_id)
    assert delivered == "delivered"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2
    assert "latest.csv" in names
    assert seen


async def test_sftp_refuses_an_unpinned_host(
    db_url: str,
    people: dict[str, int],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "BACKOFF", (0.01, 0.01))
    async with sftp_server(tmp_path / "sftp") as server:
        # A known_hosts file that pins another key for this host: nothing is sent.
        other = tmp_path / "other_known_hosts"
        other.write_text(
            f"[127.0.0.1]:{server.port} "
            + asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        )
        async with running(
            db_url,
            destinations=(("partner", server.url()),),
            sftp_key_file=str(server.key_file),
            sftp_known_hosts=str(other),
        ) as web:
            await web.login(ADMIN)
            schedule_id = await _create_id(web, destination="partner")
            (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
            assert taken.export_id is not None
            await ExportRun(web.services, taken.export_id, None).run()
            await delivery.deliver_pending(web.services)
        assert not (server.root / "incoming").exists()
    ((_, _, status, _, delivered),) = _runs(conn, schedule_id)
    assert (status, delivered) == ("completed", "delivery_failed")


@pytest.fixture(
    params=[
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def lake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """An object store destination's URL, with the credentials in the environment (a plain
    fixture: the stores' own fixtures start outside the tests' event loop)."""
    if request.param == "s3":
        seaweed: SeaweedFS = request.getfixturevalue("seaweed")
        env, url = seaweed.env, seaweed.url(seaweed.create_bucket(), f"drop-{uuid.uuid4().hex}")
    else:
        azurite: Azurite = request.getfixturevalue("azurite_server")
        env, url = azurite.env, azurite.url(azurite.create_container(), "drop")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return url


async def test_object_store_destinations_get_the_file_and_latest(
    db_url: str, people: dict[str, int], conn: psycopg.Connection[Any], lake: str
) -> None:
    url = lake
    async with running(db_url, destinations=(("lake", url),)) as web:
        await web.login(ADMIN)
        schedule_id = await _create_id(
            web, name="To the lake", destination="lake", format="parquet"
        )
        (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
        assert taken.export_id is not None
        await ExportRun(web.services, taken.export_id, None).run()
        assert await delivery.deliver_pending(web.services) == 1
        body = await (await web.client.get(f"/staff/exports/{taken.export_id}/download")).read()
    ((_, _, _, _, delivered),) = _runs(conn, schedule_id)
    assert delivered == "delivered"
    (file_name,) = conn.execute(
        "SELECT m.file_name FROM export_jobs e JOIN media_items m ON m.id = e.media_item_id "
        "WHERE e.id = %s",
        (taken.export_id,),
    ).fetchone()  # type: ignore[misc]
    store = from_url(url)
    try:
        keys = sorted(await store.list_keys("to-the-lake/"))
        assert keys == sorted([f"to-the-lake/{file_name}", "to-the-lake/latest.parquet"])
        for key in keys:
            assert b"".join([chunk async for chunk in store.read(key)]) == body
    finally:
        await store.close()


async def test_a_deleted_schedules_runs_are_not_delivered(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    await web.login(ADMIN)
    schedule_id = await _create_id(web, destination="drop")
    (taken,) = await run_due(web.services, _schedule(conn, schedule_id)["next_tick"])
    assert taken.export_id is not None
    token = await web.csrf("/staff/schedules")
    response = await web.client.post(
        f"/staff/schedules/{schedule_id}/delete",
        data={"csrf_token": token},
        allow_redirects=False,
    )
    assert response.status == 303
    await ExportRun(web.services, taken.export_id, None).run()
    assert await delivery.deliver_pending(web.services) == 0
    row = conn.execute(
        "SELECT status, schedule_id, delivery_status FROM export_jobs WHERE id = %s",
        (taken.export_id,),
    ).fetchone()
    assert row == ("completed", None, None)


def _csv_rows(body: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    return rows[0], rows[1:]


async def _run_and_download(web: Web, export_id: str) -> bytes:
    await ExportRun(web.services, export_id, None).run()
    response = await web.client.get(f"/staff/exports/{export_id}/download")
    assert response.status == 200, await response.text()
    return await response.read()


async def test_a_schedule_of_changes_chains_to_the_full_view_whatever_the_retention(
    web: Web, conn: psycopg.Connection[Any]
) -> None:
    await web.login(ADMIN)
    schedule_id = await _create_id(web, mode="changes", sort="oldest")
    first_tick = _schedule(conn, schedule_id)["next_tick"]
    (first,) = await run_due(web.services, first_tick)
    assert first.export_id is not None
    header, rows = _csv_rows(await _run_and_download(web, first.export_id))
    # The first file: every row, as an upsert, with the Change column first.
    assert header[0] == "Change"
    assert "Ticket ID" in header
    assert len(rows) == 30
    assert {row[0] for row in rows} == {"upsert"}
    page = await (await web.client.get(f"/staff/exports/{first.export_id}")).text()
    assert "every row, as an upsert" in page
    key = header.index("Ticket ID")
    state = {row[key]: row[1:] for row in rows}

    # The first run's retention ends and maintenance prunes history: it stays the base.
    conn.execute(
        "UPDATE export_jobs SET expires_at = requested_at + interval '1 millisecond' WHERE id = %s",
        (first.export_id,),
    )
    conn.execute("UPDATE tickets SET title = 'Changed title' WHERE id = 3")
    conn.execute("DELETE FROM tickets WHERE id = 4")
    insert_tickets(conn, 2, title="Newcomer")
    await maintenance.run_maintenance(web.services)
    # Past its retention, nothing but the schedule keeps the first run's versions: the
    # title it holds for ticket 3 survived the pruning.
    kept = conn.execute(
        "SELECT count(*) FROM tickets_history WHERE id = 3 AND title <> 'Changed title'"
    ).fetchone()
    assert kept is not None
    assert kept[0] >= 1

    (second,) = await run_due(web.services, first_tick + dt.timedelta(minutes=5))
    assert second.export_id is not None
    since = conn.execute(
        "SELECT request->'since'->>'export_id' FROM export_jobs WHERE id = %s",
        (second.export_id,),
    ).fetchone()
    assert since == (first.export_id,)
    header2, changes = _csv_rows(await _run_and_download(web, second.export_id))
    assert header2 == header
    assert sorted((row[0], row[key]) for row in changes if row[0] == "delete") == [("delete", "4")]
    assert len([row for row in changes if row[0] == "upsert"]) == 3
    for row in changes:
        if row[0] == "delete":
            state.pop(row[key])
        else:
            state[row[key]] = row[1:]

    # The chain applied to the first file is a full export of the same request now.
    token = await web.csrf("/staff/tickets")
    response = await web.client.post(
        "/staff/tickets/export",
        data={"csrf_token": token, "view": "all", "sort": "oldest"},
        allow_redirects=False,
    )
    assert response.status == 303
    full_id = response.headers["Location"].rsplit("/", 1)[1]
    full_header, full_rows = _csv_rows(await _run_and_download(web, full_id))
    assert full_header == header[1:]
    full_key = full_header.index("Ticket ID")
    assert state == {row[full_key]: row for row in full_rows}
