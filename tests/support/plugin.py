"""The harness's pytest hooks; tests/conftest.py loads this module through pytest_plugins."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A terminated run (a CI timeout, a kill) becomes an interrupt, so session teardown
    # still stops the embedded server and removes the run's directory.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
