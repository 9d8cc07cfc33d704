"""The import contract: the package's layers import one way, downwards.

From the bottom up:

1. the shared core: every module of ``receiptflow`` outside the folders below (config, errors,
   models, codec, topics, metrics, validation, policy, catalogue, card hashing, erasure record, …);
2. ``producers``, ``processors`` and ``sinks``, which use the core and never import each other;
3. ``jobs``: batch jobs that combine the layers below (profile rebuild, segments, subject export
   and erasure); ``web``, the card holder's page, stands beside them: it may import the jobs as
   well, and neither the jobs nor anything below imports it;
4. the commands on top (``cli``, ``demo``, ``__main__``), which may import anything.

The check reads every import statement of the package (lazy ones inside functions too) with
:mod:`ast`, so it runs without importing anything.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import receiptflow

pytestmark = pytest.mark.unit

PACKAGE_DIR = Path(receiptflow.__file__).parent
LAYERS = ("producers", "processors", "sinks")
JOBS = "jobs"
WEB = "web"
TOP = ("cli", "demo", "__main__")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (the layer folders are symlinks)."""
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(PACKAGE_DIR, followlinks=True):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            parts = ["receiptflow", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """The ``receiptflow`` modules ``module`` imports, with the line of each import."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if node.module is None:  # ``from . import x``: x may be a module
                targets.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names)
            else:
                targets.append((target, node.lineno))
    return [(t, line) for t, line in targets if t == "receiptflow" or t.startswith("receiptflow.")]


def _layer(module: str) -> str:
    """The layer of a dotted name: a layer folder, ``jobs``, ``web``, ``top`` or ``core``."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else ""
    if first in LAYERS or first in (JOBS, WEB):
        return first
    if first in TOP:
        return "top"
    return "core"


def _allowed(source: str, target: str) -> bool:
    if source == target or target == "core" or source == "top":
        return True
    if source == JOBS:
        return target in LAYERS
    if source == WEB:
        return target in LAYERS or target == JOBS
    return False


def test_modules_are_found() -> None:
    modules = _modules()
    for name in ("receiptflow.config", "receiptflow.processors.router", "receiptflow.sinks.base"):
        assert name in modules
    assert any(_layer(m) == "producers" for m in modules)
    assert any(_layer(m) == JOBS for m in modules)
    assert any(_layer(m) == WEB for m in modules)


def test_layers_import_one_way() -> None:
    broken = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)}) on line {line}"
        for module, path in sorted(_modules().items())
        for target, line in _imports(module, path)
        if not _allowed(_layer(module), _layer(target))
    ]
    assert broken == [], "imports against the layer order:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("receiptflow.sinks.runner", "receiptflow.processors.policy", False),
        ("receiptflow.processors.segments", "receiptflow.sinks.base", False),
        ("receiptflow.producers.ingest", "receiptflow.processors.core", False),
        ("receiptflow.dlq", "receiptflow.processors.core", False),
        ("receiptflow.codec", "receiptflow.jobs.subject", False),
        ("receiptflow.sinks.base", "receiptflow.jobs.segments", False),
        ("receiptflow.jobs.subject", "receiptflow.cli", False),
        ("receiptflow.jobs.subject", "receiptflow.sinks.card_rows", True),
        ("receiptflow.processors.router", "receiptflow.validation", True),
        ("receiptflow.cli", "receiptflow.jobs.segments", True),
        ("receiptflow.web.data", "receiptflow.jobs.subject", True),
        ("receiptflow.web.data", "receiptflow.processors.profile_views", True),
        ("receiptflow.jobs.subject", "receiptflow.web.data", False),
        ("receiptflow.processors.app", "receiptflow.web.app", False),
        ("receiptflow.config", "receiptflow.web.i18n", False),
        ("receiptflow.cli.web", "receiptflow.web.app", True),
    ],
)
def test_the_rule(source: str, target: str, allowed: bool) -> None:
    assert _allowed(_layer(source), _layer(target)) is allowed
