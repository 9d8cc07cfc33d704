"""The deploy bundle and the docs stay in step with the code: alert rules name real metrics, every
setting is documented in the README."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from receiptflow.config import VARIABLES
from receiptflow.metrics import Metrics
from receiptflow.redis_auth import TEMPLATE_USERS, acl_template, render_acl

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


def test_every_alert_has_a_promtool_test_that_fires_it_and_one_where_it_stays_quiet() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8"))["tests"]
    fired, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts == fired, f"alerts no test fires: {sorted(alerts - fired)}"
    assert alerts == quiet, f"alerts without a quiet case: {sorted(alerts - quiet)}"
    # (promtool runs these tests: tests/integration/test_prometheus.py)


def test_prometheus_config_points_at_files_in_the_bundle() -> None:
    text = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    rule_files = re.findall(r"^rule_files:\n((?:\s+- .+\n)+)", text, flags=re.MULTILINE)
    assert rule_files
    for name in re.findall(r"- (\S+)", rule_files[0]):
        assert (PROMETHEUS / name).is_file(), name
    # The scrape targets are the exporters' default ports.
    defaults = VARIABLES["RECEIPTFLOW_METRICS_PORT"].info.default
    assert f"localhost:{defaults}" in text
    assert f"localhost:{defaults + 1}" in text
    assert f"localhost:{defaults + 2}" in text  # the simulated registers (producer metrics)
    assert f"localhost:{defaults + 3}" in text  # the analytics aggregator (aggregate run)


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in VARIABLES if f"`{name}`" not in readme]
    assert not missing, f"settings without a README row: {missing}"


def test_the_deploy_script_renders_the_acl_the_embedded_stack_loads() -> None:
    # Production renders users.acl with set-passwords.sh; the embedded stack with render_acl: the
    # same roles, switched on with the SHA-256 of the same passwords, so the tests of one hold for both.
    passwords = {
        "PROFILE_WRITER_PASSWORD": "w-" + "1" * 30,
        "MARKETING_READER_PASSWORD": "m-" + "2" * 30,
        "SUPPORT_PASSWORD": "s-" + "3" * 30,
        "ADMIN_PASSWORD": "a-" + "4" * 30,
        "WEB_SESSIONS_PASSWORD": "ws-" + "5" * 30,
        "DLQ_VAULT_PASSWORD": "d-" + "5" * 30,
        "CUSTOMER_READER_PASSWORD": "c-" + "5" * 30,
        "AUDITOR_PASSWORD": "u-" + "5" * 30,
    }
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **passwords}
    script = ROOT / "deploy" / "redis" / "set-passwords.sh"
    rendered = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=True)
    names = (
        "profile-writer",
        "marketing-reader",
        "support",
        "admin",
        "web-sessions",
        "dlq-vault",
        "customer-reader",
        "auditor",
    )
    users = dict(zip(names, passwords.values(), strict=True))
    expected = render_acl(acl_template(), {u: (u, hashlib.sha256(p.encode()).hexdigest()) for u, p in users.items()})
    assert rendered.stdout == expected
    assert not [p for p in passwords.values() if p in rendered.stdout]
    # Without passwords every role stays off, as committed.
    bare = subprocess.run(["sh", str(script)], env={"PATH": env["PATH"]}, capture_output=True, text=True, check=True)
    assert bare.stdout == acl_template()


def test_the_committed_acl_holds_no_password_and_switches_every_user_off() -> None:
    lines = (ROOT / "deploy" / "redis" / "users.acl").read_text(encoding="utf-8").splitlines()
    users = {line.split()[1]: line.split()[2:] for line in lines if line.strip()}
    assert set(users) == {"default", *TEMPLATE_USERS.values()}
    for rules in users.values():
        assert "off" in rules and "on" not in rules and "nopass" not in rules
        assert not [r for r in rules if r.startswith((">", "#"))], "a password or hash is committed"
    assert "-@all" in users["default"] and not [r for r in users["default"] if r.startswith(("+", "~", "%"))]
    # The marketing reader reads its projections only, the customer reader profile hashes only, both
    # with HGET* alone; the writer reads the erased markers (the scripts check them) but may only create
    # them, and may only add to the erased-cards list.
    assert [r for r in users["marketing-reader"] if "~" in r] == ["%R~rf:m:*"]
    assert [r for r in users["customer-reader"] if "~" in r] == ["%R~rf:{*}:p"]
    for reader in ("marketing-reader", "customer-reader"):
        granted = sorted(r for r in users[reader] if r.startswith("+"))
        assert granted == [
            "+@connection",
            "+cluster|slots",
            "+hexists",
            "+hget",
            "+hgetall",
            "+hlen",
            "+hmget",
            "+select",
        ]
    writer = users["profile-writer"]
    assert (
        "%R~rf:{*}:x" in writer and "~rf:*" not in writer and "~rf:{*}:*" not in writer[: writer.index("-@dangerous")]
    )
    assert "(~rf:{*}:x" in writer and "(~rf:erased" in writer
    # The web page's sessions: their own keys only, no script, no scan.
    sessions = users["web-sessions"]
    assert [r for r in sessions if "~" in r] == ["~rf:web:s:*", "~rf:web:c:*"]
    assert not [r for r in sessions if r.startswith("+@") and r != "+@connection"] and "+eval" not in sessions


def test_the_audit_streams_are_append_only_for_support_and_trimmed_by_the_auditor_only() -> None:
    # (On the real server: tests/integration/test_looks.py.)
    lines = (ROOT / "deploy" / "redis" / "users.acl").read_text(encoding="utf-8").splitlines()
    users = {line.split()[1]: line for line in lines if line.strip()}
    root, *selectors = users["support"].split(" (")
    # Support's own keys are the cards' keys and the erased-cards list: no pattern reaches rf:audit:*.
    assert [r for r in root.split() if "~" in r] == ["~rf:{*}:*", "~rf:erased", "~rf:m:*", "~rf:mg:*"]
    assert selectors == ["~rf:audit:* resetchannels -@all +xadd +xrange +xrevrange +xlen)"]
    auditor_root, *auditor_selectors = users["auditor"].split(" (")
    assert [r for r in auditor_root.split() if "~" in r] == ["%R~rf:audit:*"]
    assert "+@write" not in auditor_root and "+xadd" not in users["auditor"]
    assert auditor_selectors == ["~rf:audit:* resetchannels -@all +xtrim +hincrby)"]
    # No other role reaches the audit streams at all.
    for name, line in users.items():
        if name not in ("support", "auditor", "admin"):
            assert "rf:audit" not in line and "~rf:*" not in line and "~*" not in line, name
