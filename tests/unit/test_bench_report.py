"""The end-to-end benchmark's pure helpers: nearest-rank percentiles, the summary and the docs section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import generate_latest

from receiptflow.metrics import Metrics, observe_ages


def _report() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "e2e_report.py"
    spec = importlib.util.spec_from_file_location("e2e_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("e2e_report", module)
    spec.loader.exec_module(module)
    return module


report = _report()


def test_percentiles_are_nearest_rank_values() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert report.percentile(values, 50) == 50.0
    assert report.percentile(values, 95) == 95.0
    assert report.percentile(values, 99) == 99.0
    assert report.percentile(values, 100) == 100.0
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_percentile_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        report.percentile([], 50)


def test_summary_sorts_and_counts() -> None:
    s = report.summary([0.3, 0.1, 0.2, 5.0])
    assert s == {"count": 4, "mean": 1.4, "p50": 0.2, "p95": 5.0, "p99": 5.0, "max": 5.0}
    assert report.summary([]) == {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}


def test_section_is_replaced_in_place_or_appended(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Figures\n\n## Other\n\ntext\n")
    report.update_section(doc, "## End to end\n\nfirst\n")
    assert doc.read_text() == "# Figures\n\n## Other\n\ntext\n\n## End to end\n\nfirst\n"
    doc.write_text(doc.read_text() + "\n## Later\n\nkept\n")
    report.update_section(doc, "## End to end\n\nsecond\n")
    assert doc.read_text() == "# Figures\n\n## Other\n\ntext\n\n## End to end\n\nsecond\n\n## Later\n\nkept\n"


def test_peers_section_names_the_input_the_ignored_fields_and_the_table() -> None:
    peers = {
        "date": "2026-12-01T22:00:00+00:00",
        "how": "on its own embedded broker",
        "cores": 2,
        "input": {"receipts": 10_000, "lines": 80_000, "consent_changes": 200, "duplicates": 100, "dead_letters": 50},
        "ignored_fields": {"purchases.customer": ["processed_at"], "purchases.analytics": []},
        "paths": [
            {"path": "router (exactly-once)", "workers": 1, "receipts_per_s": 3000.0, "difference": None},
            {"path": "quixstreams (exactly-once)", "workers": 1, "receipts_per_s": 1500.0, "difference": None},
        ],
    }
    text = report.peers_section(peers)
    assert text.startswith("## The router beside its peers\n\nMeasured 2026-12-01 by `python benchmarks/peers.py`")
    assert "10,000 receipts (80,000 lines) with 200 consent changes, 100 repeated deliveries and 50 bad" in text
    assert "`purchases.customer`: processed_at; `purchases.analytics`: nothing" in text
    assert text.splitlines()[-1] == "| quixstreams (exactly-once) | 1,500 | 0.50x | yes |"


def test_visits_expected_count_carded_sales_only() -> None:
    # Receipts v2: a refund is no visit, so the profiles hold fewer visits than carded receipts.
    truth = {
        "receipts": 5,
        "anonymous": 1,
        "refunds": 1,
        "per_card": {"6001": {"visits": 2, "spend_cents": 900}, "6002": {"visits": 1, "spend_cents": 100}},
    }
    assert report.expected_from_truth(truth) == (5, 3)


def test_targets_are_ratios_of_the_same_run_and_a_miss_is_marked() -> None:
    run = {
        "date": "2026-12-01T23:00:00+00:00",
        "mode": "full",
        "latency": [
            {"offered_receipts_per_s": 500.0, "achieved_offered_per_s": 480.0, "profile_s": {"p99": 0.3}},
            {"offered_receipts_per_s": 2000.0, "achieved_offered_per_s": 900.0, "profile_s": {"p99": 0.1}},
        ],
        "redis_bytes_per_card": {"mean": 700.0},
        "peers": {
            "paths": [
                {"path": "router (exactly-once)", "workers": 1, "receipts_per_s": 2000.0},
                {"path": "quixstreams (exactly-once)", "workers": 1, "receipts_per_s": 1000.0},
                {"path": "Kafka Streams (exactly-once)", "workers": 1, "error": "did not start"},
                {"path": "raw consume→produce (bytes copied)", "workers": 1, "receipts_per_s": 30000.0},
            ]
        },
    }
    got = {t: (m, ok) for t, m, ok in report.targets(run)}
    assert got["router, one worker, ≥ 1/10 of raw consume→produce"] == ("1/15.0", False)
    assert got["router ahead of quixstreams per worker"] == ("2.00x", True)
    assert got["router ahead of Kafka Streams per worker"] == ("not measured", None)
    assert got["p99 checkout → profile ≤ 250 ms at 500/s"] == ("300 ms (480/s sold)", False)
    assert got["Redis ≤ 2 KB per active card, on average"] == ("700 bytes", True)
    section = report.targets_section(run)
    assert "| p99 checkout → profile ≤ 250 ms at 500/s | 300 ms (480/s sold) | *missed* |" in section
    assert "| router ahead of Kafka Streams per worker | not measured | - |" in section


def _exposition(ages_s: list[float], batches: list[tuple[int, float]], stage: str = "profiles") -> str:
    metrics = Metrics()
    now = 1_800_000_000.0
    observe_ages(metrics.checkout_to_output_seconds.labels(stage), now, [int((now - a) * 1000) for a in ages_s])
    for size, seconds in batches:
        metrics.batch_size.labels(stage).observe(size)
        metrics.batch_seconds.labels(stage).observe(seconds)
    return generate_latest(metrics.registry).decode()


def test_a_stages_breakdown_is_what_it_did_between_two_scrapes() -> None:
    before = report.samples(_exposition([0.04, 2.0], [(2, 0.5)]))
    # Between the scrapes: 4 more receipts at 80, 120, 300 and 900 ms, in two batches of 2.
    after = report.samples(_exposition([0.04, 2.0, 0.08, 0.12, 0.3, 0.9], [(2, 0.5), (2, 0.02), (2, 0.04)]))
    st = report.stage_breakdown(before, after, "profiles")
    assert st["batches"] == 2
    assert st["records"] == 4
    assert st["mean_batch_records"] == pytest.approx(2.0)
    assert st["mean_batch_s"] == pytest.approx(0.03)
    assert st["mean_age_s"] == pytest.approx((0.08 + 0.12 + 0.3 + 0.9) / 4, abs=0.002)
    assert st["within"] == {"0.1": 0.25, "0.25": 0.5, "0.5": 0.75, "1": 1.0}


def test_a_stage_that_did_nothing_has_no_shares_and_the_table_says_so() -> None:
    same = report.samples(_exposition([0.04], [(1, 0.01)], stage="router"))
    st = report.stage_breakdown(same, same, "router")
    assert st["records"] == 0 and st["mean_age_s"] is None
    assert set(st["within"].values()) == {None}
    table = report.stage_table({"stages": {"router": st}, "cpu_cores": {"kafka": 0.5, "router": 0.25}})
    row = next(line for line in table.splitlines() if line.startswith("| router"))
    assert row.count("| - ") >= 4
    assert "kafka 0.50, router 0.25; all together 0.75" in table
