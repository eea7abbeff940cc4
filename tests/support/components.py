"""Optional components (a browser, an office suite, a module): skipped locally, required in CI."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_ALL = os.environ.get("TICKETEXPORT_REQUIRE_ALL") == "1"


def missing_component(reason: str) -> NoReturn:
    """Skip locally; in CI (TICKETEXPORT_REQUIRE_ALL=1) a missing component is a failure.

    Also usable at module level, where it skips or fails the whole module.
    """
    if REQUIRE_ALL:
        pytest.fail(f"required component missing: {reason}")
    pytest.skip(reason=reason, allow_module_level=True)


def require_module(name: str, reason: str) -> ModuleType:
    """The imported module `name`; when it cannot be imported, `missing_component(reason)`."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing_component(f"{reason} ({error})")
