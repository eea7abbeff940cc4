"""Integration fixtures: the running web app against a fresh migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.web import Web, running


@pytest_asyncio.fixture
async def web(db_url: str) -> AsyncIterator[Web]:
    """The app with default settings against a fresh migrated database."""
    async with running(db_url) as client:
        yield client
