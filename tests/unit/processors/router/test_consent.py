"""Consent histories and the privacy guarantee of routing, over generated receipts, policies and histories.

The expectations here are computed by brute force from the raw inputs (the list of changes, the list
of policy versions), independently of ``ConsentHistory`` and ``Policy.version_at``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from receiptflow.models import Checkout, ConsentChange, ConsentState, Granularity
from receiptflow.policy import Policy, parse_policy
from receiptflow.processors.router.consent import MAX_CHANGES_PER_CARD, ConsentHistory, effective_consent
from receiptflow.processors.router.route import DEFAULT_CONSENT, route

from ...strategies import NOW, checkouts

CARD = "6390000000001"
LEVELS = {"item": Granularity.ITEM, "product_group": Granularity.PRODUCT_GROUP, "receipt": Granularity.RECEIPT}
CHAINS = ["SOKOS", "PRISMA", "K_MARKET", "SIWA", "NESTE"]


@st.composite
def policies(draw: st.DrawFn) -> tuple[dict[str, list[tuple[date, str]]], Policy]:
    """A random policy document (some chains left out) and the parsed Policy."""
    raw: dict[str, list[tuple[date, str]]] = {}
    for chain in draw(st.lists(st.sampled_from(CHAINS), unique=True)):
        days = draw(st.lists(st.dates(date(2000, 1, 1), date(2027, 1, 1)), min_size=1, max_size=4, unique=True))
        raw[chain] = [(d, draw(st.sampled_from(sorted(LEVELS)))) for d in sorted(days)]
    doc = {
        "default_level": "receipt",
        "chains": {
            c: {"versions": [{"id": f"{c}-{i}", "from": d, "level": lvl} for i, (d, lvl) in enumerate(vs)]}
            for c, vs in raw.items()
        },
    }
    return raw, parse_policy(doc)


@st.composite
def histories(draw: st.DrawFn) -> list[ConsentChange]:
    times = st.datetimes(datetime(2006, 1, 1), datetime(2026, 11, 24), timezones=st.just(UTC))
    return [
        ConsentChange(CARD, draw(times), draw(st.booleans()), draw(st.booleans()))
        for _ in range(draw(st.integers(0, 6)))
    ]


def _allowed_level(raw: dict[str, list[tuple[date, str]]], c: Checkout) -> Granularity:
    versions = raw.get(c.chain)
    if versions is None:
        return Granularity.RECEIPT
    in_force = [lvl for d, lvl in versions if d <= c.event_time.date()]
    return LEVELS[in_force[-1]] if in_force else Granularity.RECEIPT


def _state_at(changes: list[ConsentChange], when: datetime | None) -> tuple[bool, bool] | None:
    eligible = [c for c in changes if when is None or c.event_time <= when]
    if not eligible:
        return None
    newest = max(c.event_time for c in eligible)
    # Ties in event time: the more restrictive combination wins, as it must.
    tied = [c for c in eligible if c.event_time == newest]
    return all(c.product_data_marketing for c in tied), all(c.electronic_marketing for c in tied)


def _purchase_state(changes: list[ConsentChange], when: datetime) -> tuple[bool, bool] | None:
    """In force for a purchase at ``when``: the state just before it, narrowed by any change at that instant."""
    before = _state_at([c for c in changes if c.event_time < when], None)
    tied = [c for c in changes if c.event_time == when]
    if not tied:
        return before
    prior = before or (False, False)  # no record before: the privacy-safe default
    return (
        prior[0] and all(c.product_data_marketing for c in tied),
        prior[1] and all(c.electronic_marketing for c in tied),
    )


def _history(changes: list[ConsentChange]) -> ConsentHistory:
    h = ConsentHistory()
    for change in changes:
        h = h.with_change(change)
    return h


@given(checkouts(chains=CHAINS), policies(), histories(), st.lists(st.tuples(st.booleans(), st.booleans()), max_size=2))
def test_no_topic_ever_carries_finer_data_than_policy_and_consent_allow(
    c: Checkout,
    policy: tuple[dict[str, list[tuple[date, str]]], Policy],
    changes: list[ConsentChange],
    at_purchase: list[tuple[bool, bool]],
) -> None:
    raw, parsed = policy
    c = Checkout(**{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "card_id": CARD})
    # Changes at the very instant of the purchase: the ties the stricter reading must win.
    changes = changes + [ConsentChange(CARD, c.event_time, p, e) for p, e in at_purchase]
    consent = effective_consent(_history(changes), c.event_time, DEFAULT_CONSENT)
    routed = route(c, parsed.version_at(c.chain, c.event_time), consent, NOW)
    allowed = _allowed_level(raw, c)

    for out in (routed.customer, routed.marketing):
        if out is None:
            continue
        assert out.granularity.rank >= allowed.rank
        assert out.total_cents == c.total_cents
        if out.granularity is not Granularity.ITEM:
            assert out.items == ()
        if out.granularity is Granularity.RECEIPT:
            assert out.groups == ()
        assert sum(i.amount_cents for i in out.items) in (0, c.total_cents)
        assert sum(g.amount_cents for g in out.groups) in (0, c.total_cents)

    at_event, latest = _purchase_state(changes, c.event_time), _state_at(changes, None)
    product = bool(at_event and latest and at_event[0] and latest[0])
    electronic = bool(at_event and latest and at_event[1] and latest[1])
    if product or electronic:
        assert routed.marketing is not None
        assert routed.marketing.consent.product_data_marketing == product
        assert routed.marketing.consent.electronic_marketing == electronic
        if not product:
            assert routed.marketing.items == ()
            assert routed.marketing.granularity.rank >= Granularity.PRODUCT_GROUP.rank
    else:
        assert routed.marketing is None

    if routed.analytics is not None:
        assert routed.analytics.card_id is None and routed.analytics.register_id is None
        assert routed.analytics.event_time.minute == 0


@given(histories(), st.randoms())
def test_history_does_not_depend_on_arrival_order_or_repeats(changes: list[ConsentChange], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = changes + changes[: len(changes) // 2]
    rnd.shuffle(shuffled)
    assert _history(shuffled) == _history(changes)


@given(histories(), st.datetimes(datetime(2006, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)))
def test_effective_consent_is_never_looser_than_either_moment(changes: list[ConsentChange], when: datetime) -> None:
    got = effective_consent(_history(changes), when, DEFAULT_CONSENT)
    for state in (_history(changes).at(when), _history(changes).latest()):
        reference = state or DEFAULT_CONSENT
        assert got.product_data_marketing <= reference.product_data_marketing
        assert got.electronic_marketing <= reference.electronic_marketing


def test_no_record_gets_the_configured_default() -> None:
    lenient = ConsentState(True, False, known=False)
    assert effective_consent(None, NOW, lenient) == lenient
    assert effective_consent(ConsentHistory(), NOW, DEFAULT_CONSENT) == DEFAULT_CONSENT


def test_withdrawal_applies_to_older_receipts_and_consent_never_reaches_back() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    given_ = ConsentChange(CARD, t, True, True)
    withdrawn = ConsentChange(CARD, t + timedelta(days=10), False, False)
    h = _history([given_, withdrawn])
    assert effective_consent(h, t + timedelta(days=1), DEFAULT_CONSENT).product_data_marketing is False
    later = _history([ConsentChange(CARD, t + timedelta(days=10), True, True)])
    assert effective_consent(later, t + timedelta(days=1), DEFAULT_CONSENT) == DEFAULT_CONSENT
    assert effective_consent(later, t + timedelta(days=11), DEFAULT_CONSENT) == ConsentState(True, True, True)


def test_history_is_bounded() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    h = _history([ConsentChange(CARD, t + timedelta(hours=i), i % 2 == 0, True) for i in range(100)])
    assert len(h.changes) == MAX_CHANGES_PER_CARD
    assert h.changes[-1].event_time == t + timedelta(hours=99)


def test_a_change_at_the_purchase_instant_counts_only_when_it_is_stricter() -> None:
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    # A grant at exactly the purchase instant is not yet in force for that purchase...
    granted_at_t = _history([ConsentChange(CARD, t, True, True)])
    assert effective_consent(granted_at_t, t, DEFAULT_CONSENT) == DEFAULT_CONSENT
    # ...nor does it widen a narrower grant in force just before it.
    widened = _history([ConsentChange(CARD, t - timedelta(days=1), False, True), ConsentChange(CARD, t, True, True)])
    assert effective_consent(widened, t, DEFAULT_CONSENT) == ConsentState(False, True, True)
    # A withdrawal at exactly the purchase instant applies to it.
    withdrawn_at_t = _history(
        [ConsentChange(CARD, t - timedelta(days=1), True, True), ConsentChange(CARD, t, False, True)]
    )
    assert effective_consent(withdrawn_at_t, t, DEFAULT_CONSENT) == ConsentState(False, True, True)
    # A moment later the grant is in force.
    assert effective_consent(granted_at_t, t + timedelta(microseconds=1), DEFAULT_CONSENT) == ConsentState(
        True, True, True
    )


@given(histories(), st.data())
def test_ties_with_the_purchase_instant_resolve_to_the_stricter_side(
    changes: list[ConsentChange], data: st.DataObject
) -> None:
    """Whatever happens at the purchase instant, the answer is no looser than just before or just at it."""
    when = data.draw(st.sampled_from([c.event_time for c in changes])) if changes else NOW
    got = effective_consent(_history(changes), when, DEFAULT_CONSENT)
    before = _state_at([c for c in changes if c.event_time < when], None)
    at = _state_at(changes, when)
    latest = _state_at(changes, None)
    for state in (before, at, latest):
        product, electronic = state if state is not None else (False, False)
        assert got.product_data_marketing <= product
        assert got.electronic_marketing <= electronic


@given(
    histories(),
    st.lists(st.integers(1, 4), min_size=0, max_size=12),
    st.datetimes(datetime(2006, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)),
    st.integers(1, 5),
)
def test_a_checkout_appended_with_consent_changes_takes_the_stricter_of_with_and_without_them(
    changes: list[ConsentChange], appended: list[int], when: datetime, checkout_ms: int
) -> None:
    # Records are appended in non-decreasing milliseconds; the checkout is appended at checkout_ms.
    stamps = sorted((appended + [1] * len(changes))[: len(changes)])
    pairs = list(zip(changes, stamps, strict=True))
    history = _written_history(pairs)
    known = [(c, ms) for c, ms in pairs if ms <= checkout_ms]
    earlier = [(c, ms) for c, ms in pairs if ms < checkout_ms]
    got = effective_consent(history, when, DEFAULT_CONSENT, checkout_ms)
    if not known:
        return  # the checkout came first: the router never asks with this history
    with_tie = effective_consent(_written_history(known), when, DEFAULT_CONSENT)
    without_tie = effective_consent(_written_history(earlier), when, DEFAULT_CONSENT)
    if len(known) == len(pairs) and stamps and stamps[-1] == checkout_ms:
        # A tie: never looser than either reading, and exactly their stricter combination.
        assert got.product_data_marketing == (with_tie.product_data_marketing and without_tie.product_data_marketing)
        assert got.electronic_marketing == (with_tie.electronic_marketing and without_tie.electronic_marketing)
    elif len(known) == len(pairs):
        # No change in the checkout's millisecond: the rule without the checkout's append time.
        assert got == with_tie


def _written_history(pairs: list[tuple[ConsentChange, int]]) -> ConsentHistory:
    h = ConsentHistory()
    for change, ms in pairs:
        h = h.with_change(change, written_ms=ms)
    return h


def _newest_written(pairs: list[tuple[ConsentChange, int]]) -> tuple[bool, bool] | None:
    """Brute force: the state of the newest written changes, those of one millisecond combined."""
    if not pairs:
        return None
    last = max(ms for _, ms in pairs)
    tied = [c for c, ms in pairs if ms == last]
    return all(c.product_data_marketing for c in tied), all(c.electronic_marketing for c in tied)


@given(histories(), st.data())
def test_the_newest_written_change_is_in_force_whatever_the_event_times(
    changes: list[ConsentChange], data: st.DataObject
) -> None:
    """Append times drawn apart from the event times (a grant dated ahead, a register clock behind): the
    change written last rules "now", in whatever order the records are applied."""
    stamps = data.draw(st.lists(st.integers(1, 8), min_size=len(changes), max_size=len(changes)))
    pairs = list(zip(changes, stamps, strict=True))
    order = data.draw(st.permutations(pairs))
    history = _written_history(list(order))
    latest = history.latest()
    expected = _newest_written(pairs)
    assert (None if latest is None else (latest.product_data_marketing, latest.electronic_marketing)) == expected
    assert history.changes == _written_history(sorted(pairs, key=lambda p: p[1])).changes  # arrival order: no matter
    when = data.draw(st.datetimes(datetime(2006, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)))
    got = effective_consent(history, when, DEFAULT_CONSENT)
    if expected is not None:  # never looser than the newest written, whenever the purchase was made
        assert got.product_data_marketing <= expected[0] and got.electronic_marketing <= expected[1]


@given(
    st.datetimes(datetime(2020, 1, 1), datetime(2026, 11, 1), timezones=st.just(UTC)),
    st.timedeltas(timedelta(0), timedelta(days=400)),
    st.timedeltas(timedelta(milliseconds=1), timedelta(days=30)),  # after the withdrawal: none before it
)
def test_a_grant_dated_ahead_never_outranks_a_withdrawal_written_after_it(
    now: datetime, ahead: timedelta, purchase_after: timedelta
) -> None:
    """The issue's case: a grant dated ahead (by any amount), then the card holder's withdrawal dated now
    and written later. No purchase, made at any time from now on, is routed with product data."""
    grant = ConsentChange(CARD, now + ahead, True, True)
    withdrawal = ConsentChange(CARD, now, False, True)
    written = int(now.timestamp() * 1000)
    history = _written_history([(grant, written), (withdrawal, written + 1)])
    consent = effective_consent(history, now + purchase_after, DEFAULT_CONSENT)
    assert not consent.product_data_marketing
    assert consent.electronic_marketing  # the withdrawal kept e-mail marketing: not vacuous


def test_changes_of_one_millisecond_count_from_the_state_before_the_first_of_them() -> None:
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    card = "6390000000001"
    history = ConsentHistory().with_change(ConsentChange(card, t, False, False), written_ms=10)
    history = history.with_change(ConsentChange(card, t + timedelta(seconds=1), True, False), written_ms=20)
    history = history.with_change(ConsentChange(card, t + timedelta(seconds=2), True, True), written_ms=20)
    assert history.written_ms == 20
    assert history.before_written == (history.changes[0],)
    purchase = t + timedelta(seconds=5)
    assert effective_consent(history, purchase, DEFAULT_CONSENT, 20) == ConsentState(False, False, known=True)
    # The two written in millisecond 20 count as their stricter combination, whatever their event times.
    assert effective_consent(history, purchase, DEFAULT_CONSENT, 21) == ConsentState(True, False, known=True)
    assert effective_consent(history, purchase, DEFAULT_CONSENT) == ConsentState(True, False, known=True)


def test_changes_of_one_producer_batch_count_in_offset_order() -> None:
    """The broker stamps a whole producer batch with one append time: a card's changes in it are on one
    partition, and the later offset is the card holder's later word (a withdrawal then a re-grant)."""
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    withdrawal, regrant = ConsentChange(CARD, t, False, True), ConsentChange(CARD, t + timedelta(seconds=1), True, True)
    for first, second, newest in ((withdrawal, regrant, True), (regrant, withdrawal, False)):
        history = (
            ConsentHistory().with_change(first, written_ms=5, offset=10).with_change(second, written_ms=5, offset=11)
        )
        latest = history.latest()
        assert latest is not None and latest.product_data_marketing is newest
