"""Schedules in real Chromium against a real `serve` process: created from the list page's
Schedule… form, paused, resumed and deleted through the pages, with axe-core finding
nothing on the list page with the form open, the schedules list and a schedule's page."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_admin_pages import Browser
from tests.browser.test_export_live import (  # noqa: F401 - fixtures used by name
    LOGINS,
    Stack,
    browser,
    stack,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OWNER = "agent.export@example.com"  # staff with the export permission (demo data)


@pytest.fixture
def signed_in(browser: Any, stack: Stack) -> Iterator[Any]:  # noqa: F811 - the fixture
    opened: list[Browser] = []

    def open_as(email: str) -> Browser:
        opened.append(Browser(browser, stack, email, LOGINS[email].password))
        return opened[-1]

    yield open_as
    for one in opened:
        with contextlib.suppress(Exception):
            one.close()


def test_create_pause_resume_and_delete_a_schedule(stack: Stack, signed_in: Any) -> None:  # noqa: F811
    owner = signed_in(OWNER)
    problems: dict[str, list[dict[str, Any]]] = {}
    owner.open("/staff/tickets?view=open&sort=oldest")
    owner.page.click("#schedule-button")
    problems["form"] = owner.accessibility_problems()
    # The cadence decides which fields are sent: the others are hidden and disabled.
    assert owner.page.is_visible("#schedule-time")
    assert not owner.page.is_visible("#schedule-every")
    owner.page.select_option("#schedule-cadence", "weekly")
    assert owner.page.is_visible("#schedule-weekday")
    owner.page.fill("#schedule-name", "Weekly open tickets")
    owner.page.select_option("#schedule-weekday", "mon")
    owner.page.fill("#schedule-time", "07:30")
    owner.page.select_option("#schedule-format", "csv.gz")
    owner.page.click("#schedule-submit")
    owner.page.wait_for_url(re.compile(r".*/staff/schedules/[0-9]+$"))
    schedule_id = int(owner.page.url.rsplit("/", 1)[1])
    assert "Weekly on Mon at 07:30" in str(owner.page.text_content("main"))
    assert owner.page.text_content("#schedule-state") == "active"
    problems["schedule"] = owner.accessibility_problems()
    ((request, weekday, at_time),) = stack.sql(
        "SELECT request, weekday, at_time::text FROM schedules WHERE id = %s", (schedule_id,)
    )
    assert (request["view"]["key"], request["sort"], request["format"]) == (
        "open",
        "oldest",
        "csv.gz",
    )
    assert (weekday, at_time) == (0, "07:30:00")

    owner.page.click("#schedule-pause")
    owner.page.wait_for_selector("#schedule-resume")
    assert str(owner.page.text_content("#schedule-state")).startswith("paused")
    owner.page.click("#schedule-resume")
    owner.page.wait_for_selector("#schedule-pause")
    assert owner.page.text_content("#schedule-state") == "active"

    owner.open("/staff/schedules")
    problems["list"] = owner.accessibility_problems()
    assert owner.page.is_visible(f'tr[data-schedule="{schedule_id}"]')
    owner.page.click(f'tr[data-schedule="{schedule_id}"] a')
    owner.page.wait_for_url(f"**/staff/schedules/{schedule_id}")
    owner.page.click("#schedule-delete")
    owner.page.wait_for_url("**/staff/schedules")
    assert not owner.page.is_visible(f'tr[data-schedule="{schedule_id}"]')
    assert stack.sql("SELECT count(*) FROM schedules WHERE id = %s", (schedule_id,)) == [(0,)]
    actions = [
        row[0]
        for row in stack.sql(
            "SELECT action FROM audit_log WHERE details->>'schedule_id' = %s ORDER BY id",
            (str(schedule_id),),
        )
    ]
    assert actions == [
        "schedule.created",
        "schedule.paused",
        "schedule.resumed",
        "schedule.deleted",
    ]
    assert problems == {"form": [], "schedule": [], "list": []}
