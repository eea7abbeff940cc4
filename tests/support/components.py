"""Optional components (a browser, an office suite): skipped locally, required in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ALL = os.environ.get("TICKETEXPORT_REQUIRE_ALL") == "1"


def missing_component(reason: str) -> NoReturn:
    """Skip locally; in CI (TICKETEXPORT_REQUIRE_ALL=1) a missing component is a failure."""
    if REQUIRE_ALL:
        pytest.fail(f"required component missing: {reason}")
    pytest.skip(reason=reason)
