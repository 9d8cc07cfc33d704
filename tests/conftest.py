"""Suite-wide pytest wiring: markers by folder, the hypothesis profile, the closing line about the servers used.

Everything under ``tests/unit`` is marked ``unit`` and everything under ``tests/integration`` is
marked ``integration`` (the markers are registered in pyproject.toml; ``--strict-markers`` is on), so
``pytest -m unit`` and ``pytest -m integration`` select by folder. The integration fixtures record in
``BACKENDS`` which Kafka, Redis and PostgreSQL they used; the terminal summary ends with one line
saying how many integration tests passed, failed or were skipped against which servers -- a skipped
integration test proves nothing, so the count is there to be looked at.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis's per-example deadline (200 ms) is a timing check: on a loaded two-core machine a
# correct example can take longer and fail the suite. Speed is the benchmarks' business, so the
# suite runs without it (tests that set their own settings keep them).
settings.register_profile("receiptflow", deadline=None)
settings.load_profile("receiptflow")

# Filled by tests/integration/conftest.py: component label -> "endpoint (what it is)".
BACKENDS: dict[str, str] = {}
_ORDER = ("Kafka", "Redis", "PostgreSQL")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if (_HERE / "integration") in path.parents:
            item.add_marker(pytest.mark.integration)
        elif (_HERE / "unit") in path.parents:
            item.add_marker(pytest.mark.unit)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist the fixtures fill BACKENDS in the workers: each hands its own to the controller,
    # which writes the summary line (without this it said no server was used).
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["receiptflow_backends"] = json.dumps(BACKENDS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist's hook on the controller when a worker ends: take the servers that worker used."""
    output = getattr(node, "workeroutput", {})
    for label, used in json.loads(output.get("receiptflow_backends", "{}")).items():
        # Each worker starts servers of its own: name them all.
        BACKENDS[label] = used if BACKENDS.get(label) in (None, used) else f"{BACKENDS[label]} and {used}"


def integration_counts(stats: dict[str, list[object]]) -> Counter[str]:
    """Outcomes of integration tests from the terminal reporter's stats (by its categories)."""
    counts: Counter[str] = Counter()
    for category in ("passed", "failed", "skipped", "error", "xfailed", "xpassed"):
        for report in stats.get(category, []):
            if isinstance(report, pytest.TestReport) and "integration" in report.keywords:
                counts[category] += 1
    return counts


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = integration_counts(terminalreporter.stats)
    if not sum(counts.values()):
        return
    line = f"integration: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    if counts["error"]:
        line += f", {counts['error']} errors"
    if counts["xfailed"] or counts["xpassed"]:
        line += f", {counts['xfailed']} xfailed, {counts['xpassed']} xpassed"
    labels = sorted(BACKENDS, key=lambda k: _ORDER.index(k) if k in _ORDER else len(_ORDER))
    used = ", ".join(f"{label} {BACKENDS[label]}" for label in labels)
    line += f" against {used}" if used else " (no server was started or given)"
    terminalreporter.write_sep("-", "integration backends")
    bad = counts["failed"] or counts["error"] or counts["skipped"]
    terminalreporter.write_line(line, red=bool(bad), green=not bad)
