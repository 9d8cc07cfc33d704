"""The deploy bundle's Prometheus side on a real Prometheus: config and rules load, the alert rules
pass their promtool unit tests, and a server scrapes the project's exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from receiptflow.health import Readiness, serve
from receiptflow.metrics import Metrics
from receiptflow.stack.process import free_port

BUNDLE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _alert_names() -> set[str]:
    groups = yaml.safe_load((BUNDLE / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make setup` installs the Debian prometheus package")
    return path


def test_config_and_rules_are_valid_for_promtool() -> None:
    result = subprocess.run(
        [_tool("promtool"), "check", "config", str(BUNDLE / "prometheus.yml")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_alert_names())} rules found" in result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts.test.yml"], cwd=BUNDLE, check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Metrics]]:
    """A real Prometheus scraping a served Metrics registry every second, with the bundle's rules."""
    metrics = Metrics(CollectorRegistry())
    exporter = free_port()
    server = serve(metrics, Readiness("router"), exporter)
    assert server is not None
    shutil.copy(BUNDLE / "alerts.yml", tmp_path / "alerts.yml")
    config = (BUNDLE / "prometheus.yml").read_text(encoding="utf-8")
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "evaluation_interval: 15s", "evaluation_interval: 1s"
    )
    config = config.replace('"localhost:9108"', f'"127.0.0.1:{exporter}"')
    (tmp_path / "prometheus.yml").write_text(config, encoding="utf-8")
    web = free_port()
    proc = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{web}", metrics
    finally:
        proc.terminate()
        proc.wait(30)
        server.close()


def _api(base: str, path: str, **params: str) -> dict[str, object]:
    url = f"{base}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, object] = json.load(response)
    return body


def _eventually(check: object, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
        except OSError as exc:  # server still starting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"not reached in {timeout} s; last: {last!r}")


def test_prometheus_scrapes_the_exporter_and_loads_the_rules(prometheus: tuple[str, Metrics]) -> None:
    base, metrics = prometheus
    metrics.dead_letters_total.labels("totals_mismatch").inc(3)
    metrics.transactions_total.labels("committed").inc(7)

    def scraped() -> dict[str, float]:
        body = _api(base, "query", query='{__name__=~"receiptflow_(dead_letters|transactions)_total"}')
        result = body["data"]["result"]  # type: ignore[index]
        values = {}
        for series in result:
            labels = series["metric"]
            values[labels["__name__"] + "/" + labels.get("reason", labels.get("outcome", ""))] = float(
                series["value"][1]
            )
        return values

    values = _eventually(scraped)
    assert values == {
        "receiptflow_dead_letters_total/totals_mismatch": 3.0,
        "receiptflow_transactions_total/committed": 7.0,
    }
    up = _api(base, "query", query='up{job="receiptflow-processor"}')["data"]["result"]  # type: ignore[index]
    assert [float(s["value"][1]) for s in up] == [1.0]

    rules = _api(base, "rules")["data"]["groups"]  # type: ignore[index]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert names == _alert_names()
