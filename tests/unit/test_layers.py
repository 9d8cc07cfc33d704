"""The import contract: the package's layers import one way, downwards.

From the bottom up:

1. the shared core: every module of ``receiptflow`` outside the folders below (config, errors,
   models, codec, topics, metrics, validation, policy, catalogue, card hashing, erasure record, …);
2. ``producers``, ``sinks`` and the three wings of ``processors`` (``processors.router``,
   ``processors.aggregate`` and ``processors.profiles``), which use the core and never import each other;
3. ``jobs``: batch jobs that combine the layers below (profile rebuild, segments, subject export
   and erasure); ``web``, the card holder's page, stands beside them: it may import the jobs as
   well, and neither the jobs nor anything below imports it. Neither reads the router: what they
   need of processing is the profiles wing;
4. the commands on top (``cli``, with the demo, and ``__main__``), which may import anything.

The check reads every import statement of the package (lazy ones inside functions too) with
:mod:`ast`, so it runs without importing anything. The files are found as the build maps them
(``pyproject.toml``'s ``package-dir``), the same list ``make typecheck`` hands mypy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ..typecheck import modules as _modules

pytestmark = pytest.mark.unit

ROUTER = "processors.router"
AGGREGATE = "processors.aggregate"
PROFILES = "processors.profiles"
WINGS = (ROUTER, AGGREGATE, PROFILES)
LAYERS = ("producers", "sinks", *WINGS, "processors")
JOBS = "jobs"
WEB = "web"
TOP = ("cli", "__main__")


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
    """The layer of a dotted name: a layer folder or wing, ``jobs``, ``web``, ``top`` or ``core``."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else ""
    if first == "processors" and len(parts) > 2 and f"processors.{parts[2]}" in WINGS:
        return f"processors.{parts[2]}"
    if first in LAYERS or first in (JOBS, WEB):
        return first
    if first in TOP:
        return "top"
    return "core"


def _allowed(source: str, target: str) -> bool:
    if source == target or target == "core" or source == "top":
        return True
    # The jobs and the page read the profiles wing; the router is nobody's library.
    readable = ("producers", "sinks", PROFILES)
    if source == JOBS:
        return target in readable
    if source == WEB:
        return target in readable or target == JOBS
    return False


def test_modules_are_found() -> None:
    modules = _modules()
    for name in ("receiptflow.config", "receiptflow.processors.router.worker", "receiptflow.sinks.base"):
        assert name in modules
    assert any(_layer(m) == "producers" for m in modules)
    assert any(_layer(m) == JOBS for m in modules)
    assert any(_layer(m) == WEB for m in modules)
    assert _layer("receiptflow.processors.aggregate.worker") == AGGREGATE
    assert any(_layer(m) == AGGREGATE for m in modules)


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
        ("receiptflow.sinks.runner", "receiptflow.processors.router.route", False),
        ("receiptflow.processors.profiles.store", "receiptflow.sinks.base", False),
        ("receiptflow.producers.ingest", "receiptflow.processors.router.route", False),
        ("receiptflow.dlq", "receiptflow.processors.router.route", False),
        ("receiptflow.codec", "receiptflow.jobs.subject", False),
        ("receiptflow.sinks.base", "receiptflow.jobs.segments", False),
        ("receiptflow.jobs.subject", "receiptflow.cli", False),
        ("receiptflow.jobs.subject", "receiptflow.sinks.card_rows", True),
        ("receiptflow.processors.router.worker", "receiptflow.validation", True),
        ("receiptflow.processors.router.step", "receiptflow.processors.router.consent", True),
        ("receiptflow.processors.router.step", "receiptflow.processors.profiles.rules", False),
        ("receiptflow.processors.profiles.agent", "receiptflow.processors.router.pseudonym", False),
        ("receiptflow.jobs.profile_rebuild", "receiptflow.processors.profiles.fold", True),
        ("receiptflow.jobs.profile_rebuild", "receiptflow.processors.router.route", False),
        ("receiptflow.web.data", "receiptflow.processors.router.consent", False),
        ("receiptflow.cli", "receiptflow.jobs.segments", True),
        ("receiptflow.cli.supervise", "receiptflow.processors.router.worker", True),
        ("receiptflow.web.data", "receiptflow.jobs.subject", True),
        ("receiptflow.web.data", "receiptflow.processors.profiles.views", True),
        ("receiptflow.jobs.subject", "receiptflow.web.data", False),
        ("receiptflow.processors.profiles.agent", "receiptflow.web.app", False),
        ("receiptflow.config", "receiptflow.web.i18n", False),
        ("receiptflow.cli.web", "receiptflow.web.app", True),
        # The aggregator: a wing of its own, on the core (cells, suppression) only, and nobody's library.
        ("receiptflow.processors.aggregate.worker", "receiptflow.suppression", True),
        ("receiptflow.processors.aggregate.windows", "receiptflow.cells", True),
        ("receiptflow.processors.aggregate.worker", "receiptflow.processors.router.watchdog", False),
        ("receiptflow.processors.aggregate.worker", "receiptflow.sinks.runner", False),
        ("receiptflow.processors.aggregate.worker", "receiptflow.processors.profiles.store", False),
        ("receiptflow.processors.router.step", "receiptflow.processors.aggregate.windows", False),
        ("receiptflow.processors.profiles.agent", "receiptflow.processors.aggregate.marker", False),
        ("receiptflow.sinks.runner", "receiptflow.processors.aggregate.marker", False),
        ("receiptflow.jobs.subject", "receiptflow.processors.aggregate.worker", False),
        ("receiptflow.web.data", "receiptflow.processors.aggregate.worker", False),
        ("receiptflow.cli.supervise", "receiptflow.processors.aggregate.worker", True),
    ],
)
def test_the_rule(source: str, target: str, allowed: bool) -> None:
    assert _allowed(_layer(source), _layer(target)) is allowed
