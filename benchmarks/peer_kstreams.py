"""The Kafka Streams peer of the exactly-once router: build its jar, create its topics, start it.

``benchmarks/kstreams/`` is a Maven project: a Kafka Streams topology with
``processing.guarantee=exactly_once_v2`` doing the router's job (decode, validate, policy
truncation, consent, dedup by receipt id, the three purchase topics and the dead letters; see
``RouteProcessor.java``). This module is what the benchmark scripts use:

* :func:`build` runs Maven once and returns the runnable jar; it builds again only when the
  sources changed (a hash of them is kept beside the jar), offline first, so a machine whose Maven
  cache holds the dependencies needs no network;
* :class:`PeerTopics` names its inputs and outputs; :func:`create_output_topics` creates outputs
  other than the router's own (the peer and the router may read the same input);
* :func:`start` runs it as a child process with the install's analytics key in its environment.

Usage on its own: ``python benchmarks/peer_kstreams.py`` builds the jar and prints its path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from receiptflow.config import Settings
from receiptflow.errors import ConfigError
from receiptflow.topics import TopicNames

PROJECT = Path(__file__).resolve().parent / "kstreams"
JAR = PROJECT / "target" / "receiptflow-kstreams-peer.jar"
_STAMP = PROJECT / "target" / ".sources.sha256"
# RocksDB keeps its block cache off-heap; the heap holds the stream thread's buffers only.
JVM_OPTIONS = ("-Xms256m", "-Xmx768m")


def sources_hash() -> str:
    """SHA-256 over the pom and every Java source (their paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted([PROJECT / "pom.xml", *(PROJECT / "src").rglob("*.java")]):
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build(quiet: bool = True) -> Path:
    """The runnable jar, built by Maven if it is missing or older than the sources."""
    wanted = sources_hash()
    if JAR.exists() and _STAMP.exists() and _STAMP.read_text().strip() == wanted:
        return JAR
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("Maven (mvn) is not installed: install it (apt-get install maven) to build the peer")
    base = [mvn, "-B", "-f", str(PROJECT / "pom.xml")] + (["-q"] if quiet else [])
    # Offline first: the dependencies are usually in the local Maven cache already.
    done = subprocess.run([*base, "-o", "package"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        done = subprocess.run([*base, "package"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not JAR.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise ConfigError("the Kafka Streams peer did not build: " + " | ".join(tail))
    _STAMP.write_text(wanted + "\n")
    return JAR


@dataclass(frozen=True, slots=True)
class PeerTopics:
    """The topics a peer reads (checkouts, consents) and writes (the purchases and dead letters)."""

    checkouts: str
    consents: str
    customer: str
    marketing: str
    analytics: str
    dlq: str

    @classmethod
    def of(cls, names: TopicNames) -> PeerTopics:
        """The router's own topics: for a peer that runs on topics of its own prefix."""
        return cls(
            names.checkouts,
            names.consents,
            names.purchases_customer,
            names.purchases_marketing,
            names.analytics_baskets,
            names.checkouts_dlq,
        )

    @classmethod
    def beside(cls, names: TopicNames, tag: str) -> PeerTopics:
        """The router's inputs, outputs of its own (``<prefix><tag>.purchases.customer`` ...)."""
        out = TopicNames(f"{names.checkouts.removesuffix('checkouts')}{tag}.")
        return cls(
            names.checkouts,
            names.consents,
            out.purchases_customer,
            out.purchases_marketing,
            out.analytics_baskets,
            out.checkouts_dlq,
        )

    def outputs(self) -> dict[str, str]:
        """Output topic by what it holds: customer, marketing, analytics, dlq."""
        return {"customer": self.customer, "marketing": self.marketing, "analytics": self.analytics, "dlq": self.dlq}


def create_output_topics(settings: Settings, topics: PeerTopics, timeout: float = 30.0) -> None:
    """Create the peer's output topics (the router's partition counts; existing ones are left alone)."""
    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(t, num_partitions=1 if t == topics.dlq else settings.kafka.topic_partitions, replication_factor=-1)
        for t in topics.outputs().values()
        if t not in existing
    ]
    for future in admin.create_topics(wanted, request_timeout=timeout).values() if wanted else ():
        future.result(timeout)


def policy_path(settings: Settings) -> Path:
    """The policy file the router loads: the configured one, else the one shipped with the package."""
    if settings.privacy.policy_file is not None:
        return settings.privacy.policy_file.resolve()
    return Path(str(resources.files("receiptflow").joinpath("data/policy.toml")))


def schemas_dir() -> Path:
    """The repo's schemas (``ids.json`` and the ``.avsc`` files), as the router's codec reads them."""
    return Path(str(resources.files("receiptflow.schemas")))


def start(
    settings: Settings,
    topics: PeerTopics,
    app_id: str,
    analytics_key: bytes,
    policy: Path | None = None,
    *,
    threads: int = 1,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the peer (built first if needed) as a child process; ``terminate()`` stops it cleanly.

    ``app_id`` is its Kafka Streams application id (its consumer group and the prefix of its state
    topics); ``analytics_key`` the install's basket-pseudonym key (:func:`receiptflow.secrets.analytics_key`),
    passed in the environment; ``policy`` the granularity policy (default: the router's,
    :func:`policy_path`). Its log goes to ``log`` (default: discarded).
    """
    jar = build()
    java = shutil.which("java")
    if java is None:
        raise ConfigError("java is not installed: the Kafka Streams peer needs Java 17 or newer")
    state = settings.local.data_dir.resolve() / "kstreams" / app_id
    state.mkdir(parents=True, exist_ok=True)
    args = {
        "bootstrap": settings.kafka.bootstrap_servers,
        "app-id": app_id,
        "state-dir": str(state),
        "schemas": str(schemas_dir()),
        "policy": str(policy or policy_path(settings)),
        "checkouts": topics.checkouts,
        "consents": topics.consents,
        "customer": topics.customer,
        "marketing": topics.marketing,
        "analytics": topics.analytics,
        "dlq": topics.dlq,
        "processor": app_id,
        "threads": str(threads),
        "order-wait-ms": str(settings.router.order_wait_ms),
        "dedup-days": str(settings.router.dedup_days),
        "default-product-data": str(settings.privacy.default_product_data_marketing).lower(),
        "default-electronic": str(settings.privacy.default_electronic_marketing).lower(),
    }
    command = [java, *JVM_OPTIONS, "-jar", str(jar)]
    for name, value in args.items():
        command += [f"--{name}", value]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIPTFLOW_")}
    env["RECEIPTFLOW_ANALYTICS_KEY"] = analytics_key.decode()
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


if __name__ == "__main__":
    print(build(quiet="-v" not in sys.argv))
