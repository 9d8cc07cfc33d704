"""The web page's pure parts: languages and formats, sign-in links, rate limits, charts, page facts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.fold import ConsentMark, Profile, apply_consent
from receiptflow.web.auth import Links, Login, RateLimiter, UsedLinks, csrf_ok, may_see_card
from receiptflow.web.charts import Bar, bar_chart
from receiptflow.web.i18n import NBSP, euros, local_time, negotiate, percent
from receiptflow.web.pages import product_gap
from receiptflow.web.texts import TEXTS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cents", "en", "fi"),
    [
        (104_495, "1,044.95 €", f"1{NBSP}044,95{NBSP}€"),
        (5, "0.05 €", f"0,05{NBSP}€"),
        (123_456_789, "1,234,567.89 €", f"1{NBSP}234{NBSP}567,89{NBSP}€"),
        (-250, "-2.50 €", f"-2,50{NBSP}€"),
    ],
)
def test_euros_in_english_and_finnish(cents: int, en: str, fi: str) -> None:
    assert euros(cents, "en") == en
    assert euros(cents, "fi") == fi


@pytest.mark.parametrize(
    ("cookie", "header", "lang"),
    [
        (None, "fi-FI,fi;q=0.9,en;q=0.8", "fi"),
        (None, "en-GB,en;q=0.9,fi;q=0.8", "en"),
        (None, "sv-FI,fi;q=0.7,en;q=0.9", "en"),
        (None, "de-DE,de", "en"),
        (None, "", "en"),
        (None, "fi;q=0,en;q=0.1", "en"),
        ("fi", "en-GB", "fi"),
        ("xx", "fi", "fi"),
    ],
)
def test_language_from_the_switch_else_the_browser(cookie: str | None, header: str, lang: str) -> None:
    assert negotiate(cookie, header) == lang


def test_times_are_finnish_local_time() -> None:
    # 2026-07-01 21:05 UTC is 2 July 00:05 in Helsinki (summer time, +3).
    assert local_time("2026-07-01T21:05:00+00:00", "fi") == "2.7.2026 klo 0.05"
    assert local_time("2026-12-01T18:15:00+00:00", "en") == "1 Dec 2026, 20:15"
    assert percent(0.1234, "fi", 1) == f"12,3{NBSP}%"


def test_every_text_has_both_languages() -> None:
    assert all(fi.strip() and en.strip() for fi, en in TEXTS.values())


def links(tmp_path: Path, now: list[float], minutes: int = 15) -> Links:
    return Links(b"k" * 32, minutes, UsedLinks(tmp_path / "used", clock=lambda: now[0]))


def test_a_link_works_once_even_across_a_restart(tmp_path: Path) -> None:
    now = [1_000_000.0]
    first = links(tmp_path, now)
    token = first.make("customer", "1001")
    assert first.check(token) == Login("customer", "1001")
    assert first.redeem(token) == Login("customer", "1001")
    assert first.redeem(token) is None
    restarted = links(tmp_path, now)  # a new server process reads the same record
    assert restarted.redeem(token) is None
    assert restarted.redeem(first.make("customer", "1001")) == Login("customer", "1001")


def test_a_link_from_another_key_or_of_an_unknown_role_is_refused(tmp_path: Path) -> None:
    now = [1_000_000.0]
    other = Links(b"z" * 32, 15, UsedLinks(tmp_path / "other"))
    assert links(tmp_path, now).check(other.make("customer", "1001")) is None
    with pytest.raises(ValueError, match="unknown role"):
        other.make("admin", "x")
    forged = other._serializer.dumps({"r": "admin", "s": "x", "n": "1"})
    assert other.check(forged) is None


def test_the_record_of_used_links_forgets_them_once_they_expired(tmp_path: Path) -> None:
    now = [1_000.0]
    used = UsedLinks(tmp_path / "used", clock=lambda: now[0])
    assert used.claim("a", 1_100.0) and not used.claim("a", 1_100.0)
    now[0] = 1_200.0
    assert used.claim("b", 1_300.0)
    assert "a" not in (tmp_path / "used").read_text()


def test_who_may_see_a_card() -> None:
    assert may_see_card(Login("customer", "1001"), "1001")
    assert not may_see_card(Login("customer", "1001"), "1002")
    assert not may_see_card(Login("customer", "1001"), "10011")
    assert not may_see_card(Login("support", "1001"), "1001")
    assert not may_see_card(Login("cashier", "1001"), "1001")
    assert not may_see_card(None, "1001")
    assert csrf_ok("abc", "abc") and not csrf_ok("abc", "abd") and not csrf_ok(None, None) and not csrf_ok("", "")
    # Non-ASCII is refused, not an error (compare_digest raises TypeError on non-ASCII str).
    assert not may_see_card(Login("customer", "1001"), "\u00e9") and not csrf_ok("abc", "\u00e4")
    assert may_see_card(Login("customer", "10\u00e901"), "10\u00e901") and csrf_ok("\u00e4", "\u00e4")


def test_rate_limiter_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.full("a") and not limiter.full("b") and limiter.allow("b")
    now[0] = 10.5
    assert not limiter.full("a") and limiter.allow("a")


def test_a_chart_escapes_its_labels_and_scales_to_the_largest() -> None:
    svg = str(bar_chart("<b>title</b>", [Bar("<script>", 50, "50"), Bar("b", 100, "100", mark=80)]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;title" in svg
    assert 'width="150.0"' in svg and 'width="300.0"' in svg  # 50 and 100 on a 300-unit scale
    assert 'role="img"' in svg and "stroke-dasharray" in svg
    assert "<rect" not in str(bar_chart("empty", []))


def test_why_product_facts_are_absent() -> None:
    assert product_gap(Profile("1", groups={"dairy": 100}), False) is None
    withdrawn = apply_consent(Profile("1"), ConsentChange("1", datetime(2026, 1, 1, tzinfo=UTC), False, True, "app"))
    assert product_gap(withdrawn, True) == "why_no_product_consent"
    assert product_gap(Profile("1"), False) == "why_no_product_consent"  # no record, default off
    assert product_gap(Profile("1"), True) == "why_no_items"
    assert product_gap(Profile("1", consent=ConsentMark(True, 1)), False) == "why_no_items"
