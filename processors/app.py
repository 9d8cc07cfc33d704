"""The stream-processing application (faust-streaming): agents that decode, call the core, send, count.

Two agents, each consuming in batches (``stream.take_events``) so per-event overhead stays out of
the hot path:

* ``checkouts`` → validate, apply the granularity policy and consent (``processors.core``) →
  ``purchases.customer`` / ``purchases.marketing`` / ``purchases.analytics``; invalid input →
  ``checkouts.dlq`` with the original bytes, the reason and its source partition and offset.
* ``purchases.customer`` → Redis profiles (``processors.profiles``), applied once per receipt id.

Delivery here is at-least-once (faust commits offsets after the batch is handled); duplicates are
made harmless downstream by keying every effect on the receipt id (the profile script's seen-set,
the warehouse's primary keys).

``create_app(settings)`` builds the app; ``receiptflow process`` runs it as a faust worker.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT
from faust.worker import Worker

from ..codec import Codec
from ..config import Settings
from ..errors import ProfileStoreError, ValidationError
from ..metrics import Metrics
from ..models import Checkout, Purchase
from ..topics import TopicNames
from .core import process
from .policy import UNKNOWN_CHAIN_VERSION, Policy, load_policy
from .profiles import RedisProfileStore

log = logging.getLogger(__name__)

BATCH_MAX = 1000
BATCH_WITHIN = 0.5  # seconds: latency bound when traffic is light


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",") if h.strip())


def faust_credentials(settings: Settings) -> Any:
    """Translate the librdkafka-style security settings to faust (aiokafka) credentials."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
        if settings.kafka_ssl_certificate_location:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                settings.kafka_ssl_certificate_location,
                settings.kafka_ssl_key_location,
                password.get_secret_value() if password else None,
            )
    if proto == "SSL":
        return faust.SSLCredentials(context)
    secret = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=secret.get_secret_value() if secret is not None else None,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def dead_letter(
    codec: Codec, exc: ValidationError, event: EventT[bytes], now: datetime, processor: str = "processor"
) -> bytes:
    msg = event.message
    return codec.encode(
        "dead_letter",
        {
            "reason": exc.reason,
            "message": exc.message,
            "field": exc.field,
            "source_topic": msg.topic,
            "source_partition": msg.partition,
            "source_offset": msg.offset,
            "original_key": msg.key,
            "original_value": msg.value,
            "failed_at": now,
            "processor": processor,
        },
    )


def _key(p: Purchase) -> bytes:
    return (p.card_id or p.store_id).encode()


def create_app(
    settings: Settings,
    *,
    app_id: str | None = None,
    policy: Policy | None = None,
    metrics: Metrics | None = None,
    profiles: RedisProfileStore | None = None,
) -> faust.App:
    """Build the faust app with its topics and agents (nothing connects until the worker starts)."""
    names = TopicNames(settings.topic_prefix)
    codec = Codec()
    policy = policy or load_policy(settings.policy_file)
    metrics = metrics or Metrics()
    store = profiles or RedisProfileStore.from_url(settings.redis_connection_url())

    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id or settings.processor_id,
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=settings.topic_replication_factor,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # topics come from the catalogue (`receiptflow topics create`)
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        datadir=str(settings.data_dir / "faust"),
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, internal=False, allow_empty=True)

    checkouts = topic(names.checkouts)
    customer = topic(names.purchases_customer)
    marketing = topic(names.purchases_marketing)
    analytics = topic(names.purchases_analytics)
    dlq = topic(names.checkouts_dlq)

    @app.agent(checkouts)
    async def process_checkouts(stream: faust.StreamT[bytes]) -> None:
        async for events in _batches(stream):
            started = time.perf_counter()
            now = datetime.now(UTC)
            metrics.consumed_total.labels(names.checkouts).inc(len(events))
            for event in events:
                try:
                    decoded = codec.decode(event.message.value, expect="checkout")
                    checkout = Checkout.from_avro(decoded.value)
                    routed = process(checkout, policy, None, now)
                except ValidationError as exc:
                    metrics.dead_letters_total.labels(exc.reason).inc()
                    log.warning(
                        "rejected %s[%s]@%s: %s",
                        event.message.topic,
                        event.message.partition,
                        event.message.offset,
                        exc,
                    )
                    await dlq.send(key=event.message.key, value=dead_letter(codec, exc, event, now))
                    continue
                if routed.customer.policy_version == UNKNOWN_CHAIN_VERSION:
                    metrics.unknown_chain_total.labels(checkout.chain).inc()
                    log.warning("unknown chain %r: applied the strictest level", checkout.chain)
                key = _key(routed.customer)
                await customer.send(key=key, value=codec.encode("purchase", routed.customer.to_avro()))
                metrics.routed_total.labels(names.purchases_customer).inc()
                if routed.marketing is not None:
                    await marketing.send(key=key, value=codec.encode("purchase", routed.marketing.to_avro()))
                    metrics.routed_total.labels(names.purchases_marketing).inc()
                if routed.analytics is not None:
                    a_key = routed.analytics.store_id.encode()
                    await analytics.send(key=a_key, value=codec.encode("purchase", routed.analytics.to_avro()))
                    metrics.routed_total.labels(names.purchases_analytics).inc()
                metrics.processed_total.labels(checkout.chain).inc()
            metrics.batch_size.labels("processor").observe(len(events))
            metrics.batch_seconds.labels("processor").observe(time.perf_counter() - started)

    @app.agent(customer)
    async def update_profiles(stream: faust.StreamT[bytes]) -> None:
        async for events in _batches(stream):
            started = time.perf_counter()
            batch: list[Purchase] = []
            for event in events:
                # This topic is written only by the agent above, through the codec: a record that
                # does not decode is a bug, and crashing the agent (faust restarts it) is louder than
                # skipping it.
                batch.append(Purchase.from_avro(codec.decode(event.message.value, expect="purchase").value))
            await _apply_profiles(store, batch, metrics)
            metrics.batch_seconds.labels("profiles").observe(time.perf_counter() - started)

    return app


def _batches(stream: faust.StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """Batches of events (with their offsets) from a faust stream: up to BATCH_MAX, or what came within BATCH_WITHIN."""
    # take_events lives on the concrete Stream, not on the StreamT protocol faust annotates agents with.
    return cast(faust.Stream[bytes], stream).take_events(BATCH_MAX, within=BATCH_WITHIN)


async def _apply_profiles(store: RedisProfileStore, batch: Sequence[Purchase], metrics: Metrics) -> None:
    attempt = 0
    while True:
        try:
            applied = store.apply(batch)
            break
        except ProfileStoreError as exc:
            # Redis briefly unavailable: retry with backoff instead of acking unapplied purchases.
            attempt += 1
            log.warning("profile batch failed (attempt %d): %s", attempt, exc)
            await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
    metrics.profile_updates_total.inc(applied)
    duplicates = sum(1 for p in batch if p.card_id is not None) - applied
    if duplicates:
        metrics.duplicates_total.labels("profiles").inc(duplicates)


def run_worker(app: faust.App, loglevel: str = "warning") -> None:
    """Run the app as a faust worker until SIGTERM/SIGINT (blocks)."""
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
