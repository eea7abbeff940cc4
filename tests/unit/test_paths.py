"""The SQL, templates and procrastinate schema are found in a checkout and in a wheel install."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ticketexport.paths import resource_root

REPO = Path(__file__).resolve().parents[2]


def _data_files() -> dict[str, list[str]]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    tables: dict[str, list[str]] = pyproject["tool"]["setuptools"].get("data-files", {})
    return tables


def test_the_wheel_carries_every_file_the_package_reads_from_the_top_of_the_repository() -> None:
    """A file under sql/ or templates/ that no data-files pattern names would be missing
    from an installed wheel (the container image) while every checkout test passes."""
    packaged: dict[str, str] = {}
    for target, patterns in _data_files().items():
        assert target.startswith("share/ticketexport"), target
        for pattern in patterns:
            for path in REPO.glob(pattern):
                relative = path.relative_to(REPO).as_posix()
                packaged[relative] = f"{target}/{path.name}"
    on_disk = {"procrastinate_schema.sql"} | {
        path.relative_to(REPO).as_posix()
        for folder in ("sql", "templates")
        for path in (REPO / folder).rglob("*")
        if path.is_file()
    }
    assert sorted(on_disk - packaged.keys()) == []
    # Installed, each keeps its place relative to the others (share/ticketexport/<same path>).
    assert all(dest == f"share/ticketexport/{src}" for src, dest in packaged.items()), packaged


def _resources(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "procrastinate_schema.sql").write_text("-- schema\n", encoding="utf-8")
    return root


def test_a_checkout_reads_its_own_files(tmp_path: Path) -> None:
    checkout = _resources(tmp_path / "checkout")
    _resources(tmp_path / "prefix" / "share" / "ticketexport")
    assert resource_root(checkout, tmp_path / "prefix") == checkout


def test_an_installed_wheel_reads_the_data_files(tmp_path: Path) -> None:
    site_packages = tmp_path / "prefix" / "lib" / "python3.11" / "site-packages"
    site_packages.mkdir(parents=True)
    installed = _resources(tmp_path / "prefix" / "share" / "ticketexport")
    assert resource_root(site_packages, tmp_path / "prefix") == installed


def test_neither_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="reinstall the package"):
        resource_root(tmp_path / "nowhere", tmp_path / "prefix")
