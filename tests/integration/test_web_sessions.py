"""The page's sessions against the real Redis and Kafka: sign-out and erasure end them at once.

The application runs in process (Starlette's TestClient) over the install's own backend: the
session's Redis with its ACL users, the session's Kafka and a DuckDB warehouse. A "copied cookie" is
the session cookie of one client set on another, as an attacker who copied it would.

* A copied cookie is refused once its session signed out: no download of the export.
* Erasure ends every session of the card, other browsers' included: with a cookie copied before the
  erasure, a consent change is refused and nothing new for the card reaches the ``consents`` topic;
  the erase form is neither offered nor run again; a sign-in link made before the erasure opens no
  session.
* A card erased by ``receiptflow erase`` (the job, not the page) while a session of it is open: the
  page refuses every action of that session and offers no erasure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis
from starlette.testclient import TestClient

from receiptflow.cli import main
from receiptflow.config import Settings
from receiptflow.jobs.subject import audit_log, erase_card
from receiptflow.models import ConsentChange
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import open_sink
from receiptflow.topics import TopicNames, create_topics
from receiptflow.web.app import build_app
from receiptflow.web.sessions import session_key

from .conftest import RedisServer
from .support import env_for, read_all

pytestmark = pytest.mark.integration

MakeSettings = Callable[..., Settings]
COOKIE = "receiptflow_session"


@pytest.fixture
def site(make_settings: MakeSettings) -> Iterator[Settings]:
    s = make_settings()
    s.local.data_dir.mkdir(parents=True, exist_ok=True)
    create_topics(s)
    open_sink(s).close()  # the warehouse exists, so download and erasure can open it
    yield s


def _client(settings: Settings) -> TestClient:
    c = TestClient(build_app(settings), base_url="http://127.0.0.1:8080")
    c.headers["Accept-Language"] = "en"
    return c


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None, text
    return found.group(1)


def _link_token(c: TestClient, role: str, subject: str) -> str:
    token: str = c.app.state.web.links.make(role, subject)  # type: ignore[attr-defined]
    return token


def _sign_in(c: TestClient, card: str, token: str | None = None) -> int:
    """Sign ``c`` in with a link for ``card``; the status of the sign-in POST."""
    token = token or _link_token(c, "customer", card)
    page = c.get(f"/signin/{token}")
    if page.status_code != 200:
        return page.status_code
    return c.post("/signin", data={"token": token, "csrf": _csrf(page.text)}, follow_redirects=False).status_code


def _copy(settings: Settings, source: TestClient) -> TestClient:
    """A new client, another browser, that holds ``source``'s session cookie."""
    cookie = source.cookies.get(COOKIE)
    assert cookie
    thief = _client(settings)
    thief.cookies.set(COOKIE, cookie)
    return thief


def _consents_of(settings: Settings, card: str) -> list[bytes | None]:
    """The values of the ``consents`` topic's records keyed by ``card``, in order (None: a tombstone)."""
    topic = TopicNames(settings.kafka.topic_prefix).consents
    return [m.value() for m in read_all(settings, topic) if m.key() == card.encode()]


def _erasure_entries(settings: Settings, card: str) -> int:
    subject = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT).erased_hash(card)
    return sum(1 for e in audit_log(settings) if e.get("subject") == subject)


def test_a_copied_cookie_is_refused_after_sign_out(site: Settings) -> None:
    card = "4006001001"
    browser = _client(site)
    assert _sign_in(browser, card) == 303
    thief = _copy(site, browser)
    assert thief.get(f"/card/{card}/data.json").status_code == 200  # the copy works while the session lives
    csrf = _csrf(browser.get(f"/card/{card}/data").text)
    assert browser.post("/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert browser.get(f"/card/{card}").status_code == 401
    download = thief.get(f"/card/{card}/data.json")
    assert download.status_code == 401 and '"card_id"' not in download.text
    assert thief.get(f"/card/{card}").status_code == 401


def test_erasure_revokes_every_session_of_the_card(site: Settings) -> None:
    card = "4006002002"
    client = RegisterClient(site)
    client.send_consent(ConsentChange(card, datetime.now(UTC), True, True, "app"))
    client.flush()
    browser, other = _client(site), _client(site)
    assert _sign_in(browser, card) == 303
    assert _sign_in(other, card) == 303  # the same card on another browser
    thief = _copy(site, browser)
    stolen_csrf = _csrf(thief.get(f"/card/{card}/consents").text)
    # While the session lives, the copy saves a consent like its owner: what is refused later is the card.
    before = len(_consents_of(site, card))
    saved = thief.post(f"/card/{card}/consents", data={"email": "on", "csrf": stolen_csrf}, follow_redirects=False)
    assert saved.status_code == 303 and len(_consents_of(site, card)) == before + 1
    early_link = _link_token(browser, "customer", card)  # made before the erasure, not used yet

    csrf = _csrf(browser.get(f"/card/{card}/erase?step=confirm").text)
    erased = browser.post(f"/card/{card}/erase", data={"csrf": csrf, "confirm": "yes"})
    assert erased.status_code == 200 and "Your data has been erased." in erased.text
    entries = _erasure_entries(site, card)
    assert entries > 0
    on_topic = _consents_of(site, card)
    assert on_topic[-1] is None  # the erasure's tombstone

    # The copied cookie: no consent change, nothing new on the compacted topic.
    saved = thief.post(
        f"/card/{card}/consents",
        data={"product_data": "on", "email": "on", "csrf": stolen_csrf},
        follow_redirects=False,
    )
    assert saved.status_code in (401, 410) and "saved" not in saved.headers.get("location", "")
    assert _consents_of(site, card) == on_topic
    # Neither the copy nor the other browser is signed in any more; the erase form is not offered.
    for c in (thief, other, browser):
        page = c.get(f"/card/{card}/erase?step=confirm")
        assert page.status_code in (401, 410) and 'id="erase-now"' not in page.text
        again = c.post(f"/card/{card}/erase", data={"csrf": stolen_csrf, "confirm": "yes"})
        assert again.status_code in (401, 410)
        assert c.get(f"/card/{card}/data.json").status_code in (401, 410)
    assert _erasure_entries(site, card) == entries  # erasure did not run again
    # A sign-in link made before the erasure opens no session.
    late = _client(site)
    assert _sign_in(late, card, early_link) == 410
    assert late.get(f"/card/{card}").status_code == 401
    assert _sign_in(late, card) == 410  # nor does a new one


def test_a_card_erased_elsewhere_has_no_page_action(site: Settings) -> None:
    card = "4006003003"
    browser = _client(site)
    assert _sign_in(browser, card) == 303
    csrf = _csrf(browser.get(f"/card/{card}/consents").text)
    erase_card(site, card)  # `receiptflow erase`, not the page
    entries = _erasure_entries(site, card)
    on_topic = _consents_of(site, card)
    page = browser.get(f"/card/{card}/erase")
    assert page.status_code == 410 and "has been erased" in page.text and "erase-continue" not in page.text
    saved = browser.post(f"/card/{card}/consents", data={"product_data": "on", "csrf": csrf}, follow_redirects=False)
    assert saved.status_code in (401, 410)
    assert browser.post(f"/card/{card}/erase", data={"csrf": csrf, "confirm": "yes"}).status_code in (401, 410)
    assert browser.get(f"/card/{card}/data.json").status_code in (401, 410)
    assert browser.get(f"/card/{card}/mix").status_code in (401, 410)
    assert _consents_of(site, card) == on_topic
    assert _erasure_entries(site, card) == entries


def test_web_link_refuses_an_erased_card_in_one_line(
    site: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    card = "4006003004"
    for name, value in env_for(site).items():
        monkeypatch.setenv(name, value)
    look = ["--as", "anna", "--reason", "ticket 9"]
    assert main(["web", "link", card, *look]) == 0  # before the erasure: a link
    assert "/signin/" in capsys.readouterr().out
    erase_card(site, card)
    assert main(["web", "link", card, *look]) == 2
    captured = capsys.readouterr()
    assert "/signin/" not in captured.out
    said = captured.err.strip().splitlines()
    assert len(said) == 1 and f"card {card} was erased" in said[0] and "Traceback" not in captured.err


def test_the_cookie_holds_an_id_and_redis_the_session_as_its_own_user(
    site: Settings, redis_server: RedisServer
) -> None:
    card = "4006004004"
    browser = _client(site)
    assert _sign_in(browser, card) == 303
    session_id = browser.cookies.get(COOKIE)
    assert session_id is not None and re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)
    admin = redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN), decode_responses=True)
    key = session_key(session_id)
    record = json.loads(admin.get(key) or "{}")
    assert record["data"]["role"] == "customer" and record["data"]["subject"] == card
    assert 0 < admin.ttl(key) <= site.web.session_idle_minutes * 60
    web_keys = [k for k in admin.scan_iter("rf:web:*", count=1000)]
    assert key in web_keys and not [k for k in web_keys if card in k or session_id in k]
    lists = [k for k in web_keys if k.startswith("rf:web:c:") and admin.sismember(k, key.removeprefix("rf:web:s:"))]
    assert len(lists) == 1
    # The sessions' user reaches the session keys only: no profile, no erased marker, no audit stream.
    sessions = redis.Redis.from_url(redis_server.role_url(RedisRole.WEB_SESSIONS), decode_responses=True)
    assert sessions.get(key) == admin.get(key)
    keys = RedisProfileStore.from_settings(site, RedisRole.SUPPORT).keys_for(card)
    for command in (("HGETALL", keys.profile), ("GET", keys.erased), ("XRANGE", "rf:audit:erasures", "-", "+")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            sessions.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        sessions.execute_command("SCAN", 0)
