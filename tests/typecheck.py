"""Run mypy over the package as the build lays it out.

``pyproject.toml`` maps the repository's top-level folders into the package (``processors/`` is
``receiptflow.processors``, and so on) instead of linking them. mypy finds modules by folder only and
does not read that mapping, so this hands it every file with the module name the build gives it, read
from the same ``package-dir`` table; its configuration (strict, overrides) is ``[tool.mypy]`` as usual.

Usage: ``python tests/typecheck.py [mypy options]`` (``make typecheck`` runs it). Exit status as mypy's.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def package_roots(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """Dotted package -> folder, from ``[tool.setuptools] package-dir`` (``""`` is the src folder)."""
    mapping: dict[str, str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    src = ROOT / mapping[""]
    roots = {"receiptflow": src / "receiptflow"}
    roots.update({name: ROOT / folder for name, folder in mapping.items() if name})
    return roots


def modules(roots: dict[str, Path] | None = None) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package as the build maps it."""
    found: dict[str, Path] = {}
    for package, folder in (roots or package_roots()).items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.setdefault(".".join(parts), path)
    return found


def sources() -> list[BuildSource]:
    from mypy.modulefinder import BuildSource  # noqa: PLC0415 - the layer test imports this module without mypy

    return [BuildSource(str(path.relative_to(ROOT)), module) for module, path in modules().items()]


def main(argv: list[str]) -> int:
    from mypy import build  # noqa: PLC0415
    from mypy.errors import CompileError  # noqa: PLC0415
    from mypy.main import process_options  # noqa: PLC0415

    # The options only: the sources are the explicit list below (``-c ""`` stands in for a target).
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, "-c", ""])
    try:
        result = build.build(sources(), options)
    except CompileError as exc:
        print("\n".join(exc.messages))
        return 2
    for line in result.errors:
        print(line)
    files = len(result.files)
    if result.errors:
        print(f"Found {sum(': error:' in e for e in result.errors)} errors (checked {files} modules)")
        return 1
    print(f"Success: no issues found in {len(modules())} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
