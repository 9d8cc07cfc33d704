"""Prometheus metrics: every metric of the project is defined here, on an injectable registry.

Components receive a :class:`Metrics` object (tests give each one a fresh ``CollectorRegistry``; the
CLI uses one registry per process and serves it on ``Settings.metrics_port``). Names follow
Prometheus conventions: ``receiptflow_`` prefix, ``_total`` for counters, ``_seconds`` for durations.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, write_to_textfile

from .errors import ConfigError

PREFIX = "receiptflow_"  # every metric name starts with it
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All receiptflow metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        counter, histogram = self._counter, self._histogram
        # Producers
        self.produced_total = counter("produced_total", "Records acknowledged by the broker.", "topic")
        self.produce_errors_total = counter("produce_errors_total", "Records the broker did not acknowledge.", "topic")
        self.rejected_input_total = counter(
            "rejected_input_total", "Input rejected before sending, by reason.", "reason"
        )
        # Processor
        self.consumed_total = counter("consumed_total", "Records read by a processor.", "topic")
        self.processed_total = counter("processed_total", "Valid checkouts processed and routed.", "chain")
        self.routed_total = counter("routed_total", "Records written to an output topic.", "topic")
        self.duplicates_total = counter(
            "duplicates_total", "Deliveries dropped because the receipt id was seen.", "stage"
        )
        self.dead_letters_total = counter("dead_letters_total", "Records sent to the dead-letter topic.", "reason")
        self.unknown_chain_total = counter(
            "unknown_chain_total", "Checkouts of chains the policy does not know.", "chain"
        )
        self.consent_changes_total = counter(
            "consent_changes_total", "Consent changes applied to the processor's state."
        )
        self.transactions_total = counter(
            "transactions_total", "Processor transactions by outcome (committed, aborted).", "outcome"
        )
        self.state_restore_seconds = histogram(
            "state_restore_seconds", "Time to rebuild dedup and consent state for newly assigned partitions."
        )
        self.batch_seconds = histogram("batch_seconds", "Time to process one batch.", "stage")
        self.batch_size = histogram(
            "batch_size", "Records per processed batch.", "stage", buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000)
        )
        # Profiles
        self.profile_updates_total = counter("profile_updates_total", "Purchases applied to Redis profiles.")
        self.profile_late_total = counter(
            "profile_late_total",
            "Purchases refused by the profile store: older than the dedup horizon behind the card's newest receipt.",
        )
        self.profile_erased_total = counter(
            "profile_erased_total", "Purchases or consent changes of erased cards ignored."
        )
        self.profile_consent_changes_total = counter(
            "profile_consent_changes_total", "Consent changes recorded in profiles."
        )
        self.profile_rebuild_cards_total = counter(
            "profile_rebuild_cards_total", "Cards whose profile was rebuilt from the warehouse."
        )
        self.segments_assigned_total = counter(
            "segments_assigned_total",
            "Cards assigned by a segments run, per grocery segment ('-': none, for lack of consent or grocery data).",
            "segment",
        )
        # Warehouse
        self.warehouse_rows_total = counter("warehouse_rows_total", "Rows written to the warehouse.", "table")
        self.consumer_lag = Gauge(
            f"{PREFIX}consumer_lag",
            "Records behind the log end, per topic.",
            ["group", "topic"],
            registry=self.registry,
        )

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, *labels: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(PREFIX + name, documentation, labels, buckets=buckets, registry=self.registry)


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
