"""Prometheus metrics: every metric of the project is defined here, on an injectable registry.

Components receive a :class:`Metrics` object (tests give each one a fresh ``CollectorRegistry``; the
CLI builds one per process for its roles and serves it with :func:`receiptflow.health.serve`). Names
follow Prometheus conventions: ``receiptflow_`` prefix, ``_total`` for counters and a unit suffix
for everything measured (``_seconds``, ``_records``, ``_bytes``).

Each metric belongs to the roles that change it (:data:`ROLES`). A process registers only its own
roles' metrics on the registry it serves, so a sink never shows ``receiptflow_profile_updates_total
0``; the others still exist as attributes (code shared between roles may touch them) but on a
private registry nobody scrapes. The definitions are one table, :data:`DEFINITIONS`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

Role = Literal["producer", "router", "aggregate", "profiles", "sink", "rebuild", "segments"]
ROLES: tuple[Role, ...] = ("producer", "router", "aggregate", "profiles", "sink", "rebuild", "segments")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)
# End to end: sub-second when the pipeline keeps up (finer there: the profile's target is 250 ms at p99),
# minutes to an hour while a backlog drains.
_AGE_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


@dataclass(frozen=True)
class Definition:
    """One metric: the attribute it is reached by, its kind, name, help, labels and roles."""

    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...]
    roles: tuple[Role, ...]
    buckets: Sequence[float] = ()


def _d(
    attr: str,
    kind: type[Counter] | type[Gauge] | type[Histogram],
    name: str,
    help: str,
    labels: tuple[str, ...] = (),
    roles: tuple[Role, ...] = (),
    buckets: Sequence[float] = (),
) -> Definition:
    return Definition(attr, kind, name, help, labels, roles, buckets)


# Stages that consume records: the router, the aggregator, the profile agent and the warehouse sink.
CONSUMING_ROLES: tuple[Role, ...] = ("router", "aggregate", "profiles", "sink")
_CONSUMERS = CONSUMING_ROLES

DEFINITIONS: tuple[Definition, ...] = (
    # Producers (registers' outboxes, the simulator, JSON Lines ingest)
    _d("produced_total", Counter, "receiptflow_produced_total", "Records acknowledged by the broker.",
       ("topic",), ("producer",)),
    _d("produce_errors_total", Counter, "receiptflow_produce_errors_total",
       "Records the broker did not acknowledge.", ("topic",), ("producer",)),
    _d("rejected_input_total", Counter, "receiptflow_rejected_input_total",
       "Input rejected before sending, by reason.", ("reason",), ("producer",)),
    _d("outbox_depth_records", Gauge, "receiptflow_outbox_depth_records",
       "Records accepted by a register's outbox and not yet acknowledged by the broker.", (), ("producer",)),
    _d("outbox_depth_bytes", Gauge, "receiptflow_outbox_depth_bytes",
       "Bytes of the records waiting in a register's outbox.", (), ("producer",)),
    # Every consuming stage
    _d("consumed_total", Counter, "receiptflow_consumed_total", "Records read by a processor.",
       ("topic",), ("router", "aggregate", "sink")),
    _d("duplicates_total", Counter, "receiptflow_duplicates_total",
       "Deliveries dropped because the receipt id was seen.", ("stage",), _CONSUMERS),
    _d("dead_letters_total", Counter, "receiptflow_dead_letters_total", "Records sent to the dead-letter topic.",
       ("reason",), _CONSUMERS),
    _d("batch_seconds", Histogram, "receiptflow_batch_seconds", "Time to process one batch.",
       ("stage",), _CONSUMERS, _LATENCY_BUCKETS),
    _d("batch_size", Histogram, "receiptflow_batch_size_records", "Records per processed batch.",
       ("stage",), _CONSUMERS, _BATCH_BUCKETS),
    _d("consumer_lag", Gauge, "receiptflow_consumer_lag_records",
       "Records behind the partition's end (read-committed), per consumer group and assigned partition.",
       ("group", "topic", "partition"), _CONSUMERS),
    _d("checkout_to_output_seconds", Histogram, "receiptflow_checkout_to_output_seconds",
       "Time from the broker's append of a checkout to the stage's committed output: the router's "
       "transaction, the profile applied in Redis, the row committed in the warehouse.",
       ("stage",), _CONSUMERS, _AGE_BUCKETS),
    # Router
    _d("processed_total", Counter, "receiptflow_processed_total", "Valid checkouts processed and routed.",
       ("chain",), ("router",)),
    _d("store_checkouts_total", Counter, "receiptflow_store_checkouts_total",
       "Valid checkouts routed, per store (a store that goes quiet in opening hours is noticed).",
       ("store",), ("router",)),
    _d("routed_total", Counter, "receiptflow_routed_total", "Records written to an output topic.",
       ("topic",), ("router",)),
    _d("routed_granularity_total", Counter, "receiptflow_routed_granularity_total",
       "Receipts routed, per chain and granularity applied to the customer record (ITEM, PRODUCT_GROUP, RECEIPT).",
       ("chain", "granularity"), ("router",)),
    _d("marketing_consent_total", Counter, "receiptflow_marketing_consent_total",
       "Receipts routed, by what the card's consent gives marketing: product_data (the customer record), "
       "product_groups (product groups at most), withheld (nothing), anonymous (no card).",
       ("outcome",), ("router",)),
    _d("unknown_chain_total", Counter, "receiptflow_unknown_chain_total",
       "Checkouts of chains the policy does not know.", ("chain",), ("router",)),
    _d("consent_changes_total", Counter, "receiptflow_consent_changes_total",
       "Consent changes applied to the processor's state.", (), ("router",)),
    _d("transactions_total", Counter, "receiptflow_transactions_total",
       "Processor transactions by outcome (committed, aborted).", ("outcome",), ("router",)),
    _d("state_restore_seconds", Histogram, "receiptflow_state_restore_seconds",
       "Time to rebuild dedup and consent state for newly assigned partitions.", (), ("router",), _LATENCY_BUCKETS),
    # Aggregator (analytics cells)
    _d("windows_closed_total", Counter, "receiptflow_analytics_windows_closed_total",
       "Windows (one chain, one local date) closed and published, per chain.", ("chain",), ("aggregate",)),
    _d("cells_published_total", Counter, "receiptflow_analytics_cells_published_total",
       "Analytics cells published to purchases.analytics, per family.", ("family",), ("aggregate",)),
    _d("late_baskets_total", Counter, "receiptflow_analytics_late_baskets_total",
       "Baskets of a window already closed: dropped, and counted in the window's close marker.",
       ("chain",), ("aggregate",)),
    _d("open_windows", Gauge, "receiptflow_analytics_open_windows",
       "Windows open in the aggregator's memory (not closed yet).", (), ("aggregate",)),
    _d("open_baskets", Gauge, "receiptflow_analytics_open_baskets_records",
       "Basket records held in the aggregator's open windows.", (), ("aggregate",)),
    _d("oldest_open_window_end", Gauge, "receiptflow_analytics_oldest_open_window_end_timestamp_seconds",
       "End of the local day of the oldest window open in the aggregator's memory, in seconds since the epoch; "
       "0 when none is open.", (), ("aggregate",)),
    # Profiles
    _d("profile_updates_total", Counter, "receiptflow_profile_updates_total", "Purchases applied to Redis profiles.",
       (), ("profiles",)),
    _d("profile_late_total", Counter, "receiptflow_profile_late_total",
       "Purchases refused by the profile store: older than the dedup horizon behind the card's newest receipt.",
       (), ("profiles",)),
    _d("profile_erased_total", Counter, "receiptflow_profile_erased_total",
       "Purchases or consent changes of erased cards ignored.", (), ("profiles",)),
    _d("profile_consent_changes_total", Counter, "receiptflow_profile_consent_changes_total",
       "Consent changes recorded in profiles.", (), ("profiles",)),
    _d("profile_rebuild_cards_total", Counter, "receiptflow_profile_rebuild_cards_total",
       "Cards whose profile was rebuilt from the warehouse.", (), ("rebuild",)),
    _d("segments_assigned_total", Counter, "receiptflow_segments_assigned_total",
       "Cards assigned by a segments run, per grocery segment ('-': none, for lack of consent or grocery data).",
       ("segment",), ("segments",)),
    # Warehouse
    _d("warehouse_rows_total", Counter, "receiptflow_warehouse_rows_total", "Rows written to the warehouse.",
       ("table",), ("sink",)),
    # Erased cards and retractions (router)
    _d("erased_dropped_total", Counter, "receiptflow_router_erased_dropped_total",
       "Checkouts and consent changes of erased cards dropped by the router (nothing written for them), "
       "by input (checkout, consent).", ("input",), ("router",)),
    _d("retractions_total", Counter, "receiptflow_retractions_total",
       "Retractions written to purchases.retractions, by reason and scope.", ("reason", "scope"), ("router",)),
)  # fmt: skip


class Metrics:
    """The receiptflow metrics, those of ``roles`` on ``registry`` (default: every role)."""

    produced_total: Counter
    produce_errors_total: Counter
    rejected_input_total: Counter
    outbox_depth_records: Gauge
    outbox_depth_bytes: Gauge
    consumed_total: Counter
    duplicates_total: Counter
    dead_letters_total: Counter
    batch_seconds: Histogram
    batch_size: Histogram
    consumer_lag: Gauge
    checkout_to_output_seconds: Histogram
    processed_total: Counter
    store_checkouts_total: Counter
    routed_total: Counter
    routed_granularity_total: Counter
    marketing_consent_total: Counter
    unknown_chain_total: Counter
    consent_changes_total: Counter
    transactions_total: Counter
    state_restore_seconds: Histogram
    windows_closed_total: Counter
    cells_published_total: Counter
    late_baskets_total: Counter
    open_windows: Gauge
    open_baskets: Gauge
    oldest_open_window_end: Gauge
    profile_updates_total: Counter
    profile_late_total: Counter
    profile_erased_total: Counter
    profile_consent_changes_total: Counter
    profile_rebuild_cards_total: Counter
    segments_assigned_total: Counter
    warehouse_rows_total: Counter
    erased_dropped_total: Counter
    retractions_total: Counter

    def __init__(self, registry: CollectorRegistry | None = None, roles: Collection[str] = ROLES) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown metric roles {sorted(unknown)}; known: {', '.join(ROLES)}")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.roles = frozenset(roles)
        # Metrics of other roles: usable, never served (one registry keeps their names unique too).
        self.unexported = CollectorRegistry()
        for d in DEFINITIONS:
            r = self.registry if self.roles.intersection(d.roles) else self.unexported
            if d.kind is Histogram:
                metric: Counter | Gauge | Histogram = Histogram(d.name, d.help, d.labels, buckets=d.buckets, registry=r)
            else:
                metric = d.kind(d.name, d.help, d.labels, registry=r)
            setattr(self, d.attr, metric)


def observe_ages(histogram: Histogram, now: float, stamps_ms: Iterable[int]) -> int:
    """Observe ``now`` (seconds since the epoch) minus each record timestamp (ms); returns how many.

    A timestamp of 0 or less (the record has none) is skipped; a timestamp ahead of ``now`` (clocks
    of broker and worker apart) counts as no time at all rather than a negative age.
    """
    observed = 0
    now_ms = now * 1000.0
    for at in stamps_ms:
        if at > 0:
            histogram.observe(max(now_ms - at, 0.0) / 1000.0)
            observed += 1
    return observed


def write_textfile(metrics: Metrics, path: Path) -> None:
    """The registry in the Prometheus text format, replacing ``path`` atomically.

    For batch commands, which end before any scrape: node_exporter's textfile collector (or any
    scraper of a file) picks the figures up from there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), metrics.registry)
