"""The harness's pytest hooks; tests/conftest.py loads this module through pytest_plugins."""

from __future__ import annotations

import signal

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the container tests out unless the -m expression names them.

    They build images and run the compose stack (minutes, root, Podman), so `make test`
    does not run them; `pytest -m container` (as CI does, in a step of its own) or any
    expression that mentions the marker, such as `-m "container or slow"`, selects them as
    usual.
    """
    if "container" in (config.option.markexpr or ""):
        return
    kept, left_out = [], []
    for item in items:
        (left_out if item.get_closest_marker("container") else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_configure(config: pytest.Config) -> None:
    # A terminated run (a CI timeout, a kill) becomes an interrupt, so session teardown
    # still stops the embedded server and removes the run's directory.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
