"""Double submit: the same user's identical request within 10 seconds, while the first is
still queued or running, is sent to the first; just outside either condition it is not."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import Seeding
from tests.support.services import actor_for, services_for
from ticketexport import seed
from ticketexport.exports import service
from ticketexport.services import Services
from ticketexport.storage.local import LocalStorage
from ticketexport.views.model import ListRequest

REQUEST = ListRequest(view="open", q="", sort="priority", filters={}, page=None)


@pytest.fixture
def seeding() -> Seeding:
    return Seeding(tickets=50, seed=3, anchor=dt.date(2026, 6, 1))


@pytest.fixture
async def deps(seeded_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    # No per-user limit: a second real export must be possible whenever dedup says no.
    env = {"TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0"}
    async with services_for(
        seeded_url, tmp_path, env=env, storage=LocalStorage(tmp_path / "exports")
    ) as services:
        yield services


def _age(url: str, export_id: str, seconds: float) -> None:
    """Make the export look requested `seconds` ago by the database's clock."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE export_jobs SET requested_at = now() - make_interval(secs => %s) WHERE id = %s",
            (seconds, export_id),
        )


def _set_status(url: str, export_id: str, status: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if status in ("running", "completed"):
            conn.execute(
                "UPDATE export_jobs SET status = 'running', started_at = now() WHERE id = %s",
                (export_id,),
            )
        if status != "running":
            conn.execute(
                "UPDATE export_jobs SET status = %s, finished_at = now(), "
                "error_code = CASE WHEN %s = 'failed' THEN 'internal' END, "
                "error_message = CASE WHEN %s = 'failed' THEN 'x' END WHERE id = %s",
                (status, status, status, export_id),
            )


@pytest.mark.parametrize(
    ("age", "same"), [(0.0, True), (9.0, True), (11.0, False)], ids=["now", "9s", "11s"]
)
async def test_the_ten_second_window_both_sides(
    deps: Services, seeded_url: str, age: float, same: bool
) -> None:
    user = actor_for(seeded_url)
    first = await service.request_export(deps, user, REQUEST, client_ip=None)
    _age(seeded_url, first.export_id, age)
    second = await service.request_export(deps, user, REQUEST, client_ip=None)
    assert (second.deduplicated, second.export_id == first.export_id) == (same, same)


@pytest.mark.parametrize(
    ("status", "same"),
    [("queued", True), ("running", True), ("cancelled", False), ("failed", False)],
)
async def test_only_while_the_first_is_queued_or_running(
    deps: Services, seeded_url: str, status: str, same: bool
) -> None:
    user = actor_for(seeded_url)
    first = await service.request_export(deps, user, REQUEST, client_ip=None)
    _set_status(seeded_url, first.export_id, status)
    second = await service.request_export(deps, user, REQUEST, client_ip=None)
    assert (second.deduplicated, second.export_id == first.export_id) == (same, same)


async def test_only_the_same_user_and_the_same_request(deps: Services, seeded_url: str) -> None:
    user = actor_for(seeded_url)
    first = await service.request_export(deps, user, REQUEST, client_ip=None)
    other_request = ListRequest(view="open", q="", sort="newest", filters={}, page=None)
    assert (await service.request_export(deps, user, other_request, client_ip=None)).export_id != (
        first.export_id
    )
    login = next(d for d in seed.DEMO_LOGINS if not d.is_admin and d.can_export)
    other_user = actor_for(seeded_url, login.email)
    assert (await service.request_export(deps, other_user, REQUEST, client_ip=None)).export_id != (
        first.export_id
    )
