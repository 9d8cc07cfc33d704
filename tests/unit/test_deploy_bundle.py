"""Static checks of the deploy bundle (deploy/Dockerfile, deploy/compose.yaml, deploy/k8s/, deploy/grafana/).

No container engine and no cluster are needed: every YAML file parses; the Kubernetes manifests
validate against the Kubernetes JSON schemas that the ``kubernetes-validate`` package ships (offline,
strict: an unknown field fails) and, when a ``kustomize`` binary is at hand, the Kustomize build
validates too; every ``RECEIPTFLOW_*`` variable the bundle sets is a real setting and each workload
sets the settings its command needs; the ports and paths of probes, health checks and scrape
targets are those the code serves; every ``receiptflow ...`` command exists in the CLI (asked
through ``python -m receiptflow ... --help`` in a subprocess, so how the CLI is built inside does
not matter); every metric in the Grafana dashboard's PromQL is one the code defines.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from receiptflow import health
from receiptflow.config import VARIABLES, Settings
from receiptflow.metrics import Metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
GRAFANA = DEPLOY / "grafana"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Kubernetes versions whose schemas the manifests must satisfy: an old supported one and the newest shipped.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Files of the bundle whose every RECEIPTFLOW_ name must be a setting (deploy/setup-system.sh reads
# RECEIPTFLOW_NO_SYSTEM_INSTALL, a switch of the setup script, not a setting).
BUNDLE_TEXT_FILES = [
    DOCKERFILE,
    COMPOSE,
    DEPLOY / "env.example",
    DEPLOY / "compose" / "prometheus.yml",
    *sorted(K8S.glob("*.yaml")),
    *sorted(GRAFANA.rglob("*.yaml")),
    *sorted(GRAFANA.rglob("*.json")),
    ROOT / "docs" / "deploy.md",
]
SECRET_SETTINGS = {
    name
    for name, info in ((v.key, v.info) for v in VARIABLES.values())
    if info.annotation is not None and SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
}

# What each command needs set in its environment beyond the defaults, on a production deployment.
# (The defaults point at 127.0.0.1 and the embedded stack; production refuses generated secrets.)
KAFKA_LOGIN = {"kafka_security_protocol", "kafka_sasl_mechanism"}
NEEDS: dict[tuple[str, ...], set[str]] = {
    ("topics", "create"): {
        "bootstrap_servers",
        "topic_partitions",
        "topic_replication_factor",
        "kafka_admin_password",
        *KAFKA_LOGIN,
    },
    # The dead-letter writers seal their letters under the cards' data keys (Redis, role dlq-vault).
    ("process", "--role", "router"): {
        "bootstrap_servers",
        "processor_instance",
        "analytics_key",
        "redis_url",
        "redis_dlq_vault_password",
        "erasure_salt",
        "kafka_router_password",
        *KAFKA_LOGIN,
    },
    ("process", "--role", "profiles"): {
        "bootstrap_servers",
        "redis_url",
        "redis_writer_password",
        "redis_dlq_vault_password",
        "erasure_salt",
        "marketing_key",  # the marketing projections' names
        "kafka_profiles_password",
        *KAFKA_LOGIN,
    },
    ("sink", "run"): {
        "bootstrap_servers",
        "warehouse_url",
        "warehouse_password",
        "erasure_salt",
        "redis_url",
        "redis_dlq_vault_password",
        "kafka_sink_password",
        *KAFKA_LOGIN,
    },
    # The owner's one-shot: migrations and the workers' logins (no Kafka, no erasure salt).
    ("warehouse", "setup"): {
        "warehouse_url",
        "warehouse_password",
        "warehouse_sink_password",
        "warehouse_support_password",
    },
    # Kafka only: the baskets arrive pseudonymised (no analytics key), the cells go to Kafka (no database).
    ("aggregate", "run"): {"bootstrap_servers", "analytics_instance", "kafka_aggregator_password", *KAFKA_LOGIN},
    # Simulated registers: checkouts as the registers, the consent changes given at the till as a consent writer.
    ("simulate",): {"bootstrap_servers", "kafka_registers_password", "kafka_consent_writer_password", *KAFKA_LOGIN},
}
# The settings that name a worker stably (transactional ids, static group membership).
STABLE_NAMES = ("RECEIPTFLOW_PROCESSOR_INSTANCE", "RECEIPTFLOW_SINK_INSTANCE", "RECEIPTFLOW_ANALYTICS_INSTANCE")
LONG_RUNNING = (("process",), ("sink", "run"), ("aggregate", "run"), ("simulate",))
# The exporter's port per command, as an offset from RECEIPTFLOW_METRICS_PORT (src/receiptflow/cli).
PORT_OFFSETS = {("process",): 0, ("sink", "run"): 1, ("simulate",): 2, ("aggregate", "run"): 3}
METRICS_PATH = "/metrics"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


# --- reading the bundle ------------------------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def k8s_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(load_all(K8S / name))
    return docs


def env_name(setting: str) -> str:
    return f"RECEIPTFLOW_{setting.upper()}"


def setting_name(variable: str) -> str:
    return variable.removeprefix("RECEIPTFLOW_").lower()


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final, default image (line continuations joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, a stage's own only (``FROM x AS name``; the unnamed last is ``""``)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instr, rest in dockerfile_instructions():
        if instr == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            current = out.setdefault(name, [])
            current.append((instr, rest))
        else:
            current.append((instr, rest))
    return out


def image_env() -> dict[str, str]:
    """The ENV of the default image: the runtime stage (the unnamed last stage is FROM runtime)."""
    env: dict[str, str] = {}
    for instr, rest in stages()["runtime"]:
        if instr == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


@dataclass
class Workload:
    """One receiptflow process as the bundle runs it."""

    where: str
    argv: list[str]
    env: dict[str, str]  # value, or "<secret:...>" for a value that comes from a secret store
    metrics_ports: set[int] = field(default_factory=set)  # ports probed, health-checked or scraped
    metrics_paths: set[str] = field(default_factory=set)

    def runs(self, prefix: tuple[str, ...]) -> bool:
        return tuple(self.argv[: len(prefix)]) == prefix


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def compose_receiptflow_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if (svc.get("build") or {}).get("dockerfile") == "deploy/Dockerfile"
    }


def compose_workloads() -> list[Workload]:
    out = []
    for name, svc in compose_receiptflow_services().items():
        env = dict(image_env())
        for key, raw in (svc.get("environment") or {}).items():
            value = str(raw)
            env[key] = f"<secret:{value}>" if value.startswith("${") else value
        w = Workload(f"compose service {name}", [str(a) for a in svc["command"]], env)
        test = (svc.get("healthcheck") or {}).get("test") or []
        for port, path in re.findall(r"https?://[\w.-]+:(\d+)(/[\w/-]*)", " ".join(test)):
            w.metrics_ports.add(int(port))
            w.metrics_paths.add(path)
        out.append(w)
    return out


def k8s_workloads() -> list[Workload]:
    resources = k8s_resources()
    config_maps = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    out = []
    for r in resources:
        if r["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = r["spec"]["template"]
        for c in pod["spec"]["containers"]:
            env = dict(image_env())
            for source in c.get("envFrom", []):
                env.update(config_maps[source["configMapRef"]["name"]])
            for var in c.get("env", []):
                if "value" in var:
                    env[var["name"]] = str(var["value"])
                elif "secretKeyRef" in var["valueFrom"]:
                    env[var["name"]] = f"<secret:{var['valueFrom']['secretKeyRef']['key']}>"
                else:
                    env[var["name"]] = f"<field:{var['valueFrom']['fieldRef']['fieldPath']}>"
            w = Workload(f"{r['kind']} {r['metadata']['name']}", [str(a) for a in c["args"]], env)
            named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(probe_kind)
                if probe and "httpGet" in probe:
                    port = probe["httpGet"]["port"]
                    w.metrics_ports.add(named[port] if isinstance(port, str) else int(port))
                    w.metrics_paths.add(probe["httpGet"]["path"])
            annotations = pod["metadata"].get("annotations", {})
            if "prometheus.io/port" in annotations:
                w.metrics_ports.add(int(annotations["prometheus.io/port"]))
                w.metrics_paths.add(annotations.get("prometheus.io/path", "/metrics"))
            w.metrics_ports.update(named.values())
            out.append(w)
    return out


def all_workloads() -> list[Workload]:
    return compose_workloads() + k8s_workloads()


def served_metrics_port(w: Workload) -> int | None:
    """The port the code serves /metrics on for this workload (cli: process on the port, the sink on
    port + 1, the simulated registers on port + 2, the aggregator on port + 3)."""
    if "--metrics-port" in w.argv:
        return int(w.argv[w.argv.index("--metrics-port") + 1])
    raw = w.env.get("RECEIPTFLOW_METRICS_PORT")
    port = int(raw) if raw is not None else int(VARIABLES["RECEIPTFLOW_METRICS_PORT"].info.default)
    if port == 0:
        return None
    offsets = [offset for prefix, offset in PORT_OFFSETS.items() if w.runs(prefix)]
    return port + offsets[0] if offsets else None


def served_status(path: str) -> int:
    """The status the code's exporter answers ``path`` with (its WSGI app, called directly)."""
    answer: list[int] = []
    app = health.application(Metrics(CollectorRegistry()), health.Readiness("probe"))
    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "wsgi.input": io.BytesIO(),
        "SERVER_NAME": "x",
        "SERVER_PORT": "1",
    }
    list(app(environ, lambda status, headers, *_: answer.append(int(status.split()[0]))))
    return answer[0]


# --- the CLI, asked in a subprocess ------------------------------------------------------------------
@cache
def cli_help(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def assert_cli_accepts(argv: list[str], where: str) -> None:
    """``receiptflow ARGV`` is a real command line: argparse validates every positional and choice up to
    ``--help``, and every option named is in that subcommand's help."""
    assert argv, f"{where}: no command"
    command = argv[0]
    sub = cli_help(command)
    assert sub.returncode == 0, f"{where}: `receiptflow {command}` is not a command: {sub.stderr.strip()}"
    for arg in argv:
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", sub.stdout), (
                f"{where}: `receiptflow {command}` has no option {option}"
            )
    full = cli_help(*argv)
    assert full.returncode == 0, f"{where}: `receiptflow {' '.join(argv)}` is refused: {full.stderr.strip()}"


# --- metrics ---------------------------------------------------------------------------------------
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series_names() -> set[str]:
    """The project's series and those of the process and platform collectors every exporter adds."""
    names = set()
    metrics = Metrics(CollectorRegistry())
    health.add_process_collectors(metrics)
    for family in metrics.registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def metric_names(node: Any) -> Iterator[str | None]:
    """Every metric name a PromQL expression selects (None for a selector without a name)."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node.name
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from metric_names(node.vector_selector)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from metric_names(arg)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from metric_names(node.expr)
        if node.param is not None:
            yield from metric_names(node.param)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from metric_names(node.lhs)
        yield from metric_names(node.rhs)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from metric_names(node.expr)
    elif not isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral):
        raise AssertionError(f"unexpected PromQL node {type(node).__name__}")


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']} ({target['refId']})", target["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """Grafana's interval variables replaced by a duration, so the expression is plain PromQL."""
    return re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", "5m", expr)


# === the tests ======================================================================================
@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_of_the_bundle_parses(path: Path) -> None:
    assert load_all(path), f"{path} is empty"


def test_every_manifest_file_is_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kubernetes_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    resources = k8s_resources()
    kinds = {r["kind"] for r in resources}
    assert {"StatefulSet", "Deployment", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    problems = []
    for r in resources:
        try:
            kubernetes_validate.validate(r, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{r['kind']} {r['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not problems, problems


def kustomize_command() -> list[str] | None:
    local = ROOT / ".venv" / "bin" / "kustomize"
    if local.is_file():
        return [str(local), "build"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_kustomize_builds_the_bundle_into_valid_manifests() -> None:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize binary: `make setup` builds one from the Go module proxy when Go is installed")
    built = subprocess.run([*command, str(K8S)], capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    resources = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert len(resources) == len(k8s_resources())
    for r in resources:
        kubernetes_validate.validate(r, K8S_VERSIONS[-1], strict=True)
        if r["kind"] != "Namespace":
            assert r["metadata"]["namespace"] == "receiptflow", r["metadata"]["name"]
        assert r["metadata"]["labels"]["app.kubernetes.io/part-of"] == "receiptflow"
        for c in r.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"].endswith("/receiptflow:0.1.0"), c["image"]


def test_every_receiptflow_variable_in_the_bundle_is_a_setting() -> None:
    known = set(VARIABLES)
    for path in BUNDLE_TEXT_FILES:
        assert path.is_file(), path
        used = set(re.findall(r"\bRECEIPTFLOW_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
        assert used <= known, f"{path.relative_to(ROOT)}: not settings: {sorted(used - known)}"
    for w in all_workloads():
        names = {k for k in w.env if k.startswith("RECEIPTFLOW_")}
        assert names <= known, f"{w.where}: not settings: {sorted(names - known)}"


def test_each_workload_sets_what_its_command_needs() -> None:
    for w in all_workloads():
        needs = [need for prefix, need in NEEDS.items() if w.runs(prefix)]
        assert needs, f"{w.where}: `receiptflow {' '.join(w.argv)}` has no entry in NEEDS"
        missing = {name for name in needs[0] if env_name(name) not in w.env}
        assert not missing, f"{w.where}: missing {sorted(env_name(n) for n in missing)}"
        # And no secret its command does not use (the aggregator no analytics key, no database password).
        secrets = {k for k, v in w.env.items() if v.startswith("<secret:")}
        extra = secrets - {env_name(name) for name in needs[0]}
        assert not extra, f"{w.where}: given secrets its command does not use: {sorted(extra)}"
        assert w.env.get("RECEIPTFLOW_DEPLOYMENT") == "production", f"{w.where}: not marked production"
        assert "127.0.0.1" not in w.env["RECEIPTFLOW_BOOTSTRAP_SERVERS"], w.where
        # The values are accepted by the settings model (secrets and pod fields stand in as placeholders).
        values = {
            setting_name(k): ("x" * 32 if v.startswith("<") else v)
            for k, v in w.env.items()
            if k.startswith("RECEIPTFLOW_")
        }
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    # The bundle runs every role at least once in compose and in Kubernetes.
    for where in ("compose", "StatefulSet", "Deployment"):
        assert [w for w in all_workloads() if w.where.startswith(where)], where


def test_secrets_come_from_the_secret_store_never_from_the_bundle() -> None:
    for w in all_workloads():
        for name in SECRET_SETTINGS:
            value = w.env.get(env_name(name))
            if value is not None:
                assert value.startswith("<secret:"), f"{w.where}: {env_name(name)} is written in the bundle"
    # Kubernetes: every secret key referenced exists in the Secret, whose values are placeholders.
    secret = next(r for r in k8s_resources() if r["kind"] == "Secret")
    for w in k8s_workloads():
        for value in w.env.values():
            if value.startswith("<secret:"):
                assert value[len("<secret:") : -1] in secret["stringData"], (w.where, value)
    assert all(v.startswith("REPLACE-ME") for v in secret["stringData"].values())
    for key in secret["stringData"]:
        assert setting_name(key) in SECRET_SETTINGS, key
    # Compose: every ${VAR} has a line in env.example, and the real env file is ignored by git.
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text(encoding="utf-8")))
    assert used and used <= defined, sorted(used - defined)
    assert all("replace-me" in line for line in example.splitlines() if re.match(r"^[A-Z]", line))
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "deploy/.env must be ignored by git"


def test_stable_worker_names_come_from_the_pod_name_of_a_statefulset() -> None:
    for r in k8s_resources():
        if r["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in r["spec"]["template"]["spec"]["containers"]:
            env = {v["name"]: v for v in c.get("env", [])}
            for identity in STABLE_NAMES:
                if identity in env:
                    assert r["kind"] == "StatefulSet", f"{r['metadata']['name']}: {identity} needs a stable pod name"
                    assert env[identity]["value"] == "$(POD_NAME)"
                    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                    # $(VAR) is expanded only from variables defined before it.
                    names = [v["name"] for v in c["env"]]
                    assert names.index("POD_NAME") < names.index(identity)
            if "router" in c["args"]:
                assert "RECEIPTFLOW_PROCESSOR_INSTANCE" in env, "every router worker needs its own instance name"
            if c["args"][:2] == ["aggregate", "run"]:
                assert "RECEIPTFLOW_ANALYTICS_INSTANCE" in env, "every aggregator needs its own instance name"


def runs_aggregator(w: Workload) -> bool:
    """Whether the workload runs an analytics aggregator: `aggregate run`, or `process` with the role all
    (its default), which runs one beside the router and the profile agent."""
    if w.runs(("aggregate", "run")):
        return True
    if not w.runs(("process",)):
        return False
    role = w.argv[w.argv.index("--role") + 1] if "--role" in w.argv else "all"
    return role == "all"


def test_each_bundle_runs_the_aggregator_in_one_workload_of_its_own() -> None:
    # A router workload with --role all would run one more aggregator per worker, beside the aggregator's own.
    for where, workloads in (("compose", compose_workloads()), ("kubernetes", k8s_workloads())):
        aggregators = [w.where for w in workloads if runs_aggregator(w)]
        assert len(aggregators) == 1, f"{where}: the aggregator runs in {aggregators}"
        assert [w.argv[:2] for w in workloads if runs_aggregator(w)] == [["aggregate", "run"]], where
        routers = [w for w in workloads if w.runs(("process",))]
        assert routers and all("--role" in w.argv for w in routers), f"{where}: a process without --role runs all"
    # In Kubernetes it is a StatefulSet, disrupted one pod at a time like the other workers.
    resources = k8s_resources()
    (aggregate,) = [r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"].endswith("aggregate")]
    name = aggregate["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    budgets = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    assert [b["spec"]["selector"]["matchLabels"] for b in budgets].count({"app.kubernetes.io/name": name}) == 1
    assert aggregate["spec"]["serviceName"] in {r["metadata"]["name"] for r in resources if r["kind"] == "Service"}


def test_probes_health_checks_and_scrape_targets_use_the_port_and_path_the_code_serves() -> None:
    for w in all_workloads():
        served = served_metrics_port(w)
        if not any(w.runs(p) for p in LONG_RUNNING):
            assert not w.metrics_ports, f"{w.where}: a one-shot command serves no metrics"
            continue
        assert served is not None, f"{w.where}: its exporter is off"
        assert w.env.get("RECEIPTFLOW_METRICS_ADDR") == "0.0.0.0", f"{w.where}: exporter bound to loopback only"
        assert w.metrics_ports == {served}, f"{w.where}: probes/targets on {w.metrics_ports}, code serves {served}"
        assert w.metrics_paths <= {METRICS_PATH, LIVENESS_PATH, READINESS_PATH}, f"{w.where}: {w.metrics_paths}"
    # The exporter answers those paths (/readyz with 503 until ready), and nothing else.
    assert served_status(METRICS_PATH) == 200 and served_status(LIVENESS_PATH) == 200
    assert served_status(READINESS_PATH) == 200  # a readiness without checks is ready
    assert served_status("/ready") == 404
    # Kubernetes: liveness on /healthz, readiness on /readyz; Services point at the metrics port.
    for r in k8s_resources():
        if r["kind"] == "Service":
            assert [p["targetPort"] for p in r["spec"]["ports"]] == ["metrics"]
        if r["kind"] in ("Deployment", "StatefulSet"):
            for c in r["spec"]["template"]["spec"]["containers"]:
                assert c["livenessProbe"]["httpGet"]["path"] == LIVENESS_PATH, r["metadata"]["name"]
                assert c["readinessProbe"]["httpGet"]["path"] == READINESS_PATH, r["metadata"]["name"]
                assert c["resources"]["requests"] and c["resources"]["limits"]
    # Compose: a receiptflow worker is healthy once it is ready.
    for w in compose_workloads():
        if w.runs(("process",)) or w.runs(("sink", "run")):
            assert w.metrics_paths == {READINESS_PATH}, f"{w.where}: health check on {w.metrics_paths}"
    # Compose's Prometheus scrapes each receiptflow service on the port that service serves.
    ports = {
        name: served_metrics_port(w)
        for name, w in zip(compose_receiptflow_services(), compose_workloads(), strict=True)
    }
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = set()
    for job in scrape["scrape_configs"]:
        assert job.get("metrics_path", METRICS_PATH) == METRICS_PATH
        assert job["job_name"].startswith("receiptflow-"), "the alert rules select job=~receiptflow-.*"
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert ports.get(host) == int(port), f"{target}: service {host} serves on {ports.get(host)}"
                targets.add(host)
    assert targets == {name for name, port in ports.items() if port is not None}
    # The image exposes every exporter port.
    exposed = {int(p) for instr, rest in stages()["runtime"] if instr == "EXPOSE" for p in rest.split()}
    default = int(VARIABLES["RECEIPTFLOW_METRICS_PORT"].info.default)
    assert {default + offset for offset in PORT_OFFSETS.values()} <= exposed
    # The aggregator's offset is the one its command says it uses.
    help_text = " ".join(cli_help("aggregate", "run").stdout.split())
    assert f"RECEIPTFLOW_METRICS_PORT + {PORT_OFFSETS['aggregate', 'run']};" in help_text


def test_compose_mounts_the_files_that_exist_and_runs_the_cluster_it_describes() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    kafka = [n for n, s in services.items() if "KAFKA_NODE_ID" in (s.get("environment") or {})]
    assert len(kafka) == 3
    voters = {services[n]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n in kafka}
    assert voters == {",".join(f"{i + 1}@{n}:9093" for i, n in enumerate(kafka))}
    assert {services[n]["environment"]["KAFKA_NODE_ID"] for n in kafka} == {"1", "2", "3"}
    for w in compose_workloads():
        servers = w.env["RECEIPTFLOW_BOOTSTRAP_SERVERS"].split(",")
        assert servers == [f"{n}:9092" for n in kafka], w.where
    # Prometheus loads the alert rules from where compose mounts them.
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    mounts = {v.split(":")[1] for v in services["prometheus"]["volumes"] if v.startswith(".")}
    assert set(scrape["rule_files"]) <= mounts
    # Redis loads the ACL file that set-passwords.sh renders from deploy/redis/users.acl.
    assert "--aclfile" in services["redis"]["command"]
    assert "set-passwords.sh" in " ".join(services["redis-acl"]["entrypoint"])
    # Workers start after the topics exist (the warehouse's setup job needs no Kafka: it runs beside them).
    for name, svc in compose_receiptflow_services().items():
        if name not in ("topics", "warehouse-setup"):
            assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully", name


def test_the_image_runs_the_console_script_as_a_non_root_user() -> None:
    runtime = stages()["runtime"]
    entrypoint = [json.loads(rest) for instr, rest in runtime if instr == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entrypoint == [["receiptflow"]] and "receiptflow" in scripts
    users = [rest for instr, rest in runtime if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    base = next(rest for instr, rest in runtime if instr == "FROM")
    assert "PYTHON_IMAGE" in base and re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE.read_text())
    install = " ".join(rest for instr, rest in runtime if instr == "RUN")
    assert "-c /tmp/constraints.txt" in install
    # The default target is the slim runtime; only the `embedded` stage installs a JRE.
    assert list(stages())[-1] == "" and stages()[""][0] == ("FROM", "runtime")
    for name, instructions in stages().items():
        has_jre = any("jre" in rest for instr, rest in instructions if instr == "RUN")
        assert has_jre == (name == "embedded"), name
    cmd = [json.loads(rest) for instr, rest in runtime if instr == "CMD"]
    assert len(cmd) == 1
    assert cli_help().returncode == 0


def test_every_receiptflow_command_in_the_bundle_exists_in_the_cli() -> None:
    commands = [(w.where, w.argv) for w in all_workloads()]
    embedded = [rest for instr, rest in stages()["embedded"] if instr == "RUN" and "receiptflow " in rest]
    for rest in embedded:
        argv = rest.split("receiptflow ", 1)[1].split("&&")[0].split()
        commands.append(("Dockerfile embedded stage", argv))
    # Commands written out in the guide and in comments of the bundle.
    for path in [*BUNDLE_TEXT_FILES, DEPLOY / "Dockerfile"]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"`receiptflow ([a-z][^`|<>]*)`", text):
            argv = [a for a in match.group(1).split() if a not in ("...", "…")]
            if argv and not any(ch in " ".join(argv) for ch in "[]{}$"):
                commands.append((f"{path.name}: `{match.group(0)}`", argv))
    assert len(commands) > 8
    for where, argv in commands:
        assert_cli_accepts(argv, where)


def test_the_dashboard_queries_only_metrics_the_code_defines() -> None:
    exprs = dashboard_exprs()
    assert exprs
    exported = exported_series_names()
    used = set()
    for where, expr in exprs:
        tree = promql_parser.parse(grafana_to_promql(expr))
        names = list(metric_names(tree))
        assert names and None not in names, f"{where}: every selector names its metric: {expr}"
        unknown = {n for n in names if n not in exported}
        assert not unknown, f"{where}: not defined in receiptflow.metrics: {sorted(unknown)}"
        used.update(n for n in names if n)
    # What the dashboard is for: throughput per stage, dead letters, batch times, lag, transactions,
    # profile updates, warehouse rows and the aggregator's windows.
    for family in (
        "receiptflow_consumed_total",
        "receiptflow_routed_total",
        "receiptflow_dead_letters_total",
        "receiptflow_batch_seconds_bucket",
        "receiptflow_consumer_lag_records",
        "receiptflow_store_checkouts_total",
        "receiptflow_outbox_depth_records",
        "process_resident_memory_bytes",
        "receiptflow_transactions_total",
        "receiptflow_profile_updates_total",
        "receiptflow_warehouse_rows_total",
        "receiptflow_analytics_windows_closed_total",
        "receiptflow_analytics_late_baskets_total",
        "receiptflow_analytics_open_baskets_records",
    ):
        assert family in used, family


def test_grafana_provisioning_matches_the_dashboard_and_compose() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    prometheus = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "receiptflow.yaml").read_text())
    paths = {p["options"]["path"] for p in providers["providers"]}
    grafana_mounts = dict(v.rsplit(":", 2)[:2] for v in compose()["services"]["grafana"]["volumes"])
    assert grafana_mounts["./grafana/dashboards"] in paths
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] in uids, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, panel["title"]


def _warehouse_user(w: Workload) -> str | None:
    url = w.env.get("RECEIPTFLOW_WAREHOUSE_URL")
    return None if url is None else url.split("//", 1)[1].split("@", 1)[0]


def test_workers_use_their_postgresql_login_and_only_the_setup_job_the_owner_s() -> None:
    # (What the login may do, against a real PostgreSQL: tests/integration/test_warehouse_logins.py.)
    owner = "receiptflow"  # POSTGRES_USER of compose: the database's owner
    assert compose()["services"]["postgres"]["environment"]["POSTGRES_USER"] == owner
    sink_user = Settings(_env_file=None).warehouse.sink_user  # type: ignore[call-arg]
    for where, workloads in (("compose", compose_workloads()), ("kubernetes", k8s_workloads())):
        setups = [w for w in workloads if w.runs(("warehouse", "setup"))]
        sinks = [w for w in workloads if w.runs(("sink",))]
        assert len(setups) == 1 and sinks, where
        assert _warehouse_user(setups[0]) == owner, where
        for w in workloads:
            if w in setups:
                continue
            assert _warehouse_user(w) in (None, sink_user), f"{w.where} connects as {_warehouse_user(w)}"
            # No worker is given the owner's password (the secret the setup job reads as its password).
            owner_secret = setups[0].env["RECEIPTFLOW_WAREHOUSE_PASSWORD"]
            assert owner_secret not in w.env.values(), f"{w.where} holds the owner's password"
            assert "RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD" not in w.env, w.where
        for w in sinks:
            assert _warehouse_user(w) == sink_user, w.where
            assert w.env["RECEIPTFLOW_WAREHOUSE_PASSWORD"] == setups[0].env["RECEIPTFLOW_WAREHOUSE_SINK_PASSWORD"]
    # Compose starts the sink only once the setup has made its login.
    sink = compose()["services"]["sink"]["depends_on"]
    assert sink["warehouse-setup"] == {"condition": "service_completed_successfully"}
    # No shared setting names the owner for every pod.
    config = next(r for r in k8s_resources() if r["kind"] == "ConfigMap")["data"]
    assert "RECEIPTFLOW_WAREHOUSE_URL" not in config
