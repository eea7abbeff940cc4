"""Podman for the container tests: its settings, a local Debian base and the images built on it.

No image can be pulled here, so the base the Containerfile starts from is made with
`debootstrap --variant=minbase bookworm`, trimmed the way the official bookworm-slim image
is, and imported with `podman import`. Making it takes a minute or two, so the root file
system is kept as a tarball in a cache folder outside the checkout
(`TICKETEXPORT_CONTAINER_CACHE`, default /var/cache/ticketexport-ci) with a manifest; it is
reused only when the tarball's checksum matches the manifest, the recipe below is the one
that made it and it is less than a week old (so Debian's security updates come in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TICKETEXPORT_CONTAINER_CACHE", "/var/cache/ticketexport-ci"))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
BASE_IMAGE = "localhost/ticketexport-test/debian:bookworm-slim"
APP_IMAGE = "localhost/ticketexport-test/ticketexport:latest"
POSTGRES_IMAGE = "localhost/ticketexport-test/postgres:15"
# Bumped whenever the steps that make the base change, so an older cached base is rebuilt.
RECIPE = "minbase-slim-3"
MAX_AGE = dt.timedelta(days=7)
LABEL = "org.ticketexport.test.base-sha256"
# The pip step inside a build reaches the package index through this machine's CA bundle,
# handed in as a build secret: it is mounted for that one step and never stored in a layer.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# What bookworm-slim leaves out (documentation, manuals, translations), also for every
# package installed later, and apt's caches emptied after each install.
_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
"""
_SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# Podman as it works on these machines: runc, cgroupfs (no systemd), no default ulimits
# (the sandbox refuses raising them), and netavark with aardvark-dns, so that containers
# find each other by service name (Debian's CNI plugins have no DNS).
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class ImageError(RuntimeError):
    """A build step failed; the message carries the command's output."""


@dataclasses.dataclass(frozen=True)
class Podman:
    """The podman command with the tests' containers.conf."""

    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self, *args: str, check: bool = True, timeout: float = 900, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ImageError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{_tail(proc)}")
        return proc

    def label(self, image: str, name: str) -> str | None:
        proc = self.run(
            "image", "inspect", "--format", f'{{{{index .Labels "{name}"}}}}', image, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else None


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
    return (out + "\n" + err)[-6000:]


def write_containers_conf(folder: Path) -> Path:
    path = folder / "containers.conf"
    path.write_text(CONTAINERS_CONF, encoding="utf-8")
    return path


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_tarball(cache: Path) -> Path | None:
    """The cached root file system when it is intact, made by this recipe and recent."""
    tarball, manifest = cache / "bookworm-minbase.tar", cache / "bookworm-minbase.json"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        built = dt.datetime.fromisoformat(recorded["built_at"])
    except (OSError, ValueError, KeyError):
        return None
    if recorded.get("recipe") != RECIPE or dt.datetime.now(dt.UTC) - built > MAX_AGE:
        return None
    if not tarball.is_file() or _sha256(tarball) != recorded.get("sha256"):
        return None
    return tarball


def _run(argv: Sequence[str], timeout: float = 900) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed ({proc.returncode}):\n{_tail(proc)}")


def _make_tarball(cache: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        root = work / "rootfs"
        _run(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR], timeout=1200)
        (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(_DPKG_EXCLUDES, encoding="utf-8")
        (root / "etc/apt/apt.conf.d/slim").write_text(_APT_CLEAN, encoding="utf-8")
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(_SOURCES, encoding="utf-8")
        for pattern in (
            "var/lib/apt/lists/*",
            "var/cache/apt/*.bin",
            "var/cache/apt/archives/*.deb",
            "usr/share/man/*",
            "usr/share/info/*",
            "usr/share/locale/*",
            "var/log/*.log",
        ):
            for path in root.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for doc in (root / "usr/share/doc").glob("*/*"):
            if doc.name != "copyright":
                shutil.rmtree(doc) if doc.is_dir() else doc.unlink()
        partial = cache / "bookworm-minbase.tar.part"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."])
        tarball = cache / "bookworm-minbase.tar"
        partial.replace(tarball)
        manifest = {
            "recipe": RECIPE,
            "built_at": dt.datetime.now(dt.UTC).isoformat(),
            "sha256": _sha256(tarball),
            "suite": SUITE,
            "mirror": MIRROR,
        }
        (cache / "bookworm-minbase.json").write_text(json.dumps(manifest), encoding="utf-8")
        return tarball
    finally:
        # debootstrap mounts /proc and /sys in the new root while it installs; a run that
        # failed halfway can leave them mounted, and rmtree must never walk into them.
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
        for target in sorted((line.split()[1] for line in mounts), reverse=True):
            if target.startswith(f"{work}/"):
                subprocess.run(["umount", "--lazy", target], check=False, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def base_image(podman: Podman, cache: Path = CACHE) -> str:
    """The local Debian bookworm base, imported into podman once per cached root file system."""
    with _locked(cache):
        tarball = _cached_tarball(cache) or _make_tarball(cache)
        digest = _sha256(tarball)
        if podman.label(BASE_IMAGE, LABEL) != digest:
            podman.run(
                "import",
                "--change",
                f"LABEL {LABEL}={digest}",
                "--change",
                'CMD ["bash"]',
                str(tarball),
                BASE_IMAGE,
            )
    return BASE_IMAGE


def prune_old_layers(podman: Podman) -> None:
    """Drop untagged layers older than the base's lifetime: a build whose code changed
    leaves its predecessor's layers behind, and CI builds on the same machine every run."""
    podman.run("image", "prune", "--force", "--filter", f"until={int(MAX_AGE.total_seconds())}s")


def build(
    podman: Podman,
    containerfile: Path,
    tag: str,
    *,
    base: str,
    context: Path = REPO,
    secrets: dict[str, Path] | None = None,
) -> None:
    """`podman build` of one Containerfile onto the local base."""
    # The host's network for the RUN steps: they only fetch packages, and a bridge left
    # behind by another network backend cannot get in the way.
    args = ["build", "--format", "docker", "--layers", "--network", "host"]
    args += ["-f", str(containerfile), "-t", tag]
    args += ["--build-arg", f"BASE_IMAGE={base}"]
    for name, path in (secrets or {}).items():
        args += ["--secret", f"id={name},src={path}"]
    podman.run(*args, str(context), timeout=1800)
