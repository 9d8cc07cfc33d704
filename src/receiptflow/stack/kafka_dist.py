"""The Apache Kafka distribution the embedded broker runs: the jars, the Java runtime, the StorageTool.

Jars: ``org.apache.kafka:kafka_2.13`` and its runtime dependencies, named by
``deploy/kafka/pom.xml`` (the broker version is the pom's ``<kafka.version>``), are resolved once
per machine by Maven into ``<cache dir>/kafka-<version>/libs``; a marker file written after a
complete download makes later calls skip Maven (no network needed afterwards). Two processes that
resolve at once (a test session and ``stack up``) take turns on a file lock: one downloads, the
other finds the jars there.

The broker needs the machine's JDK (17+) or ``RECEIPTFLOW_JAVA_HOME``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ..config import Settings
from ..errors import DependencyMissingError, StackError
from .maven import build_into, file_lock

log = logging.getLogger(__name__)

STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA = 17
_MARKER = ".complete"
_OLD_MARKERS = (".resolved",)  # written by earlier receiptflow versions: their downloads are complete too
# src/receiptflow/stack/kafka_dist.py -> parents: stack, receiptflow, src, <repo>
REPO_ROOT = Path(__file__).resolve().parents[3]
REPO_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


# --- jars --------------------------------------------------------------------------------------------
def pom_path() -> Path:
    """The pom naming the broker's jars: ``deploy/kafka/pom.xml`` of the source tree.

    A wheel built from the repo also carries it as package data (``receiptflow/data/kafka-pom.xml``),
    which is used when the source tree is not there.
    """
    if REPO_POM.is_file():
        return REPO_POM
    packaged = Path(str(resources.files("receiptflow").joinpath("data/kafka-pom.xml")))
    if packaged.is_file():
        return packaged
    raise DependencyMissingError(
        f"the Kafka pom was not found (looked for {REPO_POM} and {packaged}): the embedded broker is "
        "resolved from a receiptflow source checkout (deploy/kafka/pom.xml); run `receiptflow stack` from "
        "an editable install (pip install -e .) or point RECEIPTFLOW_BOOTSTRAP_SERVERS at a running broker"
    )


def kafka_version() -> str:
    """The Apache Kafka version the pom pins (``<kafka.version>``)."""
    pom = pom_path()
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text(encoding="utf-8"))
    if not match:
        raise StackError(f"{pom} has no <kafka.version> property")
    return match.group(1)


def libs_dir(settings: Settings) -> Path:
    return settings.local.cache_dir.expanduser().resolve() / f"kafka-{kafka_version()}" / "libs"


def jars_complete(libs: Path, version: str) -> bool:
    """True when a download finished into ``libs`` (its marker file is written last)."""
    marked = any((libs / marker).is_file() for marker in (_MARKER, *_OLD_MARKERS))
    return marked and (libs / f"kafka_2.13-{version}.jar").is_file()


def resolve_jars(settings: Settings, timeout: float = 900.0) -> Path:
    """The folder with the broker's jars, downloaded by Maven on first use (later calls return at once)."""
    version = kafka_version()
    libs = libs_dir(settings)
    if jars_complete(libs, version):
        return libs
    with file_lock(libs.parent / ".lock"):
        if jars_complete(libs, version):
            return libs
        log.info("resolving Apache Kafka %s jars with Maven into %s", version, libs)
        build_into(
            libs,
            lambda out: [
                "-f",
                str(pom_path()),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            what=f"resolve the Kafka {version} jars",
            produced=lambda out: (out / f"kafka_2.13-{version}.jar").is_file(),
            marker=_MARKER,
            marker_text=lambda out: f"kafka {version}\n" + "".join(f"{j.name}\n" for j in sorted(out.glob("*.jar"))),
            hint="Maven (mvn) is needed once to download the Kafka jars: apt-get install maven (make setup does it)",
            timeout=timeout,
        )
        jars = list(libs.glob("*.jar"))
        log.info("resolved %d jars for Apache Kafka %s", len(jars), version)
        return libs


# --- java ----------------------------------------------------------------------------------------------
JAVA_HINT = (
    "Java 17+ is needed for the embedded Kafka broker: apt-get install openjdk-17-jre-headless "
    "(make setup does it), or set RECEIPTFLOW_JAVA_HOME to a JDK 17+"
)


def java_binary(settings: Settings) -> str:
    """The ``java`` executable to run the broker with; DependencyMissingError with the install hint."""
    if settings.local.java_home is not None:
        java = settings.local.java_home / "bin" / "java"
        if not java.is_file():
            raise DependencyMissingError(f"no java at {java} (RECEIPTFLOW_JAVA_HOME). {JAVA_HINT}")
        return str(java)
    found = shutil.which("java")
    if found is None:
        raise DependencyMissingError(JAVA_HINT)
    return found


def java_major(java: str) -> int | None:
    """The major version of ``java`` (17 for "17.0.13"), None when it cannot be told."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


# --- the storage tool -------------------------------------------------------------------------------------
def random_cluster_id(java: str, classpath: str, env: dict[str, str], java_opts: Sequence[str] = ()) -> str:
    """A new KRaft cluster id from the broker's own StorageTool."""
    done = subprocess.run(
        [java, *java_opts, "-cp", classpath, STORAGE_TOOL, "random-uuid"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    cluster_id = lines[-1].strip() if done.returncode == 0 and lines else ""
    if not cluster_id:
        raise StackError(f"kafka StorageTool random-uuid failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
    return cluster_id
