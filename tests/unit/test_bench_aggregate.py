"""The aggregation benchmark's pure parts: its options, the aggregator's counters, the memory limit, the report."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import generate_latest

from receiptflow.metrics import Metrics

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(BENCHMARKS))
report = _load("aggregate_report")
e2e_report = _load("e2e_report")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_options_default_to_a_modest_run_and_national_windows() -> None:
    options = report.run_options(_parse())
    assert _parse().receipts == 20_000
    assert options == {"days": 3, "grace": None, "idle": 2, "window_sizes": (50_000, 200_000), "window_stores": 400}
    given = report.run_options(_parse("--days", "2", "--grace-seconds", "0", "--window-sizes"))
    assert (given["days"], given["grace"], given["window_sizes"]) == (2, 0, ())


@pytest.mark.parametrize("argv", [("--receipts", "0"), ("--window-sizes", "100", "-5"), ("--grace-seconds", "-1")])
def test_counts_that_cannot_be_are_refused(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2
    assert "must" in capsys.readouterr().err


def test_memory_quantities_are_read_as_kubernetes_writes_them() -> None:
    assert report.quantity_bytes("1536Mi") == 1536 * 2**20
    assert report.quantity_bytes("2Gi") == 2 * 2**30
    assert report.quantity_bytes("2G") == 2_000_000_000
    assert report.quantity_bytes("1048576") == 2**20
    with pytest.raises(ValueError, match="not a memory quantity"):
        report.quantity_bytes("lots")


def test_the_limit_is_the_statefulsets_container_limit(tmp_path: Path) -> None:
    manifest = tmp_path / "aggregate.yaml"
    manifest.write_text(
        "kind: Service\nmetadata: {name: x}\n---\nkind: StatefulSet\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: aggregate\n          resources:\n"
        "            requests: {memory: 512Mi}\n            limits: {memory: 768Mi}\n"
    )
    assert report.memory_limit(manifest) == 768 * 2**20
    manifest.write_text("kind: StatefulSet\nspec: {template: {spec: {containers: [{name: a}]}}}\n")
    assert report.memory_limit(manifest) is None
    # The shipped manifest has one, which the benchmark reads.
    assert report.memory_limit(BENCHMARKS.parent / "deploy" / "k8s" / "aggregate.yaml") is not None


def test_the_counters_are_summed_over_chains_and_families_from_the_exporter() -> None:
    metrics = Metrics(roles=("aggregate",))
    metrics.consumed_total.labels("purchases.baskets").inc(120)
    metrics.windows_closed_total.labels("PRISMA").inc(2)
    metrics.windows_closed_total.labels("SIWA").inc()
    metrics.cells_published_total.labels("chain_day").inc(3)
    metrics.cells_published_total.labels("store_sku").inc(40)
    metrics.late_baskets_total.labels("SIWA").inc(4)
    samples = e2e_report.samples(generate_latest(metrics.registry).decode())
    assert report.aggregate_counts(samples) == {
        "read": 120,
        "windows_closed": 3,
        "cells_published": 43,
        "late_baskets": 4,
    }


def _result(**changes: Any) -> dict[str, Any]:
    phase = {
        "read_seconds": 3.0,
        "windows_closed": 3,
        "cells_published": 9_000,
        "late_baskets": 0,
        "cpu_seconds": 6.0,
        "peak_rss_bytes": 200 * 2**20,
    }
    r: dict[str, Any] = {
        "date": "2026-12-08T01:00:00+00:00",
        "how": "on its own embedded broker",
        "cores": 2,
        "receipts": 20_000,
        "days": 3,
        "partitions": 6,
        "k": 10,
        "grace_seconds": 259_200,
        "idle_close_seconds": 2,
        "baskets": 18_000,
        "windows": 3,
        "window_sizes": report.window_sizes([100, 400, 900]),
        "expected_cells": 9_000,
        "largest_window": {"window": "K_MARKET/2026-12-02", "baskets": 900, "cells": 400, "release_seconds": 0.25},
        "router_alone": {"seconds": 2.0, "receipts_per_s": 10_000.0},
        "aggregator_alone": {**phase, "seconds": 8.0},
        "together": {
            **phase,
            "seconds": 10.0,
            "router_seconds": 2.5,
            "router_cpu_seconds": 2.0,
            "base_rss_bytes": 100 * 2**20,
        },
        "release_alone": [
            {
                "receipts": 50_000,
                "stores": 400,
                "baskets": 50_000,
                "cells": 38_000,
                "seconds": 5.0,
                "cpu_seconds": 4.5,
                "held_bytes": 250 * 2**20,
                "release_peak_bytes": 250 * 2**20,
                "peak_rss_bytes": 600 * 2**20,
            }
        ],
        "catalogue_skus": 77,
        "memory_limit_bytes": 1_100 * 2**20,
    }
    r.update(changes)
    return r


def test_each_path_stands_beside_the_same_runs_router() -> None:
    rows = report.rows(_result())
    assert rows[0] == ("router alone (same-run baseline)", "10,000", "-", "2.0", "1.00x", "-")
    assert rows[1] == ("aggregator alone, over the router's baskets", "2,500", "2,250", "8.0", "0.25x", "200")
    assert rows[2][1:5] == ("2,000", "1,800", "10.0", "0.20x")
    assert rows[3][0].startswith("at once, the router's part") and rows[3][1:5] == ("8,000", "-", "2.5", "0.80x")
    assert len(report.rows(_result(together={**_result()["together"], "router_seconds": None}))) == 3


def test_the_section_states_the_scale_and_what_one_aggregator_holds() -> None:
    text = report.markdown(_result())
    assert text.startswith("## The router with the aggregator\n\nMeasured 2026-12-08 by")
    assert "20,000 receipts over 3 past local days (18,000 baskets" in text
    assert "3 windows (chain and local date) of 100 to 900 baskets (median 400)" in text
    assert "| router alone (same-run baseline) | 10,000 | - | 2.0 | 1.00x | - |" in text
    assert "| 50,000 (400) | 38,000 | 5.0 (4.5) | 250 | 250 | 600 |" in text
    # 1,000 MiB above the base, and 500 MiB for 50,000 baskets at release: 100,000 baskets.
    assert report.capacity(_result()) == 100_000
    assert "one aggregator releases a chain-day of about 100,000 baskets" in text
    # 5,000,000 bytes more hold 476 baskets more; the text says it to the thousand.
    more = _result(memory_limit_bytes=1_100 * 2**20 + 5_000_000)
    assert report.capacity(more) == 100_476
    assert "chain-day of about 100,000 baskets" in report.markdown(more)
    assert "*not* as many" not in text


def test_cells_other_than_release_gives_are_marked() -> None:
    r = _result(aggregator_alone={**_result()["aggregator_alone"], "cells_published": 8_990, "late_baskets": 10})
    line = report.outcome(r["aggregator_alone"], r)
    assert "8,990 cells published (*not* as many as release() gives" in line and "10 late baskets" in line


def test_without_release_runs_or_a_limit_no_capacity_is_claimed() -> None:
    assert report.capacity(_result(release_alone=[])) is None
    assert report.capacity(_result(memory_limit_bytes=None)) is None
    text = report.markdown(_result(release_alone=[]))
    assert "release() alone" not in text and "chain-day of about" not in text
    assert report.window_sizes([]) == {"windows": 0, "min": 0, "median": 0, "max": 0}
