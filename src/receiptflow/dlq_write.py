"""Writing dead letters: the letter of a rejected record, sealed, and the producer that sends it.

Every component that rejects input (the router, the profile agent, the sink, the aggregator) makes its
letters with a :class:`LetterSealer`: the ``dead_letter`` v2 record names the component instance
(``processor``) and the consumer group whose read rejected it (``consumer_group``), keeps the card's
salted hash, never the card id, and keeps the original key and value sealed (:mod:`.dlq_seal`) under
the card's data key from the vault (:mod:`.dlq_vault`). A record of an erased card keeps nothing.

When the vault does not answer, :meth:`LetterSealer.letter` raises
:class:`~receiptflow.errors.DeadLetterVaultError` and the writer keeps the record unacknowledged: it
does not move its position past it, waits (backing off) and reads it again. A letter is never written
without its seal, and never skipped.

:class:`DeadLetterProducer` is how the profile agent and the sink reject a record they cannot decode
(a ``consents`` record is read by :func:`receiptflow.consent_codec.decode_consent`, as every reader of
the topic does), before they go on with the next. A dead letter is written before the reader's
position moves past its record (the agent's offset commit, the sink's offsets in the warehouse), with
an idempotent producer: a crash in between writes it again on the next start, so the dead-letter topic
holds every rejected record at least once; a repeat has the same source topic, partition, offset and
consumer group, and replay sends its bytes once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .card_hash import CardHasher
from .codec import Codec
from .config import Settings
from .dlq_seal import PSEUDONYMOUS_TOPICS, Original, Payload, associated_data, card_of, payload_for, seal
from .dlq_vault import RedisVault, Vault, install_key
from .errors import BrokerError, ValidationError
from .metrics import Metrics
from .registry import codec_for
from .secrets import erasure_salt
from .topics import TopicNames

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record a reader could not use, where it was read, and why."""

    error: ValidationError
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter ready to produce: its Kafka key (the card hash, never the card id) and record."""

    key: bytes | None
    record: dict[str, Any]

    @property
    def payload(self) -> Payload:
        return Payload(self.record["payload"])


class LetterSealer:
    """Makes the dead letters of one consumer: ``processor`` (the instance) of ``consumer_group``.

    The vault (Redis, role ``dlq-vault``) and the erasure salt are taken on first need: a letter of a
    pseudonymous topic (the aggregator's baskets) needs neither.
    """

    def __init__(
        self,
        settings: Settings,
        processor: str,
        consumer_group: str,
        *,
        codec: Codec | None = None,
        vault: Vault | None = None,
        hasher: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.consumer_group = consumer_group
        self.names = TopicNames(settings.kafka.topic_prefix)
        self.codec = codec or codec_for(settings)
        self._vault = vault
        self._hasher = hasher
        self.backoff = VaultBackoff(processor)  # how its writer waits while the vault does not answer

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = RedisVault.from_settings(self.settings)
        return self._vault

    def card_hash(self, card: str) -> str:
        if self._hasher is None:
            self._hasher = CardHasher(erasure_salt(self.settings))
        return self._hasher(card)

    def _decoded(self, value: bytes | None) -> dict[str, object]:
        return self.codec.decode(value).value

    def letter(self, r: Rejected, now: datetime) -> Letter:
        """The letter of ``r`` rejected at ``now``. Raises DeadLetterVaultError when the vault does not answer."""
        logical = self.names.logical(r.topic)
        card = None if logical in PSEUDONYMOUS_TOPICS else card_of(self._decoded, r.key, r.value)
        subject = None if card is None else self.card_hash(card)
        data_key = None if subject is None else self.vault.key_for_writing(subject)
        payload = payload_for(logical, card, erased=subject is not None and data_key is None)
        record: dict[str, Any] = {
            "reason": r.error.reason,
            "message": r.error.message,
            "field": r.error.field,
            "source_topic": r.topic,
            "source_partition": r.partition,
            "source_offset": r.offset,
            "original_key": None,
            "original_value": None,
            "failed_at": now,
            "processor": self.processor,
            "consumer_group": self.consumer_group,
            "payload": payload.value,
            "card_hash": subject,
            "sealed": None,
        }
        original = Original(r.key, r.value)
        aad = associated_data(r.topic, r.partition, r.offset, subject)
        if payload is Payload.CARD:
            assert data_key is not None  # payload_for says CARD only with a key
            record["sealed"] = seal(data_key, original, aad)
        elif payload is Payload.INSTALL:
            record["sealed"] = seal(install_key(self.vault), original, aad)
        elif payload is Payload.CLEAR:
            record["original_key"], record["original_value"] = r.key, r.value
        # Keyed by the card hash: a repeat after a crash lands beside the first, and no card id is in the key.
        key = subject.encode() if subject is not None else (r.key if payload is Payload.CLEAR else r.topic.encode())
        return Letter(key, record)

    def encoded(self, r: Rejected, now: datetime) -> tuple[bytes | None, bytes]:
        """The letter of ``r`` as the Kafka key and value to produce (see :meth:`letter`)."""
        letter = self.letter(r, now)
        return letter.key, self.codec.encode("dead_letter", letter.record)


class DeadLetterProducer:
    """Writes rejected records to the dead-letter topic and waits until the broker has them.

    ``sealer`` names the rejecting component and consumer group in each letter and seals it. The
    Kafka producer is created on first use (an app that never rejects anything opens no connection).
    """

    def __init__(self, settings: Settings, sealer: LetterSealer, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.sealer = sealer
        self.topic = TopicNames(settings.kafka.topic_prefix).checkouts_dlq
        self.metrics = metrics
        self._producer: Producer | None = None

    def send(self, rejected: list[Rejected], timeout: float = 30.0) -> None:
        """Dead-letter ``rejected``; returns once every one is acknowledged.

        Raises DeadLetterVaultError (nothing sent: the vault did not answer) or BrokerError.
        """
        if not rejected:
            return
        now = datetime.now(UTC)
        # Every letter sealed before any is sent: a vault failure sends nothing, the caller retries all.
        letters = [self.sealer.letter(r, now) for r in rejected]
        if self._producer is None:
            try:
                self._producer = Producer(
                    self.settings.kafka_config(
                        **{"enable.idempotence": True, "acks": "all", "client.id": f"{self.sealer.processor}-dlq"}
                    )
                )
            except KafkaException as exc:
                raise BrokerError(f"cannot create the dead-letter producer: {exc}") from exc
        failures: list[str] = []

        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        try:
            for letter in letters:
                value = self.sealer.codec.encode("dead_letter", letter.record)
                self._producer.produce(self.topic, key=letter.key, value=value, on_delivery=report)
            remaining = self._producer.flush(timeout)
        except (KafkaException, BufferError) as exc:
            raise BrokerError(f"cannot write to {self.topic}: {exc}") from exc
        if remaining or failures:
            raise BrokerError(f"{self.topic}: {remaining} dead letters not acknowledged, failures: {failures[:3]}")
        for r in rejected:
            log.warning(
                "dead-lettered %s[%d]@%d (%s): %s", r.topic, r.partition, r.offset, self.sealer.processor, r.error
            )
            if self.metrics is not None:
                self.metrics.dead_letters_total.labels(r.error.reason).inc()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


class VaultBackoff:
    """How a dead-letter writer waits for the vault: its batch aborted, pauses doubling up to 30 s.

    A letter written unsealed would carry the card id, a letter skipped would be lost: the writer keeps
    its position before the batch, waits and reads the batch again, for as long as the vault is away.
    """

    def __init__(self, name: str, sleep: Callable[[float], None] = time.sleep, longest: float = 30.0) -> None:
        self.name = name
        self.failures = 0
        self._sleep = sleep
        self._longest = longest

    def pause(self) -> float:
        """How long the next wait is (0.5 s, doubling)."""
        return min(0.5 * 2.0 ** min(max(self.failures - 1, 0), 16), self._longest)

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        pause = self.pause()
        log.warning(
            "%s: cannot seal a dead letter (%s); the batch waits %.1f s and is read again", self.name, exc, pause
        )
        self._sleep(pause)

    def succeeded(self) -> None:
        self.failures = 0
