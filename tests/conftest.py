"""Suite-wide pytest wiring: markers by folder and the closing line about the real servers used.

Everything under ``tests/unit`` is marked ``unit`` and everything under ``tests/integration`` is
marked ``integration`` (markers are registered in pyproject.toml and ``--strict-markers`` is on).
The integration fixtures record which broker, Redis and PostgreSQL they used in ``BACKENDS``; the
terminal summary prints how many integration tests ran against them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS: dict[str, str] = {}
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if (_HERE / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)
        elif (_HERE / "unit") in path.parents:
            item.add_marker(pytest.mark.unit)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "integration" in getattr(report, "keywords", {}) and getattr(report, "when", "call") in (
                "call",
                "setup",
            ):
                if outcome == "passed" and report.when != "call":
                    continue
                counts[outcome] += 1
    total = sum(counts.values())
    if not total:
        return
    against = ", ".join(f"{k} {v}" for k, v in BACKENDS.items()) or "no backend recorded"
    terminalreporter.write_sep("-", "integration backends")
    terminalreporter.write_line(
        f"integration: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
        f"{counts['error']} errors against {against}"
    )
