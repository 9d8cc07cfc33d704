"""The faust-streaming application: the profile agents.

``purchases.customer`` → Redis profiles (``processors.profiles``), handed over a fetch at a time
beneath faust's streams (``processors.profiles.consumer``) so no per-record dispatch is on the hot
path. The effect is applied once per receipt id by the Redis script (its seen-set), so faust's
at-least-once commit (offsets after the batch is handled) is enough here: a redelivered batch
changes nothing.

``consents`` → the same profiles, handed over the same way (a fetch's consent changes before its
purchases): the newest consent state per card is recorded, and a withdrawal of
product-data consent deletes the product-derived fields at once (the script is idempotent and
ignores changes older than the one recorded, so replaying the compacted topic is harmless). This
topic is input from outside: a record that does not decode is dead-lettered with its reason and
position (``receiptflow.dlq``) and the valid changes of the same batch are applied all the same,
so a malformed record can neither stop the agent nor take a withdrawal down with it. Both happen
before the batch's offsets can be committed; a failing Redis or broker is retried, never skipped.

Routing checkouts to the purchase topics is *not* a faust agent: it needs exactly-once output on
Kafka, which ``processors.router`` gets from Kafka transactions directly (see its docstring).

``create_app(settings)`` builds the app; ``receiptflow process`` runs it as a faust worker next to
the router.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import faust
from faust.types import Message
from faust.worker import Worker

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.consent_codec import WrittenConsent, decode_consent, written_at
from receiptflow.dlq import DeadLetterProducer, LetterSealer, Rejected
from receiptflow.erasures import ErasureReader
from receiptflow.errors import BrokerError, ProfileStoreError, ValidationError
from receiptflow.health import CONSUMER_CHECKS, STATE_RESTORED, Readiness
from receiptflow.metrics import Metrics, observe_ages
from receiptflow.models import Purchase
from receiptflow.registry import codec_for
from receiptflow.topics import TopicNames
from receiptflow.validation import CONSENT_MAX_AGE

from .consumer import BatchHandler, ProfilesApp
from .observe import watch
from .store import RedisProfileStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")

BATCH_MAX = 1000  # consent changes per batch at most
ERASURE_POLL_SECONDS = 1.0  # how often the agent looks for new records on the erased-cards topic


def faust_broker_url(settings: Settings) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in settings.kafka.bootstrap_servers.split(",") if h.strip())


def faust_credentials(settings: Settings) -> Any:
    """Translate the librdkafka-style security settings to faust (aiokafka) credentials."""
    proto = settings.kafka.security_protocol
    if proto == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if proto in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka.ssl_ca_location)
        if settings.kafka.ssl_certificate_location:
            password = settings.kafka.ssl_key_password
            context.load_cert_chain(
                settings.kafka.ssl_certificate_location,
                settings.kafka.ssl_key_location,
                password.get_secret_value() if password else None,
            )
    if proto == "SSL":
        return faust.SSLCredentials(context)
    secret = settings.kafka.sasl_password
    return faust.SASLCredentials(
        username=settings.kafka.sasl_username,
        password=secret.get_secret_value() if secret is not None else None,
        mechanism=settings.kafka.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


def create_app(
    settings: Settings,
    *,
    app_id: str | None = None,
    metrics: Metrics | None = None,
    profiles: RedisProfileStore | None = None,
    readiness: Readiness | None = None,
) -> faust.App:
    """Build the faust app with its topics and agents (nothing connects until the worker starts)."""
    names = TopicNames(settings.kafka.topic_prefix)
    codec = codec_for(settings)
    metrics = metrics or Metrics()
    store = profiles or RedisProfileStore.from_settings(settings)

    (settings.local.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app_name = app_id or f"{settings.router.id}-profiles"
    # The faust app id is its consumer group: the letters of this agent name it (the vault's waits: _retry).
    dead_letters = DeadLetterProducer(
        settings, LetterSealer(settings, app_name, app_name, codec=codec), metrics=metrics
    )
    app = _faust_app(settings, app_name)
    readiness = readiness or Readiness("profiles", CONSUMER_CHECKS)
    watch(app, readiness, metrics)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, internal=False, allow_empty=True)

    # Both topics come a fetch at a time, beneath faust's streams (processors.profiles.consumer), the
    # consent changes of a fetch before its purchases: the stricter order when both concern a card.
    consents = _consent_batches(codec, store, dead_letters, metrics, settings.privacy.consent_max_age)
    app.batches(topic(names.consents), consents)
    app.batches(topic(names.purchases_customer), _purchase_batches(settings, codec, store, dead_letters, metrics))
    _follow_erasures(app, settings, store, readiness)
    return app


def _faust_app(settings: Settings, app_name: str) -> ProfilesApp:
    """The faust app (raw bytes in and out, topics from the catalogue, no web server)."""
    return ProfilesApp(
        app_name,
        broker=faust_broker_url(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=settings.kafka.topic_replication_factor,
        topic_partitions=settings.kafka.topic_partitions,
        topic_allow_declare=False,  # topics come from the catalogue (`receiptflow topics create`)
        # No leader election: it subscribes a topic of its own (<app id>-__assignor-__leader), which is
        # not in the catalogue, and only an `on_leader` task or timer would need it (there is none).
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        datadir=str(settings.local.data_dir / "faust"),
        fetch_wait_ms=settings.profiles.fetch_wait_ms,
    )


def _consent_batches(
    codec: Codec, store: RedisProfileStore, dead_letters: DeadLetterProducer, metrics: Metrics, max_age: timedelta
) -> BatchHandler:
    """The handler of a fetch of ``consents``: the valid changes applied, then the rest dead-lettered."""

    async def apply_consents(messages: Sequence[Message]) -> None:
        for first in range(0, len(messages), BATCH_MAX):
            changes, rejected = decode_consents(codec, messages[first : first + BATCH_MAX], max_age)
            # The valid changes first: a withdrawal must not wait for the dead-letter topic.
            await _retry(functools.partial(store.apply_consents, changes), "consent batch")
            metrics.profile_consent_changes_total.inc(len(changes))
            if rejected:
                await _retry(functools.partial(dead_letters.send, rejected), "dead letters")

    return apply_consents


def _purchase_batches(
    settings: Settings, codec: Codec, store: RedisProfileStore, dead_letters: DeadLetterProducer, metrics: Metrics
) -> BatchHandler:
    """The handler of a fetch of ``purchases.customer``: profiles updated, records it cannot read dead-lettered."""

    async def update_profiles(messages: Sequence[Message]) -> None:
        for first in range(0, len(messages), settings.profiles.batch_max):
            chunk = messages[first : first + settings.profiles.batch_max]
            started = time.perf_counter()
            batch, rejected = decode_purchases(codec, chunk)
            await _apply_profiles(store, batch, metrics)
            if rejected:
                # No record stops the agent: one it cannot read goes to the dead-letter topic with
                # its reason (restarting would only read it again, for ever).
                await _retry(functools.partial(dead_letters.send, rejected), "dead letters")
            observe_ages(metrics.checkout_to_output_seconds.labels("profiles"), time.time(), stamps_ms(chunk))
            metrics.batch_seconds.labels("profiles").observe(time.perf_counter() - started)

    return update_profiles


def _follow_erasures(app: faust.App, settings: Settings, store: RedisProfileStore, readiness: Readiness) -> None:
    """Add the task that keeps the profile store in step with the erased-cards topic."""

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is not annotated
    async def follow_erasures() -> None:
        # The erased-cards topic is the record every store follows: a profile store that never saw
        # an erasure (a new Redis, a restored backup) learns it here before it could keep a profile.
        reader = ErasureReader(settings)
        loop = asyncio.get_running_loop()
        try:
            erased = await loop.run_in_executor(None, reader.read_to_end)
            while True:
                if erased:
                    added = await _retry(functools.partial(store.record_erased, erased), "erased-cards record")
                    log.info("erased-cards record: %d card(s), %d new to this profile store", len(erased), added)
                readiness.mark(STATE_RESTORED)  # the erased cards known before the first purchase
                await asyncio.sleep(ERASURE_POLL_SECONDS)
                erased = await loop.run_in_executor(None, reader.poll)
        finally:
            reader.close()


def _rejected(error: ValidationError, m: Any) -> Rejected:
    """A faust message rejected for ``error``: where it was read and its original bytes, to dead-letter."""
    return Rejected(error, str(m.topic), int(m.partition), int(m.offset), m.key, m.value)


def decode_consents(
    codec: Codec, messages: Sequence[Any], max_age: timedelta = CONSENT_MAX_AGE
) -> tuple[list[WrittenConsent], list[Rejected]]:
    """The consent changes of a batch of ``consents`` records (faust messages), each with its append time,
    and the records that are refused (they do not decode, or their time is out of bounds when they
    were written), to be dead-lettered. Tombstones (erased cards) are neither."""
    changes: list[WrittenConsent] = []
    rejected: list[Rejected] = []
    now = datetime.now(UTC)
    for m in messages:
        appended = round(m.timestamp * 1000) if m.timestamp else 0  # faust gives ms / 1000.0: round, never truncate
        try:
            change = decode_consent(codec, m.value, written_at(appended, now), max_age)
        except ValidationError as exc:
            rejected.append(_rejected(exc, m))
            continue
        if change is not None:
            changes.append(WrittenConsent.of(change, appended, int(m.offset)))
    return changes, rejected


def decode_purchases(codec: Codec, messages: Sequence[Any]) -> tuple[list[Purchase], list[Rejected]]:
    """The purchases of a batch, and the records that are not purchases (to dead-letter)."""
    purchases: list[Purchase] = []
    rejected: list[Rejected] = []
    for m in messages:
        try:
            purchases.append(Purchase.from_avro(codec.decode(m.value, expect="purchase").value))
        except ValidationError as exc:
            rejected.append(_rejected(exc, m))
        except (KeyError, TypeError, ValueError) as exc:
            rejected.append(_rejected(ValidationError("undecodable", f"not a purchase: {exc}"), m))
    return purchases, rejected


def stamps_ms(messages: Sequence[Message]) -> list[int]:
    """The record timestamps (ms) of a batch of faust messages (faust gives seconds; None when absent).

    A purchase's timestamp is the append time of the checkout it was routed from (the router sets it).
    """
    return [int(m.timestamp * 1000) for m in messages if m.timestamp]


async def _retry(call: Callable[[], _T], what: str) -> _T:
    attempt = 0
    while True:
        try:
            return call()
        except (ProfileStoreError, BrokerError) as exc:
            # Redis or the broker briefly unavailable: retry with backoff instead of acking unapplied records.
            attempt += 1
            log.warning("%s failed (attempt %d): %s", what, attempt, exc)
            await asyncio.sleep(min(0.1 * 2**attempt, 5.0))


async def _apply_profiles(store: RedisProfileStore, batch: Sequence[Purchase], metrics: Metrics) -> None:
    result = await _retry(functools.partial(store.apply_all, batch), "profile batch")
    metrics.profile_updates_total.inc(result.applied)
    if result.duplicates:
        metrics.duplicates_total.labels("profiles").inc(result.duplicates)
    if result.late:
        metrics.profile_late_total.inc(result.late)
    if result.erased:
        metrics.profile_erased_total.inc(result.erased)


def run_worker(app: faust.App, loglevel: str = "warning") -> None:
    """Run the app as a faust worker until SIGTERM/SIGINT (blocks)."""
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
