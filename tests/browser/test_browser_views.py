"""Real Chromium against the running app: sign in, switch views, search, sort, page, edit a view."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from aiohttp import web as aioweb

from tests.support.components import missing_component, require_module
from tests.support.services import services_for
from ticketexport import accounts
from ticketexport.web.app import init_app
from ticketexport.web.keys import SERVER_ERRORS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EMAIL = "agent@example.com"
PASSWORD = "browser test password"


def seed(conn: psycopg.Connection[Any]) -> None:
    accounts.add_user(conn, EMAIL, name="Ada Agent", password=PASSWORD)
    # 120 tickets, newest first by id; every tenth is a printer ticket, priorities rotate.
    conn.execute(
        "INSERT INTO tickets (title, status_id, priority_id, created_at, updated_at) "
        "SELECT CASE WHEN g % 10 = 0 THEN 'Printer problem ' || g ELSE 'Ticket ' || g END, "
        "  CASE WHEN g % 7 = 0 THEN 6 ELSE 1 + g % 3 END, 1 + g % 4, "
        "  now() - make_interval(mins => g), now() - make_interval(mins => g) "
        "FROM generate_series(1, 120) AS g"
    )
    conn.execute("UPDATE tickets SET closed_at = created_at WHERE status_id = 6")


@dataclasses.dataclass
class Site:
    url: str
    app: aioweb.Application


@pytest_asyncio.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    if not CHROMIUM.exists():
        missing_component(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn)
    async with services_for(db_url, web=True) as services:
        app = init_app(services)
        runner = aioweb.AppRunner(app, access_log=None)
        await runner.setup()
        tcp = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await tcp.start()
        port = runner.addresses[0][1]
        try:
            yield Site(f"http://127.0.0.1:{port}", app)
        finally:
            await runner.cleanup()
    assert app[SERVER_ERRORS].count == 0, "the app served a 500 during the browser test"


@pytest_asyncio.fixture
async def page(site: Site) -> AsyncIterator[Any]:
    async_api = require_module(
        "playwright.async_api", "playwright is not installed (.venv/bin/pip install playwright)"
    )
    problems: list[str] = []
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context()
            tab = await context.new_page()
            tab.set_default_timeout(15_000)
            tab.on(
                "console",
                lambda msg: problems.append(msg.text) if msg.type == "error" else None,
            )
            tab.on("pageerror", lambda exc: problems.append(str(exc)))
            yield tab
        finally:
            await browser.close()
    # A script error or a CSP violation shows up here.
    assert problems == []


async def sign_in(page: Any, site: Site) -> None:
    await page.goto(site.url + "/staff/tickets")
    assert "/login?next=" in page.url
    await page.fill("input[name=email]", EMAIL)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(site.url + "/staff/tickets")


async def row_ids(page: Any) -> list[int]:
    return [
        int(x)
        for x in await page.locator("tr[data-ticket]").evaluate_all(
            "rows => rows.map(r => r.dataset.ticket)"
        )
    ]


async def headers(page: Any) -> list[str]:
    return [t.strip() for t in await page.locator("table.tickets th").all_inner_texts()]


async def test_browse_views_search_sort_and_page(page: Any, site: Site) -> None:
    await sign_in(page, site)
    assert (await page.inner_text("#ticket-count")) == "120 tickets"
    first = await row_ids(page)
    assert first == list(range(1, 51))

    await page.click("a[data-sort=oldest]")
    await page.wait_for_url("**sort=oldest**")
    assert (await row_ids(page))[:3] == [120, 119, 118]

    await page.click("#next-page")
    await page.wait_for_url("**page=**")
    assert await row_ids(page) == list(range(70, 20, -1))
    await page.click("#next-page")
    await page.wait_for_url("**page=**")
    assert await row_ids(page) == list(range(20, 0, -1))
    assert await page.locator("#next-page").count() == 0
    await page.click("#first-page")
    await page.wait_for_load_state()
    assert (await row_ids(page))[0] == 120

    await page.click("a[data-view=closed]")
    await page.wait_for_url("**view=closed**")
    closed = await row_ids(page)
    assert sorted(closed) == [g for g in range(1, 121) if g % 7 == 0]
    assert await page.locator("a[data-view=closed][aria-current=page]").count() == 1

    await page.click("a[data-view=all]")
    await page.wait_for_url("**view=all**")
    await page.fill("input[name=q]", "printer")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_url("**q=printer**")
    assert await row_ids(page) == list(range(10, 121, 10))
    assert (await page.inner_text("#ticket-count")) == "12 tickets"


async def test_create_view_in_the_editor(page: Any, site: Site) -> None:
    await sign_in(page, site)
    await page.click("text=New view…")
    await page.wait_for_url("**/staff/views/new")
    await page.fill("input[name=name]", "Hot printers")

    # The operator list follows the field's type, and the matching value input appears.
    await page.select_option("select[name='and-0-field']", "title")
    ops = await page.locator("select[name='and-0-op'] option").evaluate_all(
        "os => os.map(o => o.value)"
    )
    assert "contains" in ops
    assert "gt" not in ops
    assert "within_past" not in ops
    await page.select_option("select[name='and-0-op']", "contains")
    assert await page.is_visible("input[name='and-0-text']")
    assert not await page.is_visible("input[name='and-0-date']")
    await page.fill("input[name='and-0-text']", "printer")

    await page.select_option("select[name='and-1-field']", "priority")
    await page.select_option("select[name='and-1-op']", "any_of")
    assert await page.is_visible("select[name='and-1-ids-priority']")
    assert not await page.is_visible("select[name='and-1-ids-person']")
    await page.select_option("select[name='and-1-ids-priority']", ["urgent", "high"])

    # Only one blank row shows until "Add condition" reveals the next.
    assert not await page.is_visible("select[name='and-2-field']")
    await page.click("fieldset[data-group=and] .add-condition")
    assert await page.is_visible("select[name='and-2-field']")
    assert not await page.is_visible("select[name='and-3-field']")

    checked = await page.locator("input[name=col]:checked").evaluate_all(
        "boxes => boxes.map(b => b.value)"
    )
    for key in checked:
        await page.uncheck(f"input[name=col][value={key}]")
    for key in ("id", "title", "priority"):
        await page.check(f"input[name=col][value={key}]")
    await page.click("li[data-column=title] .move-up")

    await page.click("#save-view")
    await page.wait_for_url("**/staff/tickets?view=*")
    assert await headers(page) == ["Title", "Ticket ID", "Priority"]
    expected = [g for g in range(10, 121, 10) if (1 + g % 4) in (1, 2)]
    assert sorted(await row_ids(page)) == sorted(expected)
    assert await page.locator(".saved-views a[aria-current=page]").inner_text() == "Hot printers"
