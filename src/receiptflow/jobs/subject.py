"""Subject access and erasure for one loyalty card: ``receiptflow export`` and ``receiptflow erase``.

``export_card`` gathers everything held about a card: the Redis profile (full view, segments), its
consent history (the warehouse's consent audit, written order, in words and local time: when, what
changed, through which channel, written by which principal, to which consent text; and the newest
state in the profile), the warehouse
rows (receipts, their items and groups) and, because Kafka topics are append-only logs that no
erasure can edit, which topics may still hold its records, with their retention as the broker
reports it and the time until which records may remain (:func:`topic_retention`). For an erased
card it also says when it was erased and which erasure steps are done. ``held`` is true while any
store holds something or any of those topics may still hold records of the card.

``erase_card`` removes it. It either completes everywhere or changes nothing, and it can be resumed:

0. **Checks, changing nothing.** Redis answers, the broker answers and has the erased-cards and
   consents topics, the warehouse opens (DuckDB allows one writing process per file: while
   ``sink run`` holds it, erase refuses and says to stop the sink; PostgreSQL: the connection). The
   warehouse stays open until the end, so no sink can take the DuckDB file in between.
1. ``record``: the card's salted hash goes to the erased-cards topic (``consents.erased``, acks=all,
   idempotent producer; :mod:`receiptflow.erasures`). From here on every reader keeps the card out:
   the sinks and replays of every warehouse and the router, whatever happens to the steps after.
2. ``retraction``: an erasure retraction for the card (reason ``erasure``, scope ``all``, effective at
   the erasure time) on ``purchases.retractions`` (acks=all), so the consumers of
   ``purchases.marketing`` delete what they hold of it (GDPR Art. 17(2), 19; the contract is in
   docs/design.md). It follows the record: from then on the router writes nothing more of the card,
   so the retraction covers every marketing record there will ever be of it. A resumed run publishes
   it again with the same effective time (consumers apply a retraction idempotently).
3. ``profile``: in one Redis transaction on the card's slot its erased marker ``rf:{hash}:x`` is set
   (which the live profile scripts check, so a replayed purchase or consent change never brings the
   card back) and the card's profile keys and its dead-letter data key ``rf:{hash}:k`` are deleted
   (the card's dead letters can no longer be opened: :mod:`receiptflow.dlq_vault`); then the hash
   joins the audit list ``rf:erased`` and the card's marketing projection (``rf:m:{mhash}``, another
   slot) is deleted with its guard.
4. ``warehouse``: in one transaction (``sinks.card_rows.delete_card``) the hash joins the warehouse's
   ``erased_cards`` and the card's rows are deleted (on PostgreSQL under the erasure lock, so batches
   in flight finish first and later ones see the hash).
5. ``consents``: a tombstone (null value) for the card's key on the compacted ``consents`` topic, so
   compaction drops its consent history and the router forgets it on its next restore.

After each step an audit entry goes to the Redis stream ``rf:audit:erasures``: the step, when, the
salted hash, the run it belongs to and what it did — never the card id. Every step is idempotent, so
a run that stops after step 1 (a store became unreachable) leaves the card erased for every reader,
says so, and running ``erase`` again does every step again and completes it (:func:`plan_erasure`
decides, from the erased-cards topic, whether a run resumes an earlier erasure and which time it
records). The audit stream lives with the profiles in Redis (append-only, persisted with its AOF);
the durable fact that the card is erased is the topic record.

Records of the card on the purchase topics and ``checkouts`` are not compacted: they expire with
each topic's retention (until then the erased-cards records keep them out of every store), and
``export`` says until when. The card's dead letters stay on ``checkouts.dlq`` until its retention
too, sealed under the deleted key: nobody can read them, and ``dlq replay`` skips them.

``record_erased_in_profiles`` copies the topic into a profile store's erased markers (``profiles
rebuild`` calls it before writing into a Redis that may never have seen an erasure), and
``record_existing`` (``erase --record-existing``) puts cards erased before the topic existed on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ..acknowledged import produce_acknowledged
from ..config import Settings
from ..dlq_vault import data_key_name
from ..erasures import erased_at, erased_cards, record_erasure, record_erasures
from ..errors import BrokerError, ErasureIncompleteError, ProfileStoreError, ReceiptflowError, WarehouseError
from ..processors.profiles.keys import ERASED_KEY
from ..processors.profiles.store import RedisProfileStore
from ..processors.profiles.views import render
from ..redis_auth import RedisRole
from ..registry import codec_for
from ..retractions import erasure_retraction
from ..sinks import Sink, open_sink
from ..sinks.card_rows import delete_card, export_rows
from ..sinks.read_only import open_warehouse
from ..topics import CARD_LINKED, TopicNames, describe_topic_configs
from .consent_history import consent_history
from .erasure_plan import STEPS, ErasurePlan, missing_from_topic, plan_erasure, steps_done, topic_retention
from .looks import Looker, record_look

AUDIT_STREAM = "rf:audit:erasures"


# --- export --------------------------------------------------------------------------------------
def export_card(
    settings: Settings, card_id: str, now: datetime | None = None, *, who: Looker, kind: str = "export"
) -> dict[str, Any]:
    """Everything held about ``card_id`` as one JSON-ready document (see the module docstring), after
    the look's entry in the audit of looks (``kind`` "export", or "download" from the page)."""
    now = now or datetime.now(UTC)
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    subject = store.erased_hash(card_id)
    record_look(store.client, who, kind, subject)  # no entry, no look: before anything is read
    profile = store.get(card_id)
    with open_warehouse(settings) as warehouse:  # read-only: an export changes nothing
        rows = export_rows(warehouse, card_id)
    consents = consent_history(rows.pop("consent_changes"))  # as the card holder reads it, in local time
    when = erased_at(settings, subject)
    names = TopicNames(settings.kafka.topic_prefix)
    physical = [names.physical(t) for t in CARD_LINKED]
    configs = describe_topic_configs(settings, physical)
    topics = [topic_retention(t, configs[t], when or now, erased=when is not None) for t in physical if t in configs]
    doc: dict[str, Any] = {
        "card_id": card_id,
        "exported_at": now.isoformat(),
        "profile": None,
        "consent_history": consents,
        "warehouse": rows,
        "erasure": None,
        "topics": topics,
    }
    if profile is not None:
        doc["profile"] = render(profile, "full", now, segments=store.segments(card_id))
    if when is not None:
        done = steps_done(audit_log(settings), subject)
        doc["erasure"] = {
            "erased_at": when.isoformat(),
            "subject": subject,
            "steps_done": done,
            "complete": all(s in done for s in STEPS),
        }
    held_in = [
        name for name, present in (("profile", profile is not None), ("consent_history", bool(consents))) if present
    ]
    held_in += [f"warehouse.{t}" for t, r in rows.items() if r]
    # Topics can only be said to hold the card once it is known somewhere (a store, or erased): a
    # card never seen has nothing to bound.
    if held_in or when is not None:
        held_in += [
            f"topic:{t['topic']}"
            for t in topics
            if t["may_hold_until"] is None or datetime.fromisoformat(t["may_hold_until"]) > now
        ]
    doc["held_in"] = held_in
    doc["held"] = bool(held_in)
    return doc


# --- erase ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Erasure:
    subject: str  # the salted hash: what the audit log and the erased-cards records keep
    at: datetime  # when the card was (first) erased
    redis_keys: int
    warehouse_rows: Mapping[str, int]
    tombstones: int
    audit_id: str  # the last audit entry of this run
    resumed: bool = False  # an earlier run had recorded the erasure
    audit_ids: tuple[str, ...] = field(default=())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tombstone(settings: Settings, card_id: str) -> int:
    topic = TopicNames(settings.kafka.topic_prefix).consents
    produce_acknowledged(settings, topic, [(card_id.encode(), None)], what="the tombstone")
    return 1


def _check_kafka(settings: Settings) -> None:
    names = TopicNames(settings.kafka.topic_prefix)
    try:
        topics = AdminClient(settings.kafka_config()).list_topics(timeout=10).topics
    except KafkaException as exc:
        raise BrokerError(
            f"erase refused, nothing changed: Kafka at {settings.kafka.bootstrap_servers} does not answer "
            f"({_first_line(exc)}); start it and run erase again"
        ) from exc
    missing = [t for t in (names.consents_erased, names.consents, names.retractions) if t not in topics]
    if missing:
        raise BrokerError(
            f"erase refused, nothing changed: topics {', '.join(missing)} do not exist; "
            "run `receiptflow topics create`, then erase again"
        )


def _open_warehouse(settings: Settings) -> Sink:
    try:
        return open_sink(settings)
    except WarehouseError as exc:
        what = _first_line(exc)
        held = "lock" in f"{exc} {exc.__cause__}".lower() or "in use by another process" in str(exc)
        if settings.resolved_warehouse_url.startswith("duckdb") and held:
            raise WarehouseError(
                "erase refused, nothing changed: the DuckDB warehouse is in use by another process "
                "(a running `receiptflow sink run`?); stop the sink, run erase again, then start the sink"
            ) from exc
        raise WarehouseError(
            f"erase refused, nothing changed: the warehouse cannot be opened ({what}); fix that and run erase again"
        ) from exc


def _preflight(settings: Settings) -> tuple[RedisProfileStore, Sink]:
    """Everything erase needs, checked before anything is changed; the warehouse is returned open."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)  # ConfigError without the install's salt
    try:
        store.client.ping()
    except redis.RedisError as exc:
        raise ProfileStoreError(
            f"erase refused, nothing changed: Redis does not answer ({_first_line(exc)}); start it and run erase again"
        ) from exc
    _check_kafka(settings)
    return store, _open_warehouse(settings)


def erase_card(settings: Settings, card_id: str, now: datetime | None = None) -> Erasure:
    """Erase ``card_id`` everywhere (see the module docstring for the steps, their order and why).

    Raises before changing anything when a store is unreachable or the warehouse is locked, and
    :class:`ErasureIncompleteError` when a step after the topic record fails (run it again).
    """
    store, sink = _preflight(settings)
    try:
        subject = store.erased_hash(card_id)
        plan = plan_erasure(erased_at(settings, subject), now or datetime.now(UTC))
        steps = _EraseSteps(settings, store, sink, card_id, subject, plan)
        ids = _run_steps(store, subject, plan, steps.actions())
    finally:
        sink.close()
    return Erasure(
        subject,
        plan.erased_at,
        steps.redis_keys,
        steps.rows,
        steps.tombstones,
        ids[-1],
        plan.resumed,
        tuple(ids),
    )


@dataclass
class _EraseSteps:
    """The steps of one card's erasure, each returning the detail of its audit entry, and what they removed."""

    settings: Settings
    store: RedisProfileStore
    sink: Sink
    card_id: str
    subject: str
    plan: ErasurePlan
    redis_keys: int = 0
    rows: Mapping[str, int] = field(default_factory=dict)
    tombstones: int = 0

    def actions(self) -> dict[str, Callable[[], str]]:
        return {
            "record": self.record,
            "retraction": self.retraction,
            "profile": self.profile,
            "warehouse": self.warehouse,
            "consents": self.consents,
        }

    def record(self) -> str:
        record_erasure(self.settings, self.subject, self.plan.erased_at)
        return "recorded"

    def retraction(self) -> str:
        retraction = erasure_retraction(self.card_id, self.plan.erased_at, datetime.now(UTC))
        value = codec_for(self.settings).encode("retraction", retraction.to_avro())
        topic = TopicNames(self.settings.kafka.topic_prefix).retractions
        produce_acknowledged(self.settings, topic, [(self.card_id.encode(), value)], what="the erasure retraction")
        return "published"

    def profile(self) -> str:
        store = self.store
        keys = store.keys_for(self.card_id)
        try:
            # The marker and the deletion in one transaction: every key is in the card's slot.
            pipe = store.client.pipeline(transaction=True)
            pipe.execute_command("SET", keys.erased, int(self.plan.erased_at.timestamp() * 1000), "NX")
            # With the profile, the card's dead-letter data key: its letters can no longer be opened.
            pipe.execute_command("DEL", *keys.data, data_key_name(self.subject))
            _, removed = pipe.execute()
            store.client.sadd(ERASED_KEY, self.subject)  # the audit list, in another slot
            # The marketing projection and its guard, in the slot of the card's marketing hash: deleting
            # the guard also stops a projection a writer made from the profile before it was deleted.
            projection = store.client.delete(*store.projections.keys(self.card_id)) if store.projections else 0
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot erase the profile: {exc}") from exc
        self.redis_keys = int(removed)
        return f"redis_keys={self.redis_keys} projection_keys={int(projection)}"

    def warehouse(self) -> str:
        self.rows = delete_card(self.sink.warehouse, self.card_id, self.subject, self.plan.erased_at)
        return ",".join(f"{t}={n}" for t, n in sorted(self.rows.items()))

    def consents(self) -> str:
        self.tombstones = _tombstone(self.settings, self.card_id)
        return f"tombstones={self.tombstones}"


def _run_steps(
    store: RedisProfileStore, subject: str, plan: ErasurePlan, actions: Mapping[str, Callable[[], str]]
) -> list[str]:
    """Do the plan's steps in order, each followed by its audit entry; the ids of the entries written."""
    run = uuid.uuid4().hex[:12]
    ids: list[str] = []
    if plan.resumed:
        ids.append(_audit(store, subject, plan, run, "record", "already recorded"))
    for step in plan.steps:
        try:
            detail = actions[step]()
        except ReceiptflowError as exc:
            if step == "record":
                raise BrokerError(f"erase failed before changing anything: {_first_line(exc)}") from exc
            raise ErasureIncompleteError(
                f"erasure stopped at step '{step}': {_first_line(exc)}. The card is recorded as erased, so "
                "no store takes it in again; fix the cause and run erase again for this card to complete it"
            ) from exc
        try:
            ids.append(_audit(store, subject, plan, run, step, detail))
        except ReceiptflowError as exc:
            raise ErasureIncompleteError(
                f"erasure step '{step}' was done but its audit entry could not be written: {_first_line(exc)}. "
                "The card is recorded as erased; run erase again for this card to complete and audit it"
            ) from exc
    return ids


def _audit(store: RedisProfileStore, subject: str, plan: ErasurePlan, run: str, step: str, detail: str) -> str:
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "erased_at": plan.erased_at.isoformat(),
        "subject": subject,
        "run": run,
        "step": step,
        "detail": detail,
    }
    try:
        return str(store.client.xadd(AUDIT_STREAM, entry))  # type: ignore[arg-type]
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot write the erasure audit entry: {exc}") from exc


def audit_log(settings: Settings) -> list[dict[str, str]]:
    """Every erasure step recorded, oldest first."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    try:
        entries = store.client.xrange(AUDIT_STREAM)
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot read the erasure audit log: {exc}") from exc
    return [{"id": str(i), **{str(k): str(v) for k, v in fields.items()}} for i, fields in entries]  # type: ignore[union-attr]


def record_existing(settings: Settings, now: datetime | None = None) -> int:
    """Put on the erased-cards topic every card the stores record as erased but the topic lacks —
    cards erased before the topic existed — so every warehouse keeps them out too. Checks the stores
    first as ``erase`` does; one audit entry per card. Returns how many were recorded."""
    store, sink = _preflight(settings)
    try:
        try:
            in_profiles = [str(h) for h in store.client.smembers(ERASED_KEY)]
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read the erased-cards record: {exc}") from exc
        in_warehouse = [(str(h), at) for h, at in sink.warehouse.query("SELECT card_hash, erased_at FROM erased_cards")]
    finally:
        sink.close()
    missing = missing_from_topic(erased_cards(settings), in_profiles, in_warehouse, now or datetime.now(UTC))
    if not missing:
        return 0
    record_erasures(settings, missing)
    run = uuid.uuid4().hex[:12]
    for subject, at in sorted(missing.items()):
        plan = ErasurePlan(at, False, ("record",))
        _audit(store, subject, plan, run, "record", "recorded from the stores (erased before the topic existed)")
    return len(missing)


def record_erased_in_profiles(settings: Settings, store: RedisProfileStore) -> int:
    """Copy every hash on the erased-cards topic into ``store``'s erased markers (what the profile
    scripts check) and its ``rf:erased`` list, so a profile store that never saw an erasure — a new
    Redis that ``profiles rebuild`` fills — keeps those cards out as well. Returns how many markers
    were new to it."""
    return store.record_erased(erased_cards(settings))


def erased_in_profiles(settings: Settings, card_id: str) -> bool:
    """Whether the profile store has ``card_id``'s erased marker (what the profile scripts check)."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    try:
        return bool(store.client.exists(store.keys_for(card_id).erased))
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot read the erased-cards record: {exc}") from exc
