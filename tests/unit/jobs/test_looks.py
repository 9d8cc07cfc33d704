"""The audit of looks, its pure parts: the entry written is the look read back, selection by card and
local dates, the count check, who may look; and every staff look refuses to start without who and why."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptflow.cli import main
from receiptflow.errors import UsageError
from receiptflow.jobs import subject
from receiptflow.jobs.looks import (
    AUDIT_STREAMS,
    ERASURES_STREAM,
    KINDS,
    LOOKS_STREAM,
    Look,
    Looker,
    day_bounds,
    look_entry,
    looker,
    parse_look,
    removed_outside_trims,
    select_looks,
)

pytestmark = pytest.mark.unit

printable = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


def test_the_streams_are_the_ones_the_jobs_write() -> None:
    assert ERASURES_STREAM == subject.AUDIT_STREAM
    assert set(AUDIT_STREAMS) >= {LOOKS_STREAM, ERASURES_STREAM}
    assert all(s.startswith("rf:audit:") for s in AUDIT_STREAMS)  # the key pattern of users.acl


@given(
    principal=printable.map(lambda s: "".join(s.split())[:64] or "x"),
    reason=printable,
    kind=st.sampled_from(sorted(KINDS)),
    via=st.sampled_from(["cli", "web"]),
    at=moments,
    detail=st.text(max_size=20),
)
def test_an_entry_reads_back_as_the_look_written(
    principal: str, reason: str, kind: str, via: str, at: datetime, detail: str
) -> None:
    who = looker(principal, reason, via, "os-user")
    entry = look_entry(who, kind, "ab" * 16, at, detail)
    assert all(isinstance(v, str) for v in entry.values())  # what a stream entry holds
    look = parse_look("1-0", entry)
    assert look == Look("1-0", at, kind, who.principal, via, who.reason, "ab" * 16, "os-user", detail)
    assert look.as_json()["at"] == at.isoformat()


def test_an_old_support_view_entry_reads_as_a_support_look_without_reason() -> None:
    old = {"at": "2026-05-01T10:00:00+00:00", "subject": "cd" * 16, "who": "anna", "view": "full"}
    look = parse_look("5-0", old)
    assert (look.kind, look.principal, look.via, look.reason, look.subject) == (
        "support-view",
        "anna",
        "web",
        "",
        old["subject"],
    )


def test_who_looks_and_why_are_required_and_kept_to_one_line() -> None:
    with pytest.raises(UsageError, match="--as"):
        looker(None, "ticket 7")
    with pytest.raises(UsageError, match="--as"):
        looker("  ", "ticket 7")
    with pytest.raises(UsageError, match="--reason"):
        looker("anna", None)
    with pytest.raises(UsageError, match="--reason"):
        looker("anna", " \n ")
    with pytest.raises(UsageError, match="login name"):
        looker("anna smith", "ticket 7")
    with pytest.raises(UsageError, match="too long"):
        looker("anna", "x" * 301)
    assert looker("anna", " ticket\n  7 ", os_user="u") == Looker("anna", "ticket 7", "cli", "u")


def _look(i: int, at: datetime, subject: str) -> Look:
    return Look(f"{i}-0", at, "export", "anna", "cli", "r", subject)


def test_local_dates_bound_the_period_in_helsinki_time_across_summer_time() -> None:
    # 1 July: EEST (UTC+3); 1 January: EET (UTC+2). Both days are included.
    low, high = day_bounds(date(2026, 7, 1), date(2026, 7, 1))
    assert low == datetime(2026, 6, 30, 21, tzinfo=UTC) and high == datetime(2026, 7, 1, 21, tzinfo=UTC)
    low, high = day_bounds(date(2026, 1, 1), None)
    assert low == datetime(2025, 12, 31, 22, tzinfo=UTC) and high is None
    with pytest.raises(UsageError, match="before --since"):
        day_bounds(date(2026, 7, 2), date(2026, 7, 1))


@given(st.lists(st.tuples(moments, st.sampled_from(["a" * 32, "b" * 32])), max_size=30), moments, moments)
def test_selection_keeps_exactly_the_card_s_looks_in_the_period_oldest_first(
    raw: list[tuple[datetime, str]], one: datetime, two: datetime
) -> None:
    looks = [_look(i, at, s) for i, (at, s) in enumerate(raw)]
    since, before = min(one, two), max(one, two)
    chosen = select_looks(looks, "a" * 32, since, before)
    assert chosen == sorted(
        [x for x in looks if x.subject == "a" * 32 and since <= x.at < before], key=lambda x: (x.at, x.id)
    )
    assert select_looks(looks) == sorted(looks, key=lambda x: (x.at, x.id))
    # The periods before and from a moment split the looks, none lost, none twice.
    middle = since + (before - since) / 2
    assert len(select_looks(looks, None, None, middle)) + len(select_looks(looks, None, middle)) == len(looks)


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000))
def test_removals_are_what_was_added_less_what_is_held_and_trimmed(held: int, trimmed: int, removed: int) -> None:
    assert removed_outside_trims(held + trimmed + removed, held, trimmed) == removed


def test_an_entry_needs_a_known_kind_and_an_aware_time() -> None:
    who = Looker("anna", "r")
    with pytest.raises(ValueError, match="kind"):
        look_entry(who, "peek", "a" * 32, datetime.now(UTC))
    with pytest.raises(ValueError, match="zone"):
        look_entry(who, "export", "a" * 32, datetime(2026, 1, 1) + timedelta(0))


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "2710000000000001", "--reason", "ticket 7"],
        ["export", "2710000000000001", "--as", "anna"],
        ["profile", "2710000000000001", "--view", "full", "--as", "anna"],
        ["profile", "2710000000000001", "--view", "full", "--reason", "ticket 7"],
        ["web", "link", "2710000000000001", "--as", "anna"],
    ],
)
def test_a_staff_look_without_who_or_why_is_refused_before_anything_connects(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RECEIPTFLOW_OPERATOR", raising=False)
    monkeypatch.setenv("RECEIPTFLOW_DATA_DIR", str(tmp_path))
    # Nothing listens here: a command that connected first would fail otherwise than with the usage line.
    monkeypatch.setenv("RECEIPTFLOW_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("RECEIPTFLOW_REDIS_URL", "redis://127.0.0.1:9/0")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = " ".join(captured.err.split())
    assert ("--as" in err or "--reason" in err) and "audit" in err and "Traceback" not in err
    assert len(captured.err.strip().splitlines()) == 1
