"""The API's OpenAPI document: valid OpenAPI 3.1, complete, and kept by a live `serve` under
schemathesis (no 5xx, no response the document does not describe)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.components import require_module
from tests.support.servers import Servers
from tests.support.services import actor_for
from tests.support.web import Web, make_user
from ticketexport import tokens
from ticketexport.web import openapi
from ticketexport.web.api import PREFIX

# The whole schemathesis run's budget, well under a minute with the server's start.
SCHEMATHESIS_SECONDS = 25


async def test_the_document_is_valid_openapi_and_covers_every_route(web: Web) -> None:
    validator = require_module(
        "openapi_spec_validator", "openapi-spec-validator (the test extra) is not installed"
    )
    response = await web.client.get(f"{PREFIX}/openapi.json")
    assert response.status == 200
    document = await response.json()
    validator.validate(document)
    assert document["openapi"] == "3.1.0"
    served: set[tuple[str, str]] = set()
    for route in web.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(PREFIX) and route.method != "HEAD":
            served.add((route.method.lower(), re.sub(r"\{id[^}]*\}", "{id}", path[len(PREFIX) :])))
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert served == described
    # Every operation answers errors in one documented shape.
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["responses"]["default"] == {"$ref": "#/components/responses/Error"}


@pytest.mark.slow
def test_schemathesis_finds_nothing_against_a_live_serve(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    require_module("schemathesis", "schemathesis (the test extra) is not installed")
    make_user(conn, "contract@example.com", permissions=512, admin=True)
    conn.execute(
        "INSERT INTO tickets (title, status_id, priority_id) "
        "SELECT 'Contract ' || g, 1, 1 FROM generate_series(1, 5) AS g"
    )
    servers = Servers(tmp_path)
    try:
        # Unlimited requests: the run checks the document, not the rate limit (tested apart).
        server = servers.start(db_url, {"TICKETEXPORT_API_REQUESTS_PER_MINUTE": "0"})
        secret = _token(db_url)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{server.url}{PREFIX}/openapi.json",
                "--header",
                f"Authorization: Bearer {secret}",
                "--checks",
                "all",
                # A schema-valid cursor or filter value can still name nothing (a cursor this
                # API never handed out, a status that does not exist): 400 is right there.
                # A just-requested export has no file or manifest yet: 404 is right there.
                "--exclude-checks",
                "positive_data_acceptance,ensure_resource_availability",
                "--max-examples",
                "10",
                "--max-time",
                str(SCHEMATHESIS_SECONDS),
                "--request-timeout",
                "5",
                "--seed",
                "1",
                "--generation-deterministic",
                "--no-color",
            ],
            # Its cache of findings goes with the test's files, not into the repository.
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=SCHEMATHESIS_SECONDS + 30,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:] + servers.outputs()
        # Every operation schemathesis takes from the document was tested, and it took all
        # but at most one (its count is one short of the document's operations).
        selected = re.search(r"Selected: (\d+)/(\d+)", output)
        tested = re.search(r"Tested: (\d+)", output)
        assert selected, output[-3000:]
        assert tested, output[-3000:]
        assert selected.group(1) == selected.group(2) == tested.group(1), output[-3000:]
        operations = sum(len(item) for item in openapi.DOCUMENT["paths"].values())
        assert int(tested.group(1)) >= operations - 1, output[-3000:]
        # The access log's status field (a duration such as 5008.2 ms is no 500).
        assert re.search(r'"status": 200\b', server.output())
        assert not re.search(r'"status": 500\b', server.output())
    finally:
        servers.stop_all()


def _token(db_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            created = await tokens.create_token(
                aconn,
                actor_for(db_url, "contract@example.com"),
                tokens.TokenRequest("contract", tokens.SCOPES, 1),
                client_ip=None,
            )
        return created.secret

    return asyncio.run(make())
