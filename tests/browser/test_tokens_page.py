"""The API tokens page in real Chromium against a real `serve`: a token made in the browser
is shown once and works at once, revoking it stops it, and axe-core finds nothing."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.browser.test_admin_pages import ROOT, signed_in  # noqa: F401 - a fixture by name
from tests.browser.test_export_live import Stack, browser, stack  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _views(base_url: str, secret: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the test's own local server
        f"{base_url}/api/v1/views", headers={"Authorization": f"Bearer {secret}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert isinstance(json.loads(response.read()), list)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_tokens_page_end_to_end(stack: Stack, signed_in: Any) -> None:  # noqa: F811
    root = signed_in(ROOT)
    assert root.open("/staff/tokens") == 200
    problems = {"empty": root.accessibility_problems()}
    root.page.fill('#new-token input[name="name"]', "Nightly DuckDB pull")
    root.page.check('#new-token input[name="scopes"][value="views:read"]')
    root.page.fill('#new-token input[name="expires_days"]', "7")
    root.page.click('#new-token button[type="submit"]')
    root.page.wait_for_selector("#token-created")
    secret = root.page.input_value("#token-secret")
    assert re.fullmatch(r"tex_[A-Za-z0-9_-]{43}", secret)
    problems["created"] = root.accessibility_problems()
    assert _views(stack.base_url, secret) == 200
    # Shown once: the list after it has the token but not its secret.
    root.open("/staff/tokens")
    assert secret not in root.page.content()
    row = root.page.locator("table.tokens tr", has_text="Nightly DuckDB pull")
    assert "views:read" in row.inner_text()
    row.get_by_role("button", name="Revoke Nightly DuckDB pull").click()
    root.page.wait_for_url("**/staff/tokens")
    revoked = root.page.locator("table.tokens tr", has_text="Nightly DuckDB pull")
    assert "revoked" in revoked.inner_text()
    problems["revoked"] = root.accessibility_problems()
    assert _views(stack.base_url, secret) == 401
    assert problems == {"empty": [], "created": [], "revoked": []}
