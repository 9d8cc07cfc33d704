"""Retractions: the narrowing rule (which marketing use a consent change withdraws) and the record's contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.codec import Codec
from receiptflow.models import ConsentState
from receiptflow.retractions import Reason, Retraction, Scope, erasure_retraction, narrowing
from receiptflow.topics import RETRACTIONS_RETENTION_MS, TopicNames, spec

pytestmark = pytest.mark.unit

states = st.builds(ConsentState, st.booleans(), st.booleans(), st.booleans())


@given(before=states, after=states)
def test_narrowing_names_exactly_what_was_withdrawn(before: ConsentState, after: ConsentState) -> None:
    scope = narrowing(before, after)
    lost_product = before.product_data_marketing and not after.product_data_marketing
    lost_electronic = before.electronic_marketing and not after.electronic_marketing
    left = after.product_data_marketing or after.electronic_marketing
    if not (lost_product or lost_electronic):
        assert scope is None  # a grant, or no change, retracts nothing
    elif not left:
        assert scope is Scope.ALL  # marketing gets nothing more of the card
    else:
        # One permission went, the other stays: exactly the one that went.
        assert scope is (Scope.PRODUCT_DATA if lost_product else Scope.ELECTRONIC)
        assert not (lost_product and lost_electronic)


@given(state=states)
def test_nothing_narrows_itself_and_withdrawing_everything_that_was_given_is_all(state: ConsentState) -> None:
    assert narrowing(state, state) is None
    nothing = ConsentState(False, False, known=True)
    expected = Scope.ALL if (state.product_data_marketing or state.electronic_marketing) else None
    assert narrowing(state, nothing) is expected


@given(
    card=st.text(min_size=1, max_size=20),
    reason=st.sampled_from(list(Reason)),
    scope=st.sampled_from(list(Scope)),
    seconds=st.integers(0, 4_000_000_000),
)
def test_a_retraction_survives_the_codec(card: str, reason: Reason, scope: Scope, seconds: int) -> None:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    r = Retraction(card, reason, scope, at, at + timedelta(milliseconds=5), "router-0")
    codec = Codec()
    data = codec.encode("retraction", r.to_avro())
    assert Retraction.from_avro(codec.decode(data, expect="retraction").value) == r


def test_an_erasure_retracts_everything_from_the_first_erasure_on() -> None:
    at, now = datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    assert erasure_retraction("6390000000001", at, now) == Retraction(
        "6390000000001", Reason.ERASURE, Scope.ALL, at, now, "erase"
    )


def test_retractions_outlive_every_marketing_record_they_cover() -> None:
    # A marketing record may outlive its retention by up to one segment (Kafka deletes whole segments).
    marketing = spec("purchases.marketing").config
    segment = int(marketing.get("segment.ms", 7 * 24 * 3600 * 1000))
    retractions = spec("purchases.retractions")
    assert int(retractions.config["retention.ms"]) == RETRACTIONS_RETENTION_MS
    assert int(marketing["retention.ms"]) + segment <= RETRACTIONS_RETENTION_MS
    assert retractions.subject == "retraction" and retractions.key == "card_id"
    assert "compact" not in retractions.config.get("cleanup.policy", "delete")  # every retraction is kept
    assert TopicNames("p.").retractions == "p.purchases.retractions"
