"""Register client: validates checkouts against the Avro contract and sends them to Kafka.

An idempotent librdkafka producer (``enable.idempotence``, ``acks=all``) keyed by loyalty card id
(store id for anonymous receipts), so one customer's receipts stay in order on one partition.
Every send has a delivery report; :meth:`RegisterClient.flush` returns how many the broker
acknowledged and how many failed, and acknowledged receipt ids are kept for callers that need
them (the outbox deletes only those).

A consent change for an erased card is refused before it is sent (:class:`~receiptflow.erasures.ErasedCheck`
reads the erased-cards topic on the first consent change): an erased card takes no consent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ..codec import Codec
from ..config import Settings
from ..erasures import ErasedCheck
from ..errors import BrokerError, SchemaError, ValidationError
from ..metrics import Metrics
from ..models import Checkout, ConsentChange
from ..registry import codec_for
from ..topics import TopicNames
from ..validation import CONSENT_CHANNELS

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    acked: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    # (tag given to send, error) for every failed delivery that had a tag, e.g. an input line number.
    failed_tags: list[tuple[object, str]] = field(default_factory=list)


def principal_of(settings: Settings) -> str:
    """The Kafka principal this process writes as (what a consent change records as its writer)."""
    return settings.kafka.sasl_username or "anonymous"


def stamped(change: ConsentChange, principal: str) -> ConsentChange:
    """``change`` as written by ``principal``; a change that names no channel takes its ``source`` as
    its channel when that is one (the v1 field meant the channel: app, web, store, customer_service)."""
    channel = change.channel or (change.source if change.source in CONSENT_CHANNELS else "")
    return replace(change, principal=principal, channel=channel)


def checkout_key(c: Checkout) -> bytes:
    return (c.card_id or c.store_id).encode()


class RegisterClient:
    """Sends checkouts and consent changes; one instance per register process."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        metrics: Metrics | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.names = TopicNames(settings.kafka.topic_prefix)
        self.erased = ErasedCheck(settings)
        self.codec = codec or codec_for(settings)
        self.metrics = metrics or Metrics()
        self.stats = DeliveryStats()
        self.principal = principal_of(settings)
        conf = settings.kafka_config(
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "client.id": "receiptflow-register",
                **producer_overrides,
            }
        )
        try:
            self._producer = Producer(conf)
        except KafkaException as exc:
            raise BrokerError(f"cannot create producer: {exc}") from exc

    def _delivered(self, err: KafkaError | None, msg: Message, tag: object = None) -> None:
        topic = msg.topic() or "?"
        if err is not None:
            self.stats.failed += 1
            self.stats.errors.append(str(err))
            if tag is not None:
                self.stats.failed_tags.append((tag, str(err)))
            self.metrics.produce_errors_total.labels(topic).inc()
            log.error("delivery to %s failed: %s", topic, err)
            return
        self.stats.acked += 1
        self.metrics.produced_total.labels(topic).inc()

    def encode_checkout(self, c: Checkout) -> bytes:
        """Avro-encode; a record the schema does not accept raises ValidationError naming the problem."""
        try:
            return self.codec.encode("checkout", c.to_avro())
        except SchemaError as exc:
            raise ValidationError("schema", str(exc)) from exc

    def send(self, c: Checkout, tag: object = None) -> None:
        """Send ``c``; ``tag`` (e.g. an input line number) names it in :attr:`DeliveryStats.failed_tags`."""
        self._produce(self.names.checkouts, checkout_key(c), self.encode_checkout(c), tag)

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Send pre-encoded bytes (used to inject bad input in tests and the simulator)."""
        self._produce(topic, key, value)

    def send_consent(self, change: ConsentChange, tag: object = None) -> None:
        """Send ``change`` as written by this client: its principal stamped (:meth:`stamped`); ValidationError
        (reason ``erased_card``) when its card was erased."""
        if self.erased(change.card_id):
            raise ValidationError(
                "erased_card",
                "this card was erased, and an erased card takes no consent: leave the change out "
                "(a card holder who comes back joins with a new card)",
            )
        change = self.stamped(change)
        try:
            value = self.codec.encode("consent_change", change.to_avro())
        except SchemaError as exc:
            raise ValidationError("schema", str(exc)) from exc
        self._produce(self.names.consents, change.card_id.encode(), value, tag)

    def stamped(self, change: ConsentChange) -> ConsentChange:
        """``change`` with this client's principal and, when it names none, its source as its channel."""
        return stamped(change, self.principal)

    def _produce(self, topic: str, key: bytes | None, value: bytes, tag: object = None) -> None:
        report = self._delivered if tag is None else (lambda err, msg: self._delivered(err, msg, tag))
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room instead of dropping.
                self._producer.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    # This record, not the connection: the caller reports it and goes on.
                    raise ValidationError(
                        "too_large", f"{len(value):,} bytes exceed the producer's message limit"
                    ) from exc
                raise BrokerError(f"produce to {topic} failed: {exc}") from exc
        self._producer.poll(0)

    def close(self) -> None:
        """Close the erased-cards reader (the producer needs nothing more than :meth:`flush`)."""
        self.erased.close()

    def flush(self, timeout: float = 30.0) -> DeliveryStats:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BrokerError(f"{remaining} records not acknowledged within {timeout}s")
        return self.stats
