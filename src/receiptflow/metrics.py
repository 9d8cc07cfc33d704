"""Prometheus metrics: every metric of the project is defined here, on an injectable registry.

Components receive a :class:`Metrics` object (tests give each one a fresh ``CollectorRegistry``; the
CLI uses one registry per process and serves it on ``Settings.metrics_port``). Names follow
Prometheus conventions: ``receiptflow_`` prefix, ``_total`` for counters, ``_seconds`` for durations.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, write_to_textfile

from .errors import ConfigError

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All receiptflow metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Producers
        self.produced_total = Counter(
            "receiptflow_produced_total", "Records acknowledged by the broker.", ["topic"], registry=r
        )
        self.produce_errors_total = Counter(
            "receiptflow_produce_errors_total", "Records the broker did not acknowledge.", ["topic"], registry=r
        )
        self.rejected_input_total = Counter(
            "receiptflow_rejected_input_total", "Input rejected before sending, by reason.", ["reason"], registry=r
        )
        # Processor
        self.consumed_total = Counter(
            "receiptflow_consumed_total", "Records read by a processor.", ["topic"], registry=r
        )
        self.processed_total = Counter(
            "receiptflow_processed_total", "Valid checkouts processed and routed.", ["chain"], registry=r
        )
        self.routed_total = Counter(
            "receiptflow_routed_total", "Records written to an output topic.", ["topic"], registry=r
        )
        self.duplicates_total = Counter(
            "receiptflow_duplicates_total", "Deliveries dropped because the receipt id was seen.", ["stage"], registry=r
        )
        self.dead_letters_total = Counter(
            "receiptflow_dead_letters_total", "Records sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.unknown_chain_total = Counter(
            "receiptflow_unknown_chain_total", "Checkouts of chains the policy does not know.", ["chain"], registry=r
        )
        self.consent_changes_total = Counter(
            "receiptflow_consent_changes_total", "Consent changes applied to the processor's state.", registry=r
        )
        self.transactions_total = Counter(
            "receiptflow_transactions_total",
            "Processor transactions by outcome (committed, aborted).",
            ["outcome"],
            registry=r,
        )
        self.state_restore_seconds = Histogram(
            "receiptflow_state_restore_seconds",
            "Time to rebuild dedup and consent state for newly assigned partitions.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "receiptflow_batch_seconds", "Time to process one batch.", ["stage"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "receiptflow_batch_size",
            "Records per processed batch.",
            ["stage"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        # Profiles
        self.profile_updates_total = Counter(
            "receiptflow_profile_updates_total", "Purchases applied to Redis profiles.", registry=r
        )
        self.profile_late_total = Counter(
            "receiptflow_profile_late_total",
            "Purchases refused by the profile store: older than the dedup horizon behind the card's newest receipt.",
            registry=r,
        )
        self.profile_erased_total = Counter(
            "receiptflow_profile_erased_total", "Purchases or consent changes of erased cards ignored.", registry=r
        )
        self.profile_consent_changes_total = Counter(
            "receiptflow_profile_consent_changes_total", "Consent changes recorded in profiles.", registry=r
        )
        self.profile_rebuild_cards_total = Counter(
            "receiptflow_profile_rebuild_cards_total", "Cards whose profile was rebuilt from the warehouse.", registry=r
        )
        self.segments_assigned_total = Counter(
            "receiptflow_segments_assigned_total",
            "Cards assigned by a segments run, per grocery segment ('-': none, for lack of consent or grocery data).",
            ["segment"],
            registry=r,
        )
        # Warehouse
        self.warehouse_rows_total = Counter(
            "receiptflow_warehouse_rows_total", "Rows written to the warehouse.", ["table"], registry=r
        )
        self.consumer_lag = Gauge(
            "receiptflow_consumer_lag", "Records behind the log end, per topic.", ["group", "topic"], registry=r
        )


def write_textfile(metrics: Metrics, path: Path) -> None:
    """The registry in the Prometheus text format, replacing ``path`` atomically.

    For batch commands, which end before any scrape: node_exporter's textfile collector (or any
    scraper of a file) picks the figures up from there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), metrics.registry)


def serve(metrics: Metrics, port: int, addr: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``addr:port`` (no-op when port is 0); ConfigError when the port is taken."""
    if port:
        try:
            start_http_server(port, addr=addr, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics port {addr}:{port} is in use (another receiptflow process?): give this one another "
                "with --metrics-port N or RECEIPTFLOW_METRICS_PORT (0 turns its exporter off)"
            ) from exc
