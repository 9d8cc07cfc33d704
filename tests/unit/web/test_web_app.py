"""The web page's HTTP layer: sign-in links, who sees what, CSRF, rate limits, languages, the pages.

The app runs in process (Starlette's TestClient) over a backend that holds profiles folded by the
pure profile code in memory, and the session store over the few Redis commands it uses, in memory
(:mod:`.memory_redis`); the same routes against the real Redis, Kafka and warehouse are the browser
tests' (tests/integration/test_web.py) and tests/integration/test_web_sessions.py.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from receiptflow.config import Settings
from receiptflow.errors import ProfileStoreError
from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.fold import Profile
from receiptflow.processors.profiles.rules import epoch_day
from receiptflow.processors.profiles.views import render
from receiptflow.web.app import build_app
from receiptflow.web.data import Backend, CustomerPage
from receiptflow.web.sessions import Limits, SessionStore
from receiptflow.web.state import SIGNIN_LIMIT

from .memory_redis import MemoryRedis

pytestmark = pytest.mark.unit


class MemoryBackend(Backend):
    """Profiles held in memory; records what the page asked to change."""

    def __init__(self, settings: Settings, profiles: dict[str, Profile]) -> None:
        super().__init__(settings)
        self.profiles = profiles
        self.consents: list[tuple[str, bool, bool]] = []
        self.looks: list[tuple[str, str]] = []
        self.erasures: list[str] = []
        self.now = 1_800_000_000.0  # the sessions' clock
        self.sessions = SessionStore(
            MemoryRedis(lambda: self.now),  # type: ignore[arg-type]
            b"i" * 32,
            Limits.from_settings(settings),
            lambda: self.now,
        )

    def customer(self, card: str, now: datetime | None = None) -> CustomerPage | None:
        p = self.profiles.get(card)
        return None if p is None else CustomerPage(render(p, "customer", now or datetime.now(UTC)), p)

    def warehouse_facts(self, card: str, now: datetime | None = None) -> dict[str, Any] | None:
        return None

    def set_consents(self, card: str, product_data: bool, email: bool, now: datetime | None = None) -> ConsentChange:
        self.consents.append((card, product_data, email))
        return ConsentChange(card, datetime.now(UTC), product_data, email, "web")

    def support_look(
        self, card: str, who: str, reason: str, now: datetime | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        self.looks.append((card, who, reason))
        p = self.profiles.get(card)
        return (None if p is None else render(p, "full", datetime.now(UTC))), f"1-{len(self.looks)}"

    def erased(self, card: str) -> bool:
        return card in self.erasures

    def erase(self, card: str) -> dict[str, Any]:
        self.erasures.append(card)
        self.profiles.pop(card, None)
        return {}


@pytest.fixture
def backend(tmp_path: Path) -> MemoryBackend:
    settings = Settings(
        local={"data_dir": tmp_path / "data"}, kafka={"bootstrap_servers": "127.0.0.1:1"}, web={"secret_key": "k" * 32}
    )
    today = epoch_day(datetime.now(UTC).date())
    profiles = {
        "1001": Profile(
            "1001",
            visits=3,
            spend_cents=313_488,
            days={today: (2, 209_000), today - 40: (1, 104_488)},
            points=3134,
            groups={"dairy": 600, "vegetables": 400},
        ),
        "2002": Profile("2002", visits=1, spend_cents=100, days={today: (1, 100)}),
    }
    return MemoryBackend(settings, profiles)


def client(backend: MemoryBackend, lang: str = "en") -> TestClient:
    c = TestClient(build_app(backend.settings, backend, backend.sessions), base_url="http://127.0.0.1:8080")
    c.headers["Accept-Language"] = lang
    return c


def sign_in(c: TestClient, role: str, subject: str) -> None:
    token = c.app.state.web.links.make(role, subject)  # type: ignore[attr-defined]
    page = c.get(f"/signin/{token}")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = c.post("/signin", data={"token": token, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303


def csrf_of(c: TestClient, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get(path).text).group(1)  # type: ignore[union-attr]


def test_a_link_signs_in_once_and_shows_only_the_own_card(backend: MemoryBackend) -> None:
    c = client(backend)
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    sign_in_page = c.get(f"/signin/{token}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', sign_in_page.text).group(1)  # type: ignore[union-attr]
    assert c.post("/signin", data={"token": token, "csrf": csrf}, follow_redirects=False).status_code == 303
    assert c.get("/", follow_redirects=False).headers["location"] == "/card/1001"
    page = c.get("/card/1001")
    assert page.status_code == 200 and "Nothing is held" not in page.text
    assert c.get("/card/2002").status_code == 403
    assert c.get("/card/2002/data.json").status_code == 403
    # The same link again, in a new browser: used up.
    other = client(backend)
    page = other.get(f"/signin/{token}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert other.post("/signin", data={"token": token, "csrf": csrf}).status_code == 400
    assert other.get("/card/1001").status_code == 401


def test_a_forged_or_expired_link_is_refused(backend: MemoryBackend) -> None:
    c = client(backend)
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    # A changed character well inside the signature: the last one's low bits are padding, so replacing
    # the last two could leave the signature as it was (once in about a thousand runs).
    forged = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    assert c.get(f"/signin/{forged}").status_code == 400
    expired = backend.settings.model_copy(update={"web": {"link_minutes": 1}})
    later = TestClient(build_app(expired, backend, backend.sessions))
    old = later.app.state.web.links  # type: ignore[attr-defined]
    signed = old._serializer.dumps({"r": "customer", "s": "1001", "n": "x"})
    import time as _time  # noqa: PLC0415

    real = _time.time
    try:
        _time.time = lambda: real() + 120  # type: ignore[assignment]
        assert old.check(signed) is None
    finally:
        _time.time = real  # type: ignore[assignment]


def test_cashier_gets_403_on_every_profile_page_and_support_is_audited(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "cashier", "register-7")
    for path in ["/", "/card/1001", "/card/1001/mix", "/card/1001/data.json", "/support", "/support/card/1001"]:
        assert c.get(path).status_code == 403, path
    s = client(backend)
    sign_in(s, "support", "anna")
    assert s.get("/card/1001").status_code == 403  # support has the audited view only
    page = s.get("/support/card/1001")  # no reason given: asked for, nothing looked at
    assert page.status_code == 400 and 'id="reason-needed"' in page.text and "card_id" not in page.text
    assert s.get("/support/card/1001", params={"reason": "x" * 301}).status_code == 400  # not a 503
    assert backend.looks == []
    page = s.get("/support/card/1001", params={"reason": "  ticket\n 7 "})
    assert page.status_code == 200 and '"card_id": "1001"' in html.unescape(page.text) and "1-1" in page.text
    assert backend.looks == [("1001", "anna", "ticket 7")]


def test_nobody_signed_in_gets_401_on_every_page_that_needs_a_login(backend: MemoryBackend) -> None:
    c = client(backend)
    for path in ["/", "/card/1001", "/card/1001/mix", "/card/1001/data.json", "/support", "/support/card/1001"]:
        assert c.get(path).status_code == 401, path
    for path in ["/card/1001/consents", "/card/1001/erase"]:
        assert c.post(path, data={"confirm": "yes"}).status_code == 401, path
    assert backend.consents == [] and backend.erasures == [] and backend.looks == []


class FailingBackend(MemoryBackend):
    """A backend whose stores do not answer."""

    def customer(self, card: str, now: datetime | None = None) -> CustomerPage | None:
        raise ProfileStoreError("cannot read profile: Redis does not answer\nthe details")

    def support_look(
        self, card: str, who: str, reason: str, now: datetime | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        raise ProfileStoreError("cannot write the audit entry\nthe details")


def test_a_store_that_does_not_answer_is_503_with_its_first_line(backend: MemoryBackend) -> None:
    failing = FailingBackend(backend.settings, {})
    c = client(failing)
    sign_in(c, "customer", "1001")
    page = c.get("/card/1001/mix")
    assert page.status_code == 503 and "Redis does not answer" in page.text and "the details" not in page.text
    s = client(failing)
    sign_in(s, "support", "anna")
    page = s.get("/support/card/1001", params={"reason": "ticket 7"})
    assert page.status_code == 503 and "cannot write the audit entry" in page.text
    assert s.get("/support").status_code == 200  # no card asked for: nothing read


def test_non_ascii_card_or_token_is_refused_not_a_server_error(backend: MemoryBackend) -> None:
    # secrets.compare_digest refuses non-ASCII str; an attacker's é or ä must meet the same 403 as any other.
    c = client(backend)
    sign_in(c, "customer", "1001")
    assert c.get("/card/%C3%A9").status_code == 403
    assert c.get("/card/1001%C3%A9/data.json").status_code == 403
    assert c.post("/card/1001/consents", data={"product_data": "on", "csrf": "\u00e4"}).status_code == 403
    assert c.post("/card/%C3%A9/consents", data={"product_data": "on", "csrf": "\u00e4"}).status_code == 403


def test_changes_need_the_csrf_token(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    assert c.post("/card/1001/consents", data={"product_data": "on"}).status_code == 403
    assert c.post("/card/1001/consents", data={"product_data": "on", "csrf": "forged"}).status_code == 403
    assert c.post("/card/1001/erase", data={"confirm": "yes"}).status_code == 403
    assert backend.consents == [] and backend.erasures == []
    csrf = csrf_of(c, "/card/1001/consents")
    r = c.post("/card/1001/consents", data={"product_data": "on", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and backend.consents == [("1001", True, False)]
    assert c.post("/card/2002/consents", data={"email": "on", "csrf": csrf}).status_code == 403
    assert backend.consents == [("1001", True, False)]


def test_erasure_needs_the_confirmation_then_nothing_is_held(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    csrf = csrf_of(c, "/card/1001/erase?step=confirm")
    assert c.post("/card/1001/erase", data={"csrf": csrf}).status_code == 400
    assert backend.erasures == []
    done = c.post("/card/1001/erase", data={"csrf": csrf, "confirm": "yes"})
    assert done.status_code == 200 and "Nothing is held about your card." in done.text
    assert backend.erasures == ["1001"] and "Your data has been erased." in done.text
    assert str(done.url).endswith("/erased")  # a page of its own: reloading it erases nothing
    assert c.get("/card/1001").status_code == 401  # the session ended with the card
    assert c.get("/erased").status_code == 200 and backend.erasures == ["1001"]


def test_sign_in_is_rate_limited(backend: MemoryBackend) -> None:
    c = client(backend)
    for _ in range(SIGNIN_LIMIT + 1):
        sign_in(c, "customer", "1001")  # good links are not what the limit is for
    codes = [c.get("/signin/not-a-token").status_code for _ in range(SIGNIN_LIMIT + 2)]
    assert codes[:SIGNIN_LIMIT] == [400] * SIGNIN_LIMIT and codes[SIGNIN_LIMIT:] == [429, 429]
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    assert c.get(f"/signin/{token}").status_code == 429  # a guesser's address waits, even with a good link


def test_language_by_browser_and_switch(backend: MemoryBackend) -> None:
    c = client(backend, "fi-FI,fi;q=0.9,en;q=0.5")
    sign_in(c, "customer", "1001")
    page = c.get("/card/1001")
    assert '<html lang="fi">' in page.text and "Ostokseni" in page.text
    c.get("/lang/en?next=/card/1001")
    assert '<html lang="en">' in c.get("/card/1001").text
    assert c.get("/lang/en?next=//evil.example", follow_redirects=False).headers["location"] == "/"


def test_the_session_cookie_is_httponly_and_samesite(backend: MemoryBackend) -> None:
    c = client(backend)
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    page = c.get(f"/signin/{token}")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_an_unknown_page_is_404(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    assert c.get("/card/1001/nothing-here").status_code == 404


def test_pages_forbid_scripts_framing_and_referrers(backend: MemoryBackend) -> None:
    c = client(backend)
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    page = c.get(f"/signin/{token}")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' covers scripts
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text
