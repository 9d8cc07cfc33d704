"""The router's state per partition and its changelog format: what a worker knows, and how it is kept.

A worker keeps, per partition number, the receipt ids it has routed (dedup) and each card's consent
history. Changes made by the open transaction are staged apart (:class:`Staged`) and merged into the
state, and counted in the worker's stats and metrics, only once the transaction commits.

Receipt ids reach the compacted changelog ``processor.receipts-seen`` in the transaction that routed
them, one record per transaction and partition (:func:`seen_records`, packed by :func:`pack_seen`),
and are read back when a worker is assigned the partition (:func:`restore`), together with the
consent changes on ``consents`` up to the group's committed offset. The older changelog format, one
record per receipt id (key = id, value = event time in ms), is still read.
"""

from __future__ import annotations

import struct
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, TIMESTAMP_NOT_AVAILABLE, Message, TopicPartition

from receiptflow.errors import ValidationError
from receiptflow.kafka_read import AssignableConsumer, ReadToEnd
from receiptflow.metrics import Metrics, observe_ages
from receiptflow.models import ConsentChange
from receiptflow.topics import TopicNames

from .consent import ConsentHistory, with_record

_MS = struct.Struct(">q")
_SEEN_ENTRY = struct.Struct(">qH")  # event time (ms), length of the receipt id in bytes
# Header marking a dedup changelog record that holds the receipt ids of one transaction for one
# partition (the older format, still read, is one record per receipt id: key = id, value = ms).
SEEN_BATCH_HEADER = ("receiptflow-seen", b"batch-v1")
# Receipt ids per batch record: keeps a record far below the broker's 1 MB default message limit.
SEEN_PER_RECORD = 10_000
# A state restore that reads nothing for this long fails the worker (see restore).
RESTORE_STALL_SECONDS = 90.0


def ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dataclass
class PartitionState:
    """What a worker knows about one partition number: receipt ids seen and consent histories."""

    seen: dict[str, int] = field(default_factory=dict)  # receipt id -> event time (ms)
    consent: dict[str, ConsentHistory] = field(default_factory=dict)  # card id -> history


@dataclass
class RouterStats:
    """What a worker has done, counted per committed transaction."""

    batches: int = 0
    consumed: int = 0
    routed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    consent_changes: int = 0
    aborted: int = 0
    erased: int = 0  # checkouts and consent changes of erased cards dropped
    retractions: int = 0


@dataclass
class Staged:
    """Changes made by the open transaction; merged into the state only after it commits."""

    seen: dict[tuple[int, str], int] = field(default_factory=dict)
    consent: dict[tuple[int, str], ConsentHistory] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # Counted once the transaction commits (an aborted batch is processed again).
    consumed: Counter[str] = field(default_factory=Counter)  # topic -> records
    routed: Counter[str] = field(default_factory=Counter)  # output topic -> records
    processed: Counter[str] = field(default_factory=Counter)  # chain -> receipts routed
    stores: Counter[str] = field(default_factory=Counter)  # store -> receipts routed
    dead_letters: Counter[str] = field(default_factory=Counter)  # reason -> records
    granularity: Counter[tuple[str, str]] = field(default_factory=Counter)  # (chain, level applied) -> receipts
    marketing: Counter[str] = field(default_factory=Counter)  # consent outcome for marketing -> receipts
    appended: list[int] = field(default_factory=list)  # broker append time (ms) of each checkout routed
    duplicates: int = 0
    consent_changes: int = 0
    erased: Counter[str] = field(default_factory=Counter)  # input kind (checkout, consent) -> dropped
    retractions: Counter[str] = field(default_factory=Counter)  # scope -> retractions written
    # Card ids the transaction routes or changes consent for: checked against erasures learned
    # before it commits (kept in memory only, never written).
    cards: set[str] = field(default_factory=set)

    def history(self, state: Mapping[int, PartitionState], partition: int, card: str) -> ConsentHistory | None:
        """The card's consent history as this transaction sees it: staged first, then committed."""
        staged_history = self.consent.get((partition, card))
        if staged_history is not None:
            return staged_history
        committed = state.get(partition)
        return committed.consent.get(card) if committed is not None else None

    def is_duplicate(self, state: Mapping[int, PartitionState], partition: int, receipt_id: str) -> bool:
        committed = state.get(partition)
        return (partition, receipt_id) in self.seen or (committed is not None and receipt_id in committed.seen)

    def report(self, stats: RouterStats, metrics: Metrics, consumed: int, committed_at: float) -> None:
        """Add a committed transaction to the stats and metrics (per batch: per-record label lookups cost).

        ``committed_at`` (seconds since the epoch) is when the transaction committed: the routed
        checkouts' end-to-end time is measured from their append to it.
        """
        m, st = metrics, stats
        st.batches += 1
        st.consumed += consumed
        st.routed += sum(self.processed.values())
        st.duplicates += self.duplicates
        st.dead_letters += sum(self.dead_letters.values())
        st.consent_changes += self.consent_changes
        m.transactions_total.labels("committed").inc()
        for topic, n in self.consumed.items():
            m.consumed_total.labels(topic).inc(n)
        for topic, n in self.routed.items():
            m.routed_total.labels(topic).inc(n)
        for chain, n in self.processed.items():
            m.processed_total.labels(chain).inc(n)
        for store, n in self.stores.items():
            m.store_checkouts_total.labels(store).inc(n)
        for reason, n in self.dead_letters.items():
            m.dead_letters_total.labels(reason).inc(n)
        for (chain, level), n in self.granularity.items():
            m.routed_granularity_total.labels(chain, level).inc(n)
        for outcome, n in self.marketing.items():
            m.marketing_consent_total.labels(outcome).inc(n)
        if self.appended:
            observe_ages(m.checkout_to_output_seconds.labels("router"), committed_at, self.appended)
        if self.duplicates:
            m.duplicates_total.labels("router").inc(self.duplicates)
        if self.consent_changes:
            m.consent_changes_total.inc(self.consent_changes)
        for kind, n in self.erased.items():
            m.erased_dropped_total.labels(kind).inc(n)
        st.erased += sum(self.erased.values())
        for scope, n in self.retractions.items():
            m.retractions_total.labels("withdrawal", scope).inc(n)
        st.retractions += sum(self.retractions.values())

    def commit_into(self, state: dict[int, PartitionState]) -> None:
        """Merge the staged receipt ids and consent histories into ``state`` (the transaction committed)."""
        for (p, rid), at in self.seen.items():
            state.setdefault(p, PartitionState()).seen[rid] = at
        for (p, card), history in self.consent.items():
            state.setdefault(p, PartitionState()).consent[card] = history


def pack_seen(entries: Iterable[tuple[str, int]]) -> bytes:
    """Receipt ids with their event times (ms), as one dedup changelog value."""
    out = bytearray()
    for rid, at in entries:
        raw = rid.encode()
        out += _SEEN_ENTRY.pack(at, len(raw))
        out += raw
    return bytes(out)


def unpack_seen(value: bytes) -> list[tuple[str, int]]:
    """The inverse of :func:`pack_seen`; raises ``ValueError`` on a truncated value."""
    entries = []
    at_byte, end = 0, len(value)
    while at_byte < end:
        if at_byte + _SEEN_ENTRY.size > end:
            raise ValueError("truncated dedup changelog entry")
        at, size = _SEEN_ENTRY.unpack_from(value, at_byte)
        at_byte += _SEEN_ENTRY.size
        if at_byte + size > end:
            raise ValueError("truncated receipt id in dedup changelog entry")
        entries.append((value[at_byte : at_byte + size].decode(), at))
        at_byte += size
    return entries


def seen_records(staged: Staged, producer_id: str) -> list[tuple[int, bytes, bytes]]:
    """The transaction's receipt ids as changelog records (partition, key, value), one per partition.

    Written inside the transaction, to the partition of the checkouts they came from, so the
    worker that is assigned that partition next reads exactly what was committed.
    """
    by_partition: dict[int, list[tuple[str, int]]] = {}
    for (p, rid), at in staged.seen.items():
        by_partition.setdefault(p, []).append((rid, at))
    records = []
    for p, entries in by_partition.items():
        for i in range(0, len(entries), SEEN_PER_RECORD):
            # A key of its own: the topic is compacted, and no batch may replace another.
            key = f"{producer_id}:{uuid.uuid4().hex}".encode()
            records.append((p, key, pack_seen(entries[i : i + SEEN_PER_RECORD])))
    return records


def restore(
    reader: AssignableConsumer,
    names: TopicNames,
    numbers: list[int],
    committed: Mapping[tuple[str, int], int],
    horizon: int,
    consent_change: Callable[[Message], ConsentChange | None],
) -> dict[int, PartitionState]:
    """The state of partition numbers ``numbers``, read from the changelog and ``consents``.

    Receipt ids older than ``horizon`` (ms) are left out; consent changes are read up to the
    group's ``committed`` offset of ``consents`` (what comes after is the stream's to apply).
    ``consent_change`` decodes a consents record (None for a tombstone).
    """
    states = {p: PartitionState() for p in numbers}
    # Every partition in one pass (one fetch session) rather than one after another.
    wanted = [TopicPartition(names.receipts_seen, p, OFFSET_BEGINNING) for p in numbers]
    stops: dict[tuple[str, int], int] = {}
    for p in numbers:
        upto = committed.get((names.consents, p), OFFSET_INVALID)
        if upto > 0:
            wanted.append(TopicPartition(names.consents, p, OFFSET_BEGINNING))
            stops[(names.consents, p)] = upto
    # A stall, not a long read, ends the restore: a large changelog may take minutes, but nothing at
    # all for this long (longer than an open transaction can hold the read-committed end back
    # before the broker aborts it) means the worker should fail and be restarted.
    reading = ReadToEnd(
        reader, wanted, what="state restore", stops=stops, stall=RESTORE_STALL_SECONDS, only_pending=True
    )
    for msg in reading.records(5000, 1.0):
        state = states[msg.partition() or 0]
        if msg.topic() == names.receipts_seen:
            _restore_seen(state, msg, horizon)
            continue
        try:
            change = consent_change(msg)
        except ValidationError:
            continue  # it went to the dead-letter topic when it was first processed
        key = msg.key()
        if change is not None:
            state.consent[change.card_id] = with_record(
                state.consent.get(change.card_id), change, appended_ms(msg), msg.offset() or 0
            )
        elif key is not None:
            state.consent.pop(key.decode(), None)
    return states


class _Stamped(Protocol):
    def timestamp(self) -> tuple[int, int]: ...


def appended_ms(msg: _Stamped) -> int:
    """A record's broker append time (ms; the inputs are LogAppendTime topics); 0 when it has none."""
    kind, at = msg.timestamp()
    return at if kind != TIMESTAMP_NOT_AVAILABLE and at > 0 else 0


def _restore_seen(state: PartitionState, msg: Message, horizon: int) -> None:
    key, value = msg.key(), msg.value()
    if value is not None and SEEN_BATCH_HEADER in (msg.headers() or ()):
        for rid, at in unpack_seen(value):
            if at >= horizon:
                state.seen[rid] = at
        return
    if key is None:
        return
    if value is None:
        state.seen.pop(key.decode(), None)
        return
    at = _MS.unpack(value)[0] if len(value) == _MS.size else horizon
    if at >= horizon:
        state.seen[key.decode()] = at
