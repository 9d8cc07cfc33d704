"""The embedded Apache Kafka broker: single-node KRaft (combined broker + controller) from Maven jars.

The jars are ``org.apache.kafka:kafka_2.13`` and its runtime dependencies, resolved once from Maven
Central by the pom in ``deploy/kafka/pom.xml`` (shipped in the package as ``data/kafka-pom.xml``)
into ``<cache dir>/kafka-<version>/libs``. The broker runs on the machine's JDK (17+) as
``java -cp 'libs/*' kafka.Kafka server.properties``, with its log dirs under
``<data dir>/kafka/data``: the storage is formatted only when ``meta.properties`` is missing, so
records survive ``stack down`` / ``stack up`` and a SIGKILL. Replication factors are 1 and the
transaction state log's min ISR is 1, so idempotent and transactional producers work on one node.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ..config import Settings
from ..errors import DependencyMissingError, PortInUseError, StackError
from .process import (
    ComponentStatus,
    _reap,
    is_alive,
    owned_pid,
    port_open,
    spawn,
    stop_pid,
    tail,
    wait_until,
)

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
_MARKER = ".resolved"

LOG4J2 = """\
# Broker logging for the embedded stack: everything to a rolling file under the data dir.
name = receiptflow-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
"""


def pom_path() -> Path:
    path = Path(str(resources.files("receiptflow").joinpath("data/kafka-pom.xml")))
    if not path.exists():
        raise DependencyMissingError(f"the Kafka pom is missing ({path}); reinstall receiptflow")
    return path


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_path().read_text())
    if not match:
        raise StackError("deploy/kafka/pom.xml has no <kafka.version>")
    return match.group(1).strip()


def libs_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{kafka_version()}" / "libs"


def resolve_jars(settings: Settings, timeout: float = 900) -> Path:
    """Download the broker's jars once (Maven); later calls return the cached folder at once."""
    libs = libs_dir(settings)
    if (libs / _MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DependencyMissingError("Maven (mvn) is needed once to resolve the Kafka jars: apt-get install maven")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    argv = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom_path()),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    log.info("resolving Kafka %s jars with Maven into %s", kafka_version(), libs)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Maven did not resolve the Kafka jars within {timeout:.0f}s") from exc
    if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
        raise StackError(f"Maven could not resolve the Kafka jars:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    (partial / _MARKER).write_text(kafka_version() + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)  # atomic: a crash never leaves a half-filled libs dir marked complete
    return libs


def java_binary(settings: Settings) -> str:
    if settings.java_home is not None:
        java = settings.java_home / "bin" / "java"
        if not java.exists():
            raise DependencyMissingError(f"no java at {java} (RECEIPTFLOW_JAVA_HOME)")
        return str(java)
    found = shutil.which("java")
    if found is None:
        raise DependencyMissingError(
            "Java 17+ is needed for the embedded Kafka broker: apt-get install openjdk-17-jre-headless"
        )
    return found


def parse_bootstrap(settings: Settings) -> tuple[str, int]:
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"cannot run an embedded broker for bootstrap servers {settings.bootstrap_servers!r}")
    return host, int(port)


def is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class EmbeddedKafka:
    """Start, stop and inspect the single-node broker for one data dir."""

    name = "kafka"

    def __init__(self, settings: Settings, ready_timeout: float = 90.0) -> None:
        self.settings = settings
        self.host, self.port = parse_bootstrap(settings)
        self.controller_port = settings.kafka_controller_port or self.port + 1
        self.home = settings.data_dir.resolve() / "kafka"
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.pid_file = settings.data_dir.resolve() / "run" / "kafka.pid"
        self.ready_timeout = ready_timeout

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _markers(self) -> list[str]:
        return [MAIN_CLASS, str(self.home)]

    def pid(self) -> int | None:
        return owned_pid(self.pid_file, self._markers())

    def ready(self, timeout: float = 2.0) -> bool:
        admin = AdminClient({"bootstrap.servers": self.endpoint, "socket.timeout.ms": int(timeout * 1000)})
        admin.list_topics(timeout=timeout)
        return True

    def _ready_quiet(self) -> bool:
        # Only ask librdkafka once the port accepts connections: it logs every refused connect.
        if not port_open(self.host, self.port):
            return False
        try:
            return self.ready()
        except Exception:  # noqa: BLE001 - not answering yet
            return False

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if port_open(self.host, self.port):
            return ComponentStatus(self.name, "external", None, self.endpoint)
        return ComponentStatus(self.name, "stopped", None, self.endpoint)

    def _write_config(self) -> Path:
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": str(self.settings.topic_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics come from the catalogue; a typo must not silently create a new topic.
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
            # Flush on the OS's schedule, like a production broker; acknowledged records are in the
            # page cache and survive a SIGKILL of the broker process.
            "num.recovery.threads.per.data.dir": "2",
        }
        conf = self.home / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(LOG4J2.format(logs=self.logs))
        return conf

    def _format(self, java: str, libs: Path, conf: Path) -> None:
        if (self.data / "meta.properties").exists():
            return  # formatted before: keep the data
        cp = f"{libs}/*"
        env = self._env()
        uuid = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        cluster_id = uuid.stdout.strip().splitlines()[-1] if uuid.returncode == 0 and uuid.stdout.strip() else ""
        if not cluster_id:
            raise StackError(f"kafka-storage random-uuid failed: {uuid.stderr[-2000:]}")
        done = subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CLASSPATH", None)
        return env

    def up(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            wait_until(
                self._ready_quiet, self.ready_timeout, "Kafka broker", details=lambda: tail(self.logs / "server.log")
            )
            return ComponentStatus(self.name, "running", pid, self.endpoint)
        if port_open(self.host, self.port):
            if self._ready_quiet():
                return ComponentStatus(self.name, "external", None, self.endpoint)
            raise PortInUseError(f"port {self.endpoint} is taken by something that is not a Kafka broker")
        if not is_local(self.host):
            raise StackError(f"Kafka at {self.endpoint} does not answer, and it is not a local address to start one on")
        if port_open(self.host, self.controller_port):
            raise PortInUseError(f"the controller port {self.host}:{self.controller_port} is taken by another program")
        java = java_binary(self.settings)
        libs = resolve_jars(self.settings)
        conf = self._write_config()
        self._format(java, libs, conf)
        argv = [
            java,
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp",
            f"{libs}/*",
            MAIN_CLASS,
            str(conf),
        ]
        proc = spawn(argv, self.logs / "stdout.log", self.pid_file, env=self._env())
        wait_until(
            self._ready_quiet,
            self.ready_timeout,
            "Kafka broker",
            alive=lambda: proc.poll() is None,
            details=lambda: tail(self.logs / "server.log") + tail(self.logs / "stdout.log"),
        )
        return ComponentStatus(self.name, "running", proc.pid, self.endpoint)

    def down(self) -> ComponentStatus:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=60)
        self.pid_file.unlink(missing_ok=True)
        return ComponentStatus(self.name, "stopped", None, self.endpoint)

    def kill(self) -> None:
        """SIGKILL the broker (crash tests): no clean shutdown, the PID file stays behind."""
        pid = self.pid()
        if pid is None:
            raise StackError("no embedded broker is running")
        os.kill(pid, 9)
        wait_until(lambda: owned_pid(self.pid_file, self._markers()) is None or _gone(pid), 30, "broker exit")


def _gone(pid: int) -> bool:
    _reap(pid)
    return not is_alive(pid)
