"""The deploy bundle and the docs stay in step with the code: alert rules name real metrics, every
setting is documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from receiptflow.config import Settings
from receiptflow.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series_names() -> set[str]:
    """Every series name the project's metrics can expose (counter ``_total``, histogram parts...)."""
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def test_alert_rules_only_use_metrics_the_project_exports() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\breceiptflow_[a-z_]+", text))
    assert used, "the rules should watch receiptflow metrics"
    assert used <= exported_series_names(), f"not exported: {sorted(used - exported_series_names())}"


def test_prometheus_config_points_at_files_in_the_bundle() -> None:
    text = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    rule_files = re.findall(r"^rule_files:\n((?:\s+- .+\n)+)", text, flags=re.MULTILINE)
    assert rule_files
    for name in re.findall(r"- (\S+)", rule_files[0]):
        assert (PROMETHEUS / name).is_file(), name
    # The scrape targets are the exporters' default ports.
    defaults = Settings.model_fields["metrics_port"].default
    assert f"localhost:{defaults}" in text
    assert f"localhost:{defaults + 1}" in text


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`RECEIPTFLOW_{name.upper()}`" not in readme]
    assert not missing, f"settings without a README row: {missing}"
