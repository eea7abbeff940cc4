"""The administration pages in real Chromium, against a real `serve` process: a user and a
role made in the browser take effect at once, guard rails answer with a message, the audit
page finds every change, and axe-core finds nothing on any of the pages."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_export_live import (  # noqa: F401 - fixtures used by name
    AXE,
    CHROMIUM_ARGS,
    LOGINS,
    VIEWPORT,
    Stack,
    browser,
    stack,
)
from tests.support.components import missing_component

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = "admin.export@example.com"  # administrator with every permission (demo data)
NEWCOMER = "nadia.newhire@example.com"
NEWCOMER_PASSWORD = "nadia's first password"
# Records every EventSource the page opens, so the test can see when its stream ends.
SOURCES = """
window.__sources = [];
(function () {
  var Original = window.EventSource;
  if (!Original) { return; }
  window.EventSource = function (url, options) {
    var source = new Original(url, options);
    window.__sources.push(source);
    return source;
  };
  window.EventSource.prototype = Original.prototype;
})();
"""


class Browser:
    """One signed-in browser context."""

    def __init__(self, chromium: Any, site: Stack, email: str, password: str) -> None:
        self.context = chromium.new_context(base_url=site.base_url, viewport=VIEWPORT)
        self.context.add_init_script(SOURCES)
        if AXE.exists():
            self.context.add_init_script(path=str(AXE))
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.goto("/login")
        self.page.fill('input[name="email"]', email)
        self.page.fill('input[name="password"]', password)
        self.page.click('form.login-form button[type="submit"]')
        self.page.wait_for_url("**/staff/**")

    def open(self, path: str) -> int:
        response = self.page.goto(path)
        assert response is not None
        return int(response.status)

    def accessibility_problems(self) -> list[dict[str, Any]]:
        if not AXE.exists():
            missing_component("axe-core is not installed (run `npm ci`)")
        return list(
            self.page.evaluate(
                "async () => (await axe.run(document)).violations.map(v => "
                "({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"
            )
        )

    def error(self) -> str:
        return " ".join(str(self.page.text_content("#form-error")).split())

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def signed_in(browser: Any, stack: Stack) -> Iterator[Any]:  # noqa: F811 - the fixture
    opened: list[Browser] = []

    def open_as(email: str, password: str | None = None) -> Browser:
        opened.append(Browser(browser, stack, email, password or LOGINS[email].password))
        return opened[-1]

    yield open_as
    for one in opened:
        with contextlib.suppress(Exception):
            one.close()


def test_admin_pages_end_to_end(stack: Stack, signed_in: Any) -> None:  # noqa: F811
    # Only administrators holding each section's permission see it; everyone else gets 404.
    for email in ("agent@example.com", "agent.export@example.com", "admin@example.com"):
        other = signed_in(email)
        assert not other.page.is_visible("#nav-admin")
        for path in ("/admin/users", "/admin/roles", "/admin/audit", "/admin/queue"):
            assert other.open(path) == 404, (email, path)
        other.close()
    root = signed_in(ROOT)
    pages_checked = {}

    # A role without the export permission, then a user holding it.
    root.page.click("#nav-admin")
    root.page.wait_for_url("**/admin/users")
    root.open("/admin/roles")
    pages_checked["roles"] = root.accessibility_problems()
    root.page.fill('#add-role input[name="dev_name"]', "helpers")
    root.page.fill('#add-role input[name="label"]', "Helpers")
    root.page.check('#add-role input[name="permissions"][value="manage_tickets"]')
    root.page.click('#add-role button[type="submit"]')
    root.page.wait_for_url("**/admin/roles/helpers")
    pages_checked["role"] = root.accessibility_problems()

    root.open("/admin/users")
    pages_checked["users"] = root.accessibility_problems()
    root.page.fill('#add-user input[name="name"]', "Nadia Newhire")
    root.page.fill('#add-user input[name="email"]', NEWCOMER)
    root.page.fill('#add-user input[name="password"]', NEWCOMER_PASSWORD)
    root.page.check('#add-user input[name="roles"][value="helpers"]')
    root.page.click('#add-user button[type="submit"]')
    root.page.wait_for_url("**/admin/users/*")
    user_page = root.page.url
    pages_checked["user"] = root.accessibility_problems()
    assert root.page.is_checked('#edit-user input[name="roles"][value="helpers"]')

    # The newcomer signs in; the list offers no export yet.
    nadia = signed_in(NEWCOMER, NEWCOMER_PASSWORD)
    nadia.open("/staff/tickets?view=all")
    assert nadia.page.locator("#export-button").count() == 0

    # The role gains the export permission: the newcomer's next page offers it, no restart.
    root.open("/admin/roles/helpers")
    root.page.check('#edit-role input[name="permissions"][value="import_export_tickets"]')
    root.page.click('#edit-role button[type="submit"]')
    root.page.wait_for_selector("#form-saved")
    nadia.open("/staff/tickets?view=all")
    nadia.page.click("#export-button")
    nadia.page.wait_for_url("**/staff/exports/*")
    export_id = nadia.page.get_attribute("#export", "data-export-id")
    assert export_id
    nadia.page.wait_for_function(
        "() => window.__sources.length === 1 && window.__sources[0].readyState === 1"
    )

    # Guard rails: no removing one's own admin flag, no deactivating oneself.
    root.open("/admin/users?q=admin.export")
    root.page.click(f'a:text-is("{ROOT}")')
    root.page.wait_for_url("**/admin/users/*")
    root.page.uncheck('#edit-user input[name="admin"]')
    root.page.click('#edit-user button[type="submit"]')
    assert root.error() == "you cannot remove your own administrator flag"
    pages_checked["user with an error"] = root.accessibility_problems()
    root.page.check('#edit-user input[name="admin"]')
    root.page.uncheck('#edit-user input[name="active"]')
    root.page.click('#edit-user button[type="submit"]')
    assert root.error() == "you cannot deactivate yourself"
    # Escalation: Blair (admin, agent and supervisor) holds no `users`; the stack's own
    # data has no other administrator who could try, so the server tests cover that rule.

    # Deactivated: the newcomer's open status stream ends (within one keep-alive interval).
    root.page.goto(user_page)
    root.page.uncheck('#edit-user input[name="active"]')
    root.page.click('#edit-user button[type="submit"]')
    root.page.wait_for_selector("#form-saved")
    nadia.page.wait_for_function("() => window.__sources[0].readyState === 2", timeout=60_000)
    assert nadia.open("/staff/tickets") == 200
    assert "/login" in nadia.page.url

    # The audit page finds each change by its filters.
    root.open("/admin/audit")
    pages_checked["audit"] = root.accessibility_problems()
    found = {}
    for action in ("role.created", "role.updated", "user.created", "user.updated"):
        root.page.select_option('#audit-filters select[name="action"]', action)
        root.page.fill('#audit-filters input[name="actor"]', ROOT)
        root.page.click('#audit-filters button[type="submit"]')
        root.page.wait_for_url(f"**/admin/audit?action={action}*")
        rows = root.page.locator("#audit-table tbody tr")
        found[action] = [" ".join(str(t).split()) for t in rows.all_text_contents()]
        assert all(action in row for row in found[action]), found[action]
    assert any("helpers" in row for row in found["role.created"])
    assert any(
        "permissions: manage_tickets → manage_tickets, import_export_tickets" in row
        for row in found["role.updated"]
    ), found["role.updated"]
    assert any(NEWCOMER in row for row in found["user.created"])
    assert any("active: yes → no" in row for row in found["user.updated"]), found["user.updated"]
    # Times read as "6 Dec 2026, 13:06 UTC (3 min ago)", in the stack's zone (Asia/Kolkata).
    stamp = re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d IST \((just now|\d+ min ago)\) ")
    assert all(stamp.match(row) for rows in found.values() for row in rows), found
    pages_checked["audit filtered"] = root.accessibility_problems()
    root.page.fill('#audit-filters input[name="export"]', export_id)
    root.page.select_option('#audit-filters select[name="action"]', "export.requested")
    root.page.fill('#audit-filters input[name="actor"]', NEWCOMER)
    root.page.click('#audit-filters button[type="submit"]')
    root.page.wait_for_url("**/admin/audit?*export=*")
    assert root.page.locator("#audit-table tbody tr[data-action='export.requested']").count() == 1

    root.open("/admin/queue")
    pages_checked["queue"] = root.accessibility_problems()
    assert root.page.locator('#queue-counts td:text-is("todo")').count() >= 1

    assert pages_checked == {name: [] for name in pages_checked}
