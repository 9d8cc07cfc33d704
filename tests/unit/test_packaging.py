"""The distribution's package list: the mapped top-level folders are real packages, with no links.

``pyproject.toml`` lists the packages by hand (``packages``) because three of them live outside
``src``; a new subpackage missing from that list would be left out of the wheel without an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ..typecheck import ROOT, modules, package_roots

pytestmark = pytest.mark.unit


def _setuptools() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    return table


def _folder(package: str) -> Path:
    """Where a dotted package lies, by the longest mapped prefix."""
    roots = package_roots()
    root = max((name for name in roots if package == name or package.startswith(name + ".")), key=len)
    return roots[root].joinpath(*package.removeprefix(root).strip(".").split(".")) if package != root else roots[root]


def test_every_package_folder_is_listed() -> None:
    listed = set(_setuptools()["packages"])  # type: ignore[call-overload]
    found = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert found <= listed
    # The rest are the folders of shipped data (listed so the build does not warn of them as packages).
    for package in listed - found:
        folder = _folder(package)
        assert folder.is_dir() and not list(folder.glob("*.py")), package
    data_folders = {"data", "web/templates", "processors/profiles/lua", "schemas/checkout"}
    assert {str(_folder(p).relative_to(ROOT)).removeprefix("src/receiptflow/") for p in listed - found} >= data_folders


@pytest.mark.parametrize("folder", ["producers", "processors", "sinks", "schemas"])
def test_top_level_folders_are_mapped_not_linked(folder: str) -> None:
    assert package_roots()[f"receiptflow.{folder}"] == ROOT / folder
    assert (ROOT / folder / "__init__.py").is_file()
    # No folder or module of the package is a link (two shipped data files are: README, "Package map").
    folders = [ROOT / folder, *(ROOT / folder).rglob("*"), *(ROOT / "src").rglob("*")]
    assert [p for p in folders if p.is_symlink() and p.suffix in ("", ".py")] == []


def test_mapped_packages_import_from_their_folders() -> None:
    import receiptflow.processors.profiles.store as store  # noqa: PLC0415
    import receiptflow.sinks.base as base  # noqa: PLC0415

    assert Path(store.__file__).is_relative_to(ROOT / "processors" / "profiles")
    assert Path(base.__file__).is_relative_to(ROOT / "sinks")
