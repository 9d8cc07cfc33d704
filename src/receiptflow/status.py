"""What ``receiptflow status`` gathers: lag per group and partition, rates, dead letters, process states.

Everything comes from the cluster and the processes themselves, no Prometheus needed:

* each consumer group's committed offsets against its topics' ends (:func:`receiptflow.lag.group_lag`),
  read twice ``sample`` seconds apart, which also gives the rates: records/s committed per group and
  records/s written per topic;
* the dead-letter topic, counted by reason (the same reader as ``dlq list``);
* each process's ``/readyz`` (:mod:`receiptflow.health`): ready, not ready with the checks that fail,
  or unreachable. The addresses are ``Settings.metrics.status_endpoints`` (``name=host:port,...``); by default
  the processor and the sink on this machine's exporter ports.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Settings
from .dlq import iter_dead_letters
from .errors import ConfigError
from .lag import PartitionLag, group_lag


@dataclass(frozen=True)
class Group:
    """A consumer group to report: its name, the role that runs it and the topics it reads."""

    name: str
    role: str
    topics: tuple[str, ...]


@dataclass
class GroupStatus:
    name: str
    role: str
    partitions: list[PartitionLag]
    committed_per_second: float | None = None  # None: not sampled

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass
class ProcessStatus:
    name: str
    address: str
    state: str  # "ready", "not ready" or "unreachable"
    failing: list[str] = field(default_factory=list)  # the checks that do not hold


@dataclass
class Status:
    groups: list[GroupStatus]
    written_per_second: dict[str, float]  # topic -> records/s appended (empty: not sampled)
    dead_letters: dict[str, int]  # reason -> count
    processes: list[ProcessStatus]

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [
                {
                    "group": g.name,
                    "role": g.role,
                    "lag": g.lag,
                    "committed_per_second": g.committed_per_second,
                    "partitions": [{**asdict(p), "lag": p.lag} for p in g.partitions],
                }
                for g in self.groups
            ],
            "written_per_second": self.written_per_second,
            "dead_letters": self.dead_letters,
            "processes": [asdict(p) for p in self.processes],
        }


def endpoints(settings: Settings) -> dict[str, str]:
    """The processes to ask for ``/readyz``: name -> host:port."""
    if settings.metrics.status_endpoints is None:
        port = settings.metrics.port
        return {"processor": f"127.0.0.1:{port}", "sink": f"127.0.0.1:{port + 1}"} if port else {}
    out = {}
    for entry in settings.metrics.status_endpoints.split(","):
        name, sep, address = entry.strip().partition("=")
        if not entry.strip():
            continue
        if not sep or not name or ":" not in address:
            raise ConfigError(
                f"RECEIPTFLOW_STATUS_ENDPOINTS entry {entry.strip()!r} is not name=host:port "
                "(e.g. router-0=receiptflow-router-0.receiptflow-router:9108,sink=127.0.0.1:9109)"
            )
        out[name] = address
    return out


def process_state(name: str, address: str, timeout: float = 3.0) -> ProcessStatus:
    """One process's ``/readyz`` answer."""
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=timeout) as response:
            body = json.load(response)
            return ProcessStatus(name, address, "ready" if body.get("ready") else "not ready")
    except urllib.error.HTTPError as exc:
        try:
            checks = json.loads(exc.read()).get("checks", {})
        except ValueError:
            checks = {}
        failing = sorted(check for check, ok in checks.items() if not ok)
        return ProcessStatus(name, address, "not ready", failing or [f"HTTP {exc.code}"])
    except (OSError, ValueError):
        return ProcessStatus(name, address, "unreachable")


def gather(
    settings: Settings,
    groups: Sequence[Group],
    *,
    sample: float = 2.0,
    processes: Mapping[str, str] | None = None,
) -> Status:
    """The status now; with ``sample`` > 0 the offsets are read twice that far apart, for the rates."""
    topics = {g.name: g.topics for g in groups}
    before = group_lag(settings, topics)
    started = time.monotonic()
    after = before
    if sample > 0:
        time.sleep(sample)
        after = group_lag(settings, topics)
    elapsed = time.monotonic() - started
    statuses = []
    ends_before: dict[tuple[str, int], int] = {}
    ends_after: dict[tuple[str, int], int] = {}
    for g in groups:
        committed_then = {(p.topic, p.partition): p.committed or 0 for p in before.get(g.name, [])}
        rate = None
        if sample > 0:
            moved = sum(
                max((p.committed or 0) - committed_then.get((p.topic, p.partition), 0), 0) for p in after[g.name]
            )
            rate = moved / elapsed
        statuses.append(GroupStatus(g.name, g.role, after.get(g.name, []), rate))
        ends_before.update({(p.topic, p.partition): p.end for p in before.get(g.name, [])})
        ends_after.update({(p.topic, p.partition): p.end for p in after.get(g.name, [])})
    written: Counter[str] = Counter()
    if sample > 0:
        for (topic, partition), end in ends_after.items():
            written[topic] += max(end - ends_before.get((topic, partition), end), 0)
    reasons: Counter[str] = Counter(letter.reason for letter in iter_dead_letters(settings))
    asked = endpoints(settings) if processes is None else dict(processes)
    return Status(
        statuses,
        {topic: n / elapsed for topic, n in sorted(written.items())} if sample > 0 else {},
        dict(sorted(reasons.items())),
        [process_state(name, address) for name, address in asked.items()],
    )
