"""What the router does with one input record, without any I/O: the records to write and the state to stage.

:meth:`RouteStep.step` takes a ``checkouts`` or ``consents`` record as read (undecoded), the
committed partition state, the open transaction's :class:`~receiptflow.processors.router.state.Staged`
changes and ``now``. It returns the records to produce (:class:`Output`: routed purchases) or the
rejected record the worker dead-letters (sealing it needs the vault), and records in ``staged`` what
the transaction changes: receipt ids seen, consent histories and the counts reported once it commits.
It sends, commits and logs nothing; the loop (:mod:`receiptflow.processors.router.worker`) does.
Everything decided about a record is decided by the pure core (``validation``, ``core.route``,
``consent.effective_consent``).

The erased cards are data too (``erased``: asked whether a clear card id is erased). A record of an
erased card -- by its key or, for a checkout, its card id -- is dropped before anything else: no
routed record, no dead letter (which would keep the card id in clear), no consent state; it is only
counted. A consent change that narrows marketing use writes a retraction
(:mod:`receiptflow.retractions`) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from receiptflow.codec import Codec
from receiptflow.consent_codec import decode_consent, written_at
from receiptflow.dlq_write import Rejected
from receiptflow.errors import ValidationError
from receiptflow.field_values import local_time
from receiptflow.models import Checkout, ConsentChange, ConsentState, Granularity
from receiptflow.policy import UNKNOWN_CHAIN_VERSION, Decision, Policy
from receiptflow.topics import TopicNames
from receiptflow.validation import CONSENT_MAX_AGE, validate

from . import fast_path
from .consent import ConsentHistory, effective_consent, with_record
from .encoding import BasketEncoder, PurchaseEncoder
from .fast_path import FastRouter
from .pseudonym import BasketPseudonymiser
from .retract import withdrawal
from .route import marketing_level, route
from .state import PartitionState, Staged, appended_ms, ms


class InputRecord(Protocol):
    """The parts of a consumed record the step reads (``confluent_kafka.Message`` has them)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def timestamp(self) -> tuple[int, int]: ...


class Erased(Protocol):
    """The erased cards, asked about clear card ids (:class:`receiptflow.erasures.ErasedCards`)."""

    def __contains__(self, card_id: object) -> bool: ...

    def __len__(self) -> int: ...


NONE_ERASED: Erased = frozenset()


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce in the open transaction; the partitioner places it by its key.

    ``timestamp`` (ms) is the record's own; 0 lets the producer stamp the time of sending.
    """

    topic: str
    key: bytes | None
    value: bytes
    timestamp: int = 0


@dataclass(slots=True)
class StepResult:
    outputs: list[Output] = field(default_factory=list)
    rejected: ValidationError | None = None  # why the record went to the dead-letter topic
    letter: Rejected | None = None  # the rejected record, for the worker to seal and dead-letter
    unknown_chain: str | None = None  # a checkout of a chain the policy does not know


class RouteStep:
    """The per-record decisions of one router worker (its configuration; no state of its own)."""

    def __init__(
        self,
        names: TopicNames,
        policy: Policy,
        codec: Codec,
        baskets: BasketPseudonymiser,
        default_consent: ConsentState,
        processor: str,
        fast: bool = True,
        consent_max_age: timedelta = CONSENT_MAX_AGE,
    ) -> None:
        self.names = names
        self.policy = policy
        self.codec = codec
        self.baskets = baskets
        self.default_consent = default_consent
        self.processor = processor  # the worker's name (its loop's LetterSealer names it in dead letters)
        self.consent_max_age = consent_max_age
        self.encoder = PurchaseEncoder(codec)
        self.basket_encoder = BasketEncoder(codec)
        self.fast = fast_path.build(codec, baskets, fast)

    def step(
        self,
        msg: InputRecord,
        state: Mapping[int, PartitionState],
        staged: Staged,
        now: datetime,
        erased: Erased = NONE_ERASED,
    ) -> StepResult:
        """The records ``msg`` makes; what it changes is recorded in ``staged``. ``erased``: the erased cards."""
        kind = "consent" if msg.topic() == self.names.consents else "checkout"
        key = msg.key()
        # A tombstone on consents (the erasure's own, keyed by the card) still clears the card's history.
        tombstone = kind == "consent" and msg.value() is None
        if erased and key is not None and not tombstone and key.decode(errors="replace") in erased:
            return dropped_as_erased(staged, kind)
        if kind == "consent":
            return self.consent(msg, state, staged, now, erased)
        return self.checkout(msg, state, staged, now, erased)

    def consent_change(self, msg: InputRecord, now: datetime | None = None) -> ConsentChange | None:
        """The change a ``consents`` record holds; None for a tombstone; ValidationError when unusable.

        Judged at the record's append time, so a restore judges it as the stream did (``now``, the
        wall clock by default, only for a record without one).
        """
        written = written_at(appended_ms(msg), now or datetime.now(UTC))
        return decode_consent(self.codec, msg.value(), written, self.consent_max_age)

    def consent(
        self,
        msg: InputRecord,
        state: Mapping[int, PartitionState],
        staged: Staged,
        now: datetime,
        erased: Erased = NONE_ERASED,
    ) -> StepResult:
        partition = msg.partition() or 0
        try:
            change = self.consent_change(msg, now)
        except ValidationError as exc:
            return self.dead_letter(exc, msg, staged, now)
        if change is None:  # tombstone: the card was erased; its history goes with it
            key = msg.key()
            if key is not None:
                staged.consent[(partition, key.decode())] = ConsentHistory()
            return StepResult()
        if change.card_id in erased:
            return dropped_as_erased(staged, "consent")
        history = staged.history(state, partition, change.card_id)
        updated = with_record(history, change, appended_ms(msg), msg.offset() or 0)
        staged.consent[(partition, change.card_id)] = updated
        staged.consent_changes += 1
        staged.cards.add(change.card_id)
        retraction = withdrawal(history, updated, change, self.default_consent, now, self.processor)
        if retraction is None:
            return StepResult()
        staged.retractions[str(retraction.scope)] += 1
        staged.routed[self.names.retractions] += 1
        value = self.codec.encode("retraction", retraction.to_avro())
        return StepResult([Output(self.names.retractions, change.card_id.encode(), value)])

    def checkout(
        self,
        msg: InputRecord,
        state: Mapping[int, PartitionState],
        staged: Staged,
        now: datetime,
        erased: Erased = NONE_ERASED,
    ) -> StepResult:
        partition = msg.partition() or 0
        decided = None
        if self.fast is not None:
            fast = self._fast_checkout(self.fast, msg, (state, staged, erased), partition, now)
            if isinstance(fast, StepResult):
                return fast
            decided = fast  # what the fast path decided when it could not write the records, else None
        try:
            decoded, lines_raw = self.codec.decode_checkout(msg.value())
            checkout = Checkout.from_avro(decoded.value)
        except ValidationError as exc:
            return self.dead_letter(exc, msg, staged, now)
        if checkout.card_id is not None and checkout.card_id in erased:
            return dropped_as_erased(staged, "checkout")  # never a dead letter: it would keep the card id
        try:
            validate(checkout, now)
        except ValidationError as exc:
            return self.dead_letter(exc, msg, staged, now)
        if decided is None:
            if staged.is_duplicate(state, partition, checkout.receipt_id):
                staged.duplicates += 1
                return StepResult()
            decision = self.policy.version_at(checkout.chain, checkout.event_time)
            consent = self._consent(msg, state, staged, partition, checkout.card_id, checkout.event_time)
        else:
            _, decision, consent = decided  # decided on the same checkout: dedup, policy and consent are done
        routed = route(checkout, decision, consent, now, self.baskets)
        # Lines and groups are encoded once per receipt (the lines not at all: the checkout's bytes).
        enc = self.encoder.receipt(checkout.lines, lines_raw)
        customer = enc.encode(routed.customer)
        marketing = None
        if routed.marketing is routed.customer:
            marketing = customer  # encoded once
        elif routed.marketing is not None:
            marketing = enc.encode(routed.marketing)
        basket = self.basket_encoder.encode(routed.analytics) if routed.analytics is not None else None
        c = checkout
        routed_as = _Routed(c.receipt_id, c.chain, c.store_id, c.card_id, c.event_time, routed.customer.granularity)
        return self._emit(msg, partition, staged, routed_as, decision, consent, (customer, marketing, basket))

    def _fast_checkout(
        self,
        fast: FastRouter,
        msg: InputRecord,
        known: tuple[Mapping[int, PartitionState], Staged, Erased],
        partition: int,
        now: datetime,
    ) -> StepResult | _Decided | None:
        """The compiled path, one call that reads the checkout once: the step's result; or, when it decided
        but could not write the records, its decision (the Python core then routes on it); or None when
        it was not sure of the checkout (the Python core then reads and decides it all)."""
        value = msg.value()
        if value is None:
            return None
        state, staged, erased = known

        def decide(
            rid: str, chain: str, store_id: str, card_id: str | None, event_ms: int, offset: int
        ) -> tuple[int, int | None, str, tuple[bool, bool, bool], _Decided] | None:
            # Called by the extension with the facts of a checkout it read and is sure is valid.
            if card_id is not None and card_id in erased:
                dropped_as_erased(staged, "checkout")
                return None  # nothing to write
            if staged.is_duplicate(state, partition, rid):
                staged.duplicates += 1
                return None  # nothing to write
            event_time = local_time(fast_path.utc_time(event_ms), offset)
            decision = self.policy.version_at(chain, event_time)
            consent = self._consent(msg, state, staged, partition, card_id, event_time)
            level = marketing_level(card_id is not None, consent, decision.level)
            routed_as = _Routed(rid, chain, store_id, card_id, event_time, decision.level)
            return (
                fast_path.RANK[decision.level],
                None if level is None else fast_path.RANK[level],
                decision.version_id,
                (consent.product_data_marketing, consent.electronic_marketing, consent.known),
                (routed_as, decision, consent),
            )

        handled = fast.handle(value, fast_path.millis(now), decide)
        if handled is None:  # a duplicate or an erased card, counted by decide
            return StepResult()
        if isinstance(handled, str):  # why the fast path left it (fast_path.DECLINED): the Python core decides
            return None
        decided, customer, marketing, basket = handled
        if customer is None:
            return decided
        routed_as, decision, consent = decided
        return self._emit(msg, partition, staged, routed_as, decision, consent, (customer, marketing, basket))

    def _consent(
        self,
        msg: InputRecord,
        state: Mapping[int, PartitionState],
        staged: Staged,
        partition: int,
        card_id: str | None,
        event_time: datetime,
    ) -> ConsentState:
        """The consent a checkout is routed under (both paths): its card's history, at the checkout's
        event time and append time (a tie of the write order takes the stricter reading)."""
        history = staged.history(state, partition, card_id) if card_id else None
        return effective_consent(history, event_time, self.default_consent, appended_ms(msg) or None)

    def _emit(
        self,
        msg: InputRecord,
        partition: int,
        staged: Staged,
        c: _Routed,
        decision: Decision,
        consent: ConsentState,
        encoded: tuple[bytes, bytes | None, bytes | None],
    ) -> StepResult:
        """The outputs of a routed checkout, and what its routing stages (both paths end here)."""
        customer, marketing, basket = encoded
        result = StepResult()
        if decision.version_id == UNKNOWN_CHAIN_VERSION:
            result.unknown_chain = c.chain
        key = (c.card_id or c.store_id).encode()
        # The card-linked records carry the checkout's append time, so the stages after the router
        # measure end-to-end time from it (the anonymous basket keeps the time of sending).
        appended = appended_ms(msg)
        out = result.outputs
        out.append(Output(self.names.purchases_customer, key, customer, appended))
        if marketing is not None:
            out.append(Output(self.names.purchases_marketing, key, marketing, appended))
        if basket is not None:
            # Keyed by chain: a window of the aggregator (one chain, one local day) is on one partition.
            out.append(Output(self.names.analytics_baskets, c.chain.encode(), basket))
        for o in out:
            staged.routed[o.topic] += 1
        staged.seen[(partition, c.receipt_id)] = ms(c.event_time)  # to the changelog at the end of the transaction
        if c.card_id is not None:
            staged.cards.add(c.card_id)
        staged.processed[c.chain] += 1
        staged.stores[c.store_id] += 1
        staged.granularity[(c.chain, c.granularity)] += 1
        staged.marketing[marketing_outcome(c.card_id is not None, consent)] += 1
        if appended:
            staged.appended.append(appended)
        return result

    def dead_letter(self, exc: ValidationError, msg: InputRecord, staged: Staged, now: datetime) -> StepResult:
        """The record is rejected: the worker seals its letter (that needs the vault, I/O) and writes it."""
        letter = Rejected(exc, msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value())
        staged.dead_letters[exc.reason] += 1
        return StepResult([], rejected=exc, letter=letter)


def dropped_as_erased(staged: Staged, kind: str) -> StepResult:
    """A record of an erased card: counted, nothing written (``kind``: checkout or consent)."""
    staged.erased[kind] += 1
    return StepResult()


def marketing_outcome(has_card: bool, consent: ConsentState) -> str:
    """What a routed receipt gives marketing (the consent mix): ``product_data`` (the customer record),
    ``product_groups`` (product groups at most), ``withheld`` (nothing) or ``anonymous`` (no card)."""
    if not has_card:
        return "anonymous"
    if consent.product_data_marketing:
        return "product_data"
    if consent.electronic_marketing:
        return "product_groups"
    return "withheld"


@dataclass(frozen=True, slots=True)
class _Routed:
    """What the staging of a routed checkout needs to know of it."""

    receipt_id: str
    chain: str
    store_id: str
    card_id: str | None
    event_time: datetime
    granularity: Granularity


# What the fast path decided for a checkout: how it is staged, the policy version and the consent.
_Decided = tuple[_Routed, Decision, ConsentState]
