"""topics list and dlq list for people: headers, whole names, local times, durations, the terminal's width."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rich.console import Console

from receiptflow.cli.contract import topics_lines
from receiptflow.cli.produce import simulate_report
from receiptflow.cli.read import print_dead_letters
from receiptflow.config import Settings
from receiptflow.dlq import DeadLetter
from receiptflow.errors import ValidationError
from receiptflow.producers.simulator import GroundTruth, Simulator, Traffic
from receiptflow.topics import CATALOGUE, TopicNames
from receiptflow.validation import validate

pytestmark = pytest.mark.unit


def test_topics_list_has_a_header_whole_names_and_human_retention() -> None:
    settings = Settings(kafka={"topic_prefix": "staging-eu-west."})
    lines = topics_lines(settings, 80)
    assert lines[0].split() == ["TOPIC", "KEPT", "KEY"]
    text = "\n".join(lines)
    names = TopicNames(settings.kafka.topic_prefix)
    for spec in CATALOGUE:
        assert f"\n{names.physical(spec.name)} " in text
    assert "14 days" in text and "retention.ms" not in text and "…" not in text
    assert all(len(line) <= 80 for line in lines if line.startswith("    "))


def _letter(failed_at: datetime) -> DeadLetter:
    return DeadLetter(
        offset=7,
        reason="future_event_time",
        message="event_time 2026-12-01T22:00:00+02:00 is after 2026-12-01T20:31:05+02:00",
        field="event_time",
        source_topic="staging-eu-west.checkouts",
        source_partition=2,
        source_offset=1234,
        original_key=None,
        original_value=None,
        processor="router",
        failed_at=failed_at,
    )


@pytest.mark.parametrize("terminal", [True, False])
def test_dlq_list_has_a_header_and_local_times(terminal: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=terminal, color_system=None)
    print_dead_letters(console, [_letter(datetime(2026, 12, 1, 18, 31, 5, tzinfo=UTC))])
    text = out.getvalue()
    assert "offset" in text and "rejected" in text and "reason" in text
    assert "2026-12-01 20:31 EET" in text and "future_event_time" in text
    if terminal:
        assert all(len(line) <= 80 for line in text.splitlines())
        assert "…" not in text
    else:
        assert "staging-eu-west.checkouts[2]@1234" in text and "is after" in text


def test_a_future_receipt_is_compared_with_now_in_its_own_offset() -> None:
    helsinki = timezone(timedelta(hours=2))
    now = datetime(2026, 12, 1, 18, 31, 5, tzinfo=UTC)
    sale = next(iter(Simulator(1, stores=1, customers=1).stream(1, now, rate=1.0)))
    ahead = replace(sale, event_time=(now + timedelta(hours=1)).astimezone(helsinki))
    with pytest.raises(ValidationError) as caught:
        validate(ahead, now)
    assert "is after 2026-12-01T20:31:05+02:00" in str(caught.value)
    assert "+00:00" not in str(caught.value)


def test_simulate_reports_sign_ups_apart_from_consent_changes() -> None:
    sim = Simulator(5, stores=3, customers=30)
    traffic = Traffic(sim, lambda c: b"", consent_change_rate=0.2)
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    emitted = list(traffic.initial_consents(start)) + list(traffic.emissions(200, start, 10.0))
    changes = sum(1 for e in emitted if e.kind == "consent" and e.consent is not None and e.consent.source == "app")
    truth: GroundTruth = sim.truth
    signups = len(truth.consents) - changes
    assert signups > 0 and changes > 0
    report = simulate_report(truth)
    assert f"{signups} consents given at sign-up and {changes} consent changes" in report
    assert " €" in report and "cents" not in report
