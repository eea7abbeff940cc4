"""The deployment as an operator runs it: the image built, the compose stack up with two
workers, an export through the published port, byte for byte what the same seed and request
give outside containers, and the data kept across `down` and `up`.

Run with `pytest -m container` (as root, with podman, runc, iptables, netavark, aardvark-dns
and debootstrap installed; .ci/run installs them). Podman here runs without systemd, so
nothing runs health checks on a schedule: the test runs each container's own check with
`podman healthcheck run` until it passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container import images
from tests.container.images import Podman
from tests.support.browserless import Client
from tests.support.clusters import free_port
from tests.support.components import missing_component
from tests.support.databases import scratch_database
from tests.support.exports import parse_csv
from tests.support.servers import Servers
from tests.support.workers import Workers, wait_for

pytestmark = [pytest.mark.container, pytest.mark.slow]

COMPOSE_FILE = images.REPO / "deploy" / "compose.yaml"
SEED = ("--tickets", "1000", "--seed", "7", "--anchor", "2026-06-01")
ADMIN = "ops.admin@example.com"
ADMIN_PASSWORD = "a long operator password"
ADD_ADMIN = ("user", "add", ADMIN, "--name", "Ops Admin", "--password", ADMIN_PASSWORD)
ADMIN_ROLES = ("--admin", "--role", "exporter")
WORKERS = 2
# Generous: two cores shared with other work; a healthy stack needs well under a minute.
HEALTHY_WITHIN = 300.0
EXPORTED_WITHIN = 180.0


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    for tool, package in (
        ("podman", "podman"),
        ("runc", "runc"),
        ("debootstrap", "debootstrap"),
        ("iptables", "iptables"),
        ("/usr/lib/podman/netavark", "netavark"),
        ("/usr/lib/podman/aardvark-dns", "aardvark-dns"),
    ):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed (apt-get install {package})")
    if os.geteuid() != 0:
        missing_component("the container tests run as root (debootstrap, rootful podman)")
    return Podman(images.write_containers_conf(tmp_path_factory.mktemp("podman")))


@pytest.fixture(scope="module")
def built(podman: Podman) -> dict[str, str]:
    """The ticketexport image and the tests' PostgreSQL image, built on the local base."""
    base = images.base_image(podman)
    images.build(
        podman,
        images.REPO / "deploy" / "Containerfile",
        images.APP_IMAGE,
        base=base,
        secrets={"pip_cert": images.CA_BUNDLE} if images.CA_BUNDLE.is_file() else {},
    )
    postgres = Path(__file__).parent / "postgres"
    images.build(
        podman, postgres / "Containerfile", images.POSTGRES_IMAGE, base=base, context=postgres
    )
    images.prune_old_layers(podman)
    return {"app": images.APP_IMAGE, "postgres": images.POSTGRES_IMAGE}


def test_the_image_runs_as_an_unprivileged_user_and_holds_no_compiler(
    podman: Podman, built: dict[str, str]
) -> None:
    config = json.loads(podman.run("image", "inspect", built["app"]).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["ticketexport"]
    assert "/var/lib/ticketexport/exports" in config["Volumes"]
    probe = podman.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        built["app"],
        "-c",
        "id -u; for tool in cc gcc c++ g++ cpp clang ld as make; do command -v $tool; done; "
        # gcc-12-base is only libgcc's documentation folder, in every Debian system.
        "dpkg-query -W -f '${Package}\\n' | grep -E '^((gcc|g\\+\\+|cpp)(-[0-9]+)?|clang.*|"
        "binutils.*|build-essential|libc6-dev|python3.*-dev)$' || true",
    )
    uid, *found = probe.stdout.split()
    assert uid == "10001"
    assert found == [], f"compilers or build tools in the image: {found}"
    # Everything the package reads at run time came with the wheel.
    listing = podman.run(
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        built["app"],
        "-c",
        "import os; from ticketexport.paths import ROOT; print(ROOT, *sorted(os.listdir(ROOT)))",
    )
    assert listing.stdout.split() == [
        "/opt/ticketexport/share/ticketexport",
        "procrastinate_schema.sql",
        "sql",
        "templates",
    ]


class Stack:
    """One compose project of deploy/compose.yaml, through podman-compose."""

    def __init__(self, podman: Podman, folder: Path, built: dict[str, str]) -> None:
        self.podman = podman
        self.project = f"te{secrets.token_hex(4)}"
        self.port = free_port()
        self.env_file = folder / "compose.env"
        self.env_file.write_text(
            "\n".join(
                [
                    f"POSTGRES_PASSWORD={secrets.token_urlsafe(24)}",
                    f"TICKETEXPORT_SECRET_KEY={secrets.token_urlsafe(48)}",
                    f"TICKETEXPORT_IMAGE={built['app']}",
                    f"POSTGRES_IMAGE={built['postgres']}",
                    f"WEB_PUBLISH=127.0.0.1:{self.port}",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        # Only the env file feeds the compose variables: none of this process's settings.
        env = {
            k: v
            for k, v in self.podman.env.items()
            if not k.startswith(("TICKETEXPORT_", "POSTGRES_", "DATABASE_URL", "WEB_", "WORKER_"))
        }
        argv = [
            str(Path(sys.executable).with_name("podman-compose")),
            "--env-file",
            str(self.env_file),
            "-p",
            self.project,
            "-f",
            str(COMPOSE_FILE),
            *args,
        ]
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert proc.returncode == 0, f"podman-compose {' '.join(args)}:\n{proc.stderr[-4000:]}"
        return proc

    def up(self) -> None:
        # --no-deps: Debian 12's Podman (4.3) can neither wait for a health check nor start
        # a container whose dependencies have dependencies (podman-compose passes
        # --requires). The stack does not need the ordering: migrate waits for the database
        # itself, and web and workers refuse to start with pending migrations and are
        # restarted until migrate has finished.
        self.compose("up", "-d", "--no-deps", "--scale", f"worker={WORKERS}")

    def down(self, *, volumes: bool = False) -> None:
        # --remove-orphans: podman-compose's down knows one container per service; the
        # second worker from --scale is found by the project's label.
        self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []))

    def run(self, *args: str) -> str:
        """A one-off `podman-compose run` of the image (the migrate service's settings)."""
        return self.compose("run", "--rm", "--no-deps", "migrate", *args).stdout

    def containers(self) -> dict[str, dict[str, object]]:
        listed = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            "--format",
            "json",
        )
        return {c["Names"][0]: c for c in json.loads(listed.stdout or "[]")}

    def logs(self) -> str:
        parts = []
        for name in self.containers():
            out = self.podman.run("logs", "--tail", "30", name, check=False)
            parts.append(f"--- {name} ---\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return "\n".join(parts)

    def wait_healthy(self) -> None:
        """Every container with a health check passes it; migrate finished with 0."""
        checked = {
            name
            for name, container in self.containers().items()
            if container["Labels"]["com.docker.compose.service"] != "migrate"  # type: ignore[index]
        }
        assert len(checked) == 2 + WORKERS, self.containers()

        def all_healthy() -> bool:
            for name in sorted(checked):
                if self.podman.run("healthcheck", "run", name, check=False).returncode == 0:
                    checked.discard(name)
            return not checked

        try:
            wait_for("every health check", all_healthy, timeout=HEALTHY_WITHIN, interval=2.0)
        except BaseException:
            print(self.logs())
            raise
        # On a second `up` the web and workers need not wait for it: wait for it here.
        migrate = next(n for n in self.containers() if n.endswith("_migrate_1"))
        exited = self.podman.run("wait", migrate, timeout=HEALTHY_WITHIN)
        assert exited.stdout.strip() == "0", self.logs()

    def volumes(self) -> set[str]:
        listed = self.podman.run(
            "volume",
            "ls",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            "--format",
            "{{.Name}}",
        )
        return set(listed.stdout.split())

    def remove(self) -> None:
        """Everything the project made, whatever state the test left it in."""
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.down(volumes=True)
        for name in self.containers():
            self.podman.run("rm", "--force", "--time", "0", name, check=False)
        for volume in self.volumes():
            self.podman.run("volume", "rm", "--force", volume, check=False)
        self.podman.run("pod", "rm", "--force", f"pod_{self.project}", check=False)
        self.podman.run("network", "rm", "--force", f"{self.project}_default", check=False)


@pytest.fixture
def stack(podman: Podman, built: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(podman, tmp_path, built)
    try:
        yield stack
    finally:
        stack.remove()


def _export(client: Client) -> tuple[str, bytes]:
    client.login(ADMIN, ADMIN_PASSWORD)
    export_id = client.export("all")
    body = wait_for(
        "the export's file", lambda: client.download(export_id), timeout=EXPORTED_WITHIN
    )
    return export_id, body


def _reference_export(server_url: str, home: Path) -> bytes:
    """The same seed, administrator and Export click with this checkout, outside containers."""
    servers, workers = Servers(home), Workers(home)
    with scratch_database(server_url) as url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TICKETEXPORT_")},
            "DATABASE_URL": url,
            "TICKETEXPORT_HOME": str(home),
        }
        for command in (["migrate"], ["seed", *SEED], [*ADD_ADMIN, *ADMIN_ROLES]):
            subprocess.run(
                [sys.executable, "-m", "ticketexport", *command],
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )
        try:
            workers.start(url)
            web = servers.start(url)
            return _export(Client(web.url))[1]
        finally:
            servers.stop_all()
            workers.stop_all()


def test_the_compose_stack_exports_what_the_checkout_exports_and_keeps_it_across_down_and_up(
    stack: Stack, server_url: str, tmp_path: Path
) -> None:
    stack.up()
    stack.wait_healthy()
    assert "1000 tickets" in stack.run("seed", *SEED).replace(",", "")
    assert "added" in stack.run(*ADD_ADMIN, *ADMIN_ROLES)

    client = Client(stack.url)
    wait_for("the published port", client.answers, timeout=60)
    export_id, body = _export(client)
    rows = parse_csv(body)
    assert rows[0][:2] == ["Ticket ID", "Title"]
    assert len(rows) == 1001  # the header and every seeded ticket

    home = tmp_path / "outside"
    home.mkdir()
    assert _reference_export(server_url, home) == body

    volumes = stack.volumes()
    assert volumes == {f"{stack.project}_postgres", f"{stack.project}_exports"}
    stack.down()
    assert stack.containers() == {}
    assert stack.volumes() == volumes

    stack.up()
    stack.wait_healthy()
    again = Client(stack.url)
    wait_for("the published port", again.answers, timeout=60)
    again.login(ADMIN, ADMIN_PASSWORD)
    assert again.download(export_id) == body
