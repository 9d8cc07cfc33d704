"""Dead letters without I/O: the envelope, whose card a record is, how a letter keeps it, replay's de-duplication."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.card_hash import erased_hash
from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.dlq import Closed, DeadLetter, LetterOpener, ReplayPass
from receiptflow.dlq_seal import (
    Original,
    Payload,
    associated_data,
    card_of,
    new_data_key,
    open_sealed,
    pack,
    payload_for,
    replay_identity,
    seal,
    unpack,
)
from receiptflow.dlq_write import LetterSealer, Rejected
from receiptflow.errors import SealError, ValidationError
from receiptflow.models import ConsentChange
from receiptflow.topics import TopicNames

from .memory_vault import MemoryVault

pytestmark = pytest.mark.unit

CODEC = Codec()
NAMES = TopicNames("")
NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
CARD = "6390010000012345"
SALT = b"dead-letter-unit-test-erasure-salt"
maybe_bytes = st.none() | st.binary(max_size=200)


def _hash(card: str) -> str:
    return erased_hash(card, SALT)


# --- the envelope ------------------------------------------------------------------------------
@given(maybe_bytes, maybe_bytes)
def test_pack_and_unpack_are_inverse_and_tell_none_from_empty(key: bytes | None, value: bytes | None) -> None:
    assert unpack(pack(Original(key, value))) == Original(key, value)


@given(maybe_bytes, maybe_bytes, st.binary(max_size=40))
def test_an_envelope_opens_with_its_key_and_letter_only(key: bytes | None, value: bytes | None, aad: bytes) -> None:
    data_key = new_data_key()
    envelope = seal(data_key, Original(key, value), aad)
    assert open_sealed(data_key, envelope, aad) == Original(key, value)
    with pytest.raises(SealError):
        open_sealed(new_data_key(), envelope, aad)  # another card's key
    with pytest.raises(SealError):
        open_sealed(data_key, envelope, aad + b"x")  # moved into another letter
    tampered = bytearray(envelope)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(data_key, bytes(tampered), aad)


def test_the_envelope_hides_the_record_and_differs_each_time() -> None:
    data_key, original = new_data_key(), Original(CARD.encode(), b"checkout of " + CARD.encode())
    aad = associated_data("checkouts", 1, 2, _hash(CARD))
    first, second = seal(data_key, original, aad), seal(data_key, original, aad)
    assert CARD.encode() not in first and first != second  # a random nonce each time


def test_the_associated_data_binds_position_and_card() -> None:
    base = associated_data("checkouts", 1, 2, "h")
    others = [
        associated_data("consents", 1, 2, "h"),
        associated_data("checkouts", 0, 2, "h"),
        associated_data("checkouts", 1, 3, "h"),
        associated_data("checkouts", 1, 2, None),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_a_data_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(SealError):
        seal(b"short", Original(None, b"x"), b"")


# --- whose card, and how the letter keeps the record ---------------------------------------------
def _decode(value: bytes | None) -> dict[str, Any]:
    return CODEC.decode(value).value


def test_the_card_of_a_record_is_its_values_card_else_its_key() -> None:
    consent = CODEC.encode("consent_change", ConsentChange(CARD, NOW, True, True).to_avro())
    assert card_of(_decode, b"whatever-key", consent) == CARD
    assert card_of(_decode, CARD.encode(), b"\x00\x00\x00\x00\x01trunc") == CARD  # unreadable: the key names it
    assert card_of(_decode, None, b"junk") is None
    assert card_of(_decode, CARD.encode(), None) == CARD  # a tombstone keyed by card


@pytest.mark.parametrize(
    ("topic", "card", "erased", "expected"),
    [
        ("checkouts", CARD, False, Payload.CARD),
        ("checkouts", CARD, True, Payload.WITHHELD),
        ("checkouts", None, False, Payload.INSTALL),
        ("consents", None, False, Payload.INSTALL),
        ("some.new.topic", None, False, Payload.INSTALL),
        ("purchases.baskets", None, False, Payload.CLEAR),
        ("purchases.analytics", None, False, Payload.CLEAR),
    ],
)
def test_a_letter_keeps_the_record_in_clear_only_from_a_pseudonymous_topic(
    topic: str, card: str | None, erased: bool, expected: Payload
) -> None:
    assert payload_for(topic, card, erased) is expected


def _sealer(vault: MemoryVault, consumer: str = "receiptflow-router") -> LetterSealer:
    return LetterSealer(Settings(), f"{consumer}-0", consumer, codec=CODEC, vault=vault, hasher=_hash)


def _rejected(topic: str, key: bytes | None, value: bytes | None, offset: int = 7) -> Rejected:
    return Rejected(
        ValidationError("future_event_time", "event_time is after now", "event_time"), topic, 2, offset, key, value
    )


@given(st.text(alphabet="0123456789", min_size=8, max_size=19))
def test_no_field_of_a_letter_holds_the_card_id(card: str) -> None:
    vault = MemoryVault()
    value = CODEC.encode("consent_change", ConsentChange(card, NOW, True, False).to_avro())
    letter = _sealer(vault).letter(_rejected(NAMES.consents, card.encode(), value), NOW)
    encoded = CODEC.encode("dead_letter", letter.record)
    assert card.encode() not in encoded and card.encode() != letter.key
    assert all(card not in str(v) for v in letter.record.values() if not isinstance(v, bytes))
    assert letter.record["card_hash"] == _hash(card) and letter.payload is Payload.CARD
    read = DeadLetter.from_record(0, CODEC.decode(encoded, expect="dead_letter").value)
    opened = LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash).open(read)
    assert opened == Original(card.encode(), value)


def test_after_erasure_a_letter_does_not_open_and_a_new_one_keeps_nothing() -> None:
    vault = MemoryVault()
    sealer = _sealer(vault)
    before = sealer.letter(_rejected(NAMES.checkouts, CARD.encode(), b"junk"), NOW)
    vault.erase(_hash(CARD))
    after = sealer.letter(_rejected(NAMES.checkouts, CARD.encode(), b"junk", offset=8), NOW)
    assert after.payload is Payload.WITHHELD and after.record["sealed"] is None
    assert after.record["original_key"] is None and after.record["original_value"] is None
    opener = LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash)
    for letter in (before, after):
        assert opener.open(DeadLetter.from_record(0, letter.record)) is Closed.ERASED
    # The key itself is gone: nobody holding the letter and the vault can open it.
    with pytest.raises(SealError):
        open_sealed(new_data_key(), before.record["sealed"], associated_data(NAMES.checkouts, 2, 7, _hash(CARD)))


def test_keyless_junk_from_a_card_topic_is_sealed_under_the_install_key_and_baskets_stay_clear() -> None:
    vault = MemoryVault()
    junk = _sealer(vault).letter(_rejected(NAMES.checkouts, None, b"junk with 6390010000012345 inside"), NOW)
    assert junk.payload is Payload.INSTALL and junk.record["card_hash"] is None and b"6390" not in junk.record["sealed"]
    basket = _sealer(vault, "receiptflow-aggregate").letter(_rejected(NAMES.analytics_baskets, b"SOKOS", b"x"), NOW)
    assert basket.payload is Payload.CLEAR and basket.record["original_value"] == b"x"
    opener = LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash)
    assert opener.open(DeadLetter.from_record(0, junk.record)) == Original(None, b"junk with 6390010000012345 inside")


def test_a_clear_letter_of_version_1_is_not_restored_once_its_card_is_erased() -> None:
    vault = MemoryVault()
    value = CODEC.encode("consent_change", ConsentChange(CARD, NOW, True, False).to_avro())
    old = DeadLetter(0, "schema", "m", None, NAMES.consents, 0, 1, CARD.encode(), value, "processor")
    opener = LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash)
    assert opener.open(old) == Original(CARD.encode(), value)
    vault.erase(_hash(CARD))
    assert LetterOpener(Settings(), codec=CODEC, vault=vault, hasher=_hash).open(old) is Closed.ERASED


# --- replay's de-duplication -------------------------------------------------------------------
def test_the_replay_identity_includes_the_source_topic_and_the_consumer() -> None:
    original = Original(b"k", b"v")
    same = replay_identity("checkouts", "router", original)
    assert same == replay_identity("checkouts", "router", Original(b"k", b"v"))
    assert same != replay_identity("consents", "router", original)
    assert same != replay_identity("checkouts", "sink", original)
    assert same != replay_identity("checkouts", "router", Original(None, b"kv"))


def _letter(offset: int, topic: str, consumer: str) -> DeadLetter:
    return DeadLetter(
        offset, "schema", "m", None, topic, 0, offset, None, None, f"{consumer}-0", consumer_group=consumer
    )


def test_one_record_rejected_by_two_consumers_is_sent_once_and_both_letters_count_as_replayed() -> None:
    replay, record = ReplayPass({0: 0}), Original(b"card-hash", b"bytes")
    targets = [replay.target(_letter(i, "consents", c), record, None) for i, c in enumerate(("router", "sink"))]
    assert targets == ["consents", None]
    result = replay.result()
    assert (result.replayed, result.sent, result.skipped_repeats) == (2, 1, 0)


def test_the_same_bytes_from_two_topics_go_back_to_each() -> None:
    replay, record = ReplayPass({0: 0}), Original(b"k", b"same bytes")
    targets = [replay.target(_letter(i, t, "sink"), record, None) for i, t in enumerate(("consents", "checkouts"))]
    assert targets == ["consents", "checkouts"] and replay.result().sent == 2


def test_only_what_the_same_consumer_rejected_again_after_an_earlier_replay_is_a_repeat() -> None:
    replay, record = ReplayPass({0: 2, 1: 0}), Original(b"k", b"v")
    assert replay.target(_letter(0, "checkouts", "router"), record, None) is None  # an earlier replay's
    assert replay.target(_letter(1, "checkouts", "other"), Original(b"k", b"w"), None) is None
    assert replay.target(_letter(2, "checkouts", "router"), record, None) is None  # rejected again
    assert replay.target(_letter(3, "checkouts", "sink"), record, None) == "checkouts"  # another consumer's
    assert replay.target(_letter(4, "checkouts", "router"), Closed.ERASED, None) is None
    assert replay.target(_letter(5, "checkouts", "router"), Closed.UNREADABLE, None) is None
    # Offsets are per partition: offset 0 of partition 1 is this replay's, not before offset 2 of partition 0.
    other_partition = replace(_letter(0, "checkouts", "router"), partition=1)
    assert replay.target(other_partition, Original(b"k", b"new"), None) == "checkouts"
    result = replay.result()
    assert (result.replayed, result.sent, result.skipped_repeats, result.erased, result.unreadable) == (2, 2, 1, 1, 1)
