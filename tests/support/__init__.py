"""Helpers shared by the test suite; tests/conftest.py loads its plugin module."""

from __future__ import annotations

import pkgutil

import pytest

# The helpers assert like tests do. Registered before any of them is imported, pytest
# rewrites their asserts too, so a failing helper shows the values it compared.
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
