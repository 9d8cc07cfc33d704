"""The page's server-side sessions: the pure parts, and the routes over the session store in memory.

The pure parts (key names, the TTL, the record's text) directly and with hypothesis; the routes
through Starlette's TestClient with the store over :mod:`.memory_redis` and a clock the test moves.
The same against the real Redis and Kafka: tests/integration/test_web_sessions.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from receiptflow.web.app import build_app
from receiptflow.web.session_middleware import SESSION_COOKIE
from receiptflow.web.sessions import (
    CARD_PREFIX,
    SESSION_PREFIX,
    Limits,
    Record,
    card_key,
    decode,
    encode,
    index_key_of,
    new_session_id,
    seconds_left,
    session_key,
    well_formed,
)

from .memory_redis import MemoryRedis
from .test_web_app import MemoryBackend, backend, client, csrf_of, sign_in

pytestmark = pytest.mark.unit
__all__ = ["backend"]  # the fixture, shared with the app's tests

LIMITS = Limits(idle=1800, absolute=8 * 3600)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


# --- pure --------------------------------------------------------------------------------------------
@given(st.floats(0, 2e9, allow_nan=False), st.dictionaries(st.text(), JSON, max_size=5))
def test_a_record_reads_back_as_written(created: float, data: dict[str, Any]) -> None:
    assert decode(encode(Record(created, data))) == Record(created, data)


@given(st.text())
def test_any_text_that_is_not_a_record_reads_as_none(text: str) -> None:
    record = decode(text)
    assert record is None or isinstance(record.data, dict)


def test_what_is_not_a_record() -> None:
    for text in (None, "", "[]", '{"created": 1}', '{"created": true, "data": {}}', '{"created": "1", "data": {}}'):
        assert decode(text) is None, text
    assert decode('{"created": 5, "data": {"role": "customer", "subject": "1001"}}') == Record(
        5.0, {"role": "customer", "subject": "1001"}
    )


@given(st.floats(0, 2e9, allow_nan=False), st.floats(0, 10 * 3600, allow_nan=False))
def test_a_session_lives_the_idle_limit_within_the_absolute_one(created: float, age: float) -> None:
    ttl = seconds_left(LIMITS, created, created + age)
    assert ttl <= LIMITS.idle
    if age <= LIMITS.absolute - LIMITS.idle - 1:
        assert ttl == LIMITS.idle
    if age >= LIMITS.absolute:
        assert ttl <= 0  # over: the store deletes it
    if ttl > 0:
        assert age + ttl <= LIMITS.absolute + 1e-6  # never beyond the absolute limit


def test_the_limits_come_from_the_web_settings(backend: MemoryBackend) -> None:
    s = backend.settings.model_copy(update={"web": {"session_idle_minutes": 20, "session_hours": 4}})
    assert Limits.from_settings(s) == Limits(1200, 4 * 3600)


def test_keys_name_neither_the_session_id_nor_the_card() -> None:
    sid = new_session_id()
    assert (
        well_formed(sid) and not well_formed(sid + "x") and not well_formed("../" + sid[3:]) and not well_formed(None)
    )
    key = session_key(sid)
    assert key.startswith(SESSION_PREFIX) and sid not in key and len(key) == len(SESSION_PREFIX) + 64
    index = index_key_of(b"web-key-1" * 4)
    lst = card_key(index, "4006001001")
    assert lst.startswith(CARD_PREFIX) and "4006001001" not in lst
    assert lst == card_key(index, "4006001001") != card_key(index, "4006001002")
    assert lst != card_key(index_key_of(b"web-key-2" * 4), "4006001001")  # keyed: another install, another name
    assert card_key(index, "\u00e9") != card_key(index, "e")


def test_only_a_customer_session_names_a_card() -> None:
    assert Record(0, {"role": "customer", "subject": "1001"}).card == "1001"
    assert Record(0, {"role": "support", "subject": "anna"}).card is None
    assert Record(0, {"csrf": "x"}).card is None


# --- the routes ----------------------------------------------------------------------------------------
def _store(backend: MemoryBackend) -> MemoryRedis:
    memory: MemoryRedis = backend.sessions.client  # type: ignore[assignment]
    return memory


def _sessions(backend: MemoryBackend) -> list[str]:
    return [k for k in _store(backend).values if k.startswith(SESSION_PREFIX) and _store(backend).get(k)]


def _copy(backend: MemoryBackend, source: TestClient) -> TestClient:
    thief = client(backend)
    cookie = source.cookies.get(SESSION_COOKIE)
    assert cookie
    thief.cookies.set(SESSION_COOKIE, cookie)
    return thief


def test_the_cookie_holds_a_new_id_per_login_and_the_old_one_ends(backend: MemoryBackend) -> None:
    c = client(backend)
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    page = c.get(f"/signin/{token}")
    before = c.cookies.get(SESSION_COOKIE)
    assert before is not None and well_formed(before) and _sessions(backend) == [session_key(before)]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert c.post("/signin", data={"token": token, "csrf": csrf}, follow_redirects=False).status_code == 303
    after = c.cookies.get(SESSION_COOKIE)
    assert after is not None and after != before  # no fixation
    assert _sessions(backend) == [session_key(after)]
    assert "1001" not in after and c.get("/card/1001").status_code == 200


def test_a_refusal_leaves_no_session_behind(backend: MemoryBackend) -> None:
    c = client(backend)
    for path in ("/", "/card/1001", "/support", "/signin/not-a-token", "/erased"):
        r = c.get(path)
        assert "set-cookie" not in r.headers, path
    assert _store(backend).values == {}


def test_sign_out_ends_the_session_and_its_copies(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    thief = _copy(backend, c)
    assert thief.get("/card/1001/data").status_code == 200
    assert c.post("/signout", data={"csrf": csrf_of(c, "/card/1001")}, follow_redirects=False).status_code == 303
    assert _sessions(backend) == []
    assert thief.get("/card/1001/data").status_code == 401 and c.get("/card/1001").status_code == 401
    # The copy's next answer clears the dead cookie.
    assert "max-age=0" in thief.get("/card/1001").headers["set-cookie"]


def test_erasure_ends_every_session_of_the_card_and_no_link_opens_one(backend: MemoryBackend) -> None:
    c, other, staff = client(backend), client(backend), client(backend)
    sign_in(c, "customer", "1001")
    sign_in(other, "customer", "1001")
    sign_in(staff, "support", "anna")
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    csrf = csrf_of(c, "/card/1001/erase?step=confirm")
    assert c.post("/card/1001/erase", data={"csrf": csrf, "confirm": "yes"}).status_code == 200
    assert len(_sessions(backend)) == 1  # support's only
    assert other.get("/card/1001").status_code == 401
    assert other.post("/card/1001/consents", data={"csrf": csrf, "product_data": "on"}).status_code == 401
    assert staff.get("/support/card/1001?reason=a+test+look").status_code == 200
    late = client(backend)
    refused = late.get(f"/signin/{token}")
    assert refused.status_code == 410 and "This card has been erased" in refused.text
    # Nor its POST, with a form token that is good (from another card's sign-in page).
    csrf = csrf_of(late, "/signin/" + late.app.state.web.links.make("customer", "2002"))  # type: ignore[attr-defined]
    assert late.post("/signin", data={"token": token, "csrf": csrf}).status_code == 410
    assert late.get("/card/1001").status_code == 401
    assert backend.consents == [] and backend.erasures == ["1001"]


def test_a_card_erased_elsewhere_refuses_every_action_of_an_open_session(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    csrf = csrf_of(c, "/card/1001/consents")
    backend.erasures.append("1001")  # `receiptflow erase 1001`, not the page
    page = c.get("/card/1001/erase")
    assert page.status_code == 410 and "This card has been erased" in page.text and "erase-continue" not in page.text
    assert _sessions(backend) == []  # found erased: its sessions ended
    for path in ("/card/1001/consents", "/card/1001/erase"):
        assert c.post(path, data={"csrf": csrf, "product_data": "on", "confirm": "yes"}).status_code == 401
    assert backend.consents == [] and backend.erasures == ["1001"]


def test_a_session_ends_when_idle_and_after_its_hours(backend: MemoryBackend) -> None:
    idle, hours = backend.settings.web.session_idle_minutes * 60, backend.settings.web.session_hours
    c = client(backend)
    sign_in(c, "customer", "1001")
    backend.now += idle - 5
    assert c.get("/card/1001").status_code == 200  # used in time: kept another idle period
    backend.now += idle - 5
    assert c.get("/card/1001").status_code == 200
    backend.now += idle + 1
    assert c.get("/card/1001").status_code == 401  # unused too long
    sign_in(c, "customer", "1001")
    for _ in range(hours * 3600 // (idle - 60)):
        backend.now += idle - 60
        assert c.get("/card/1001").status_code == 200
    backend.now += idle - 60
    assert c.get("/card/1001").status_code == 401  # used all along, but past its hours


def test_an_ended_session_is_not_written_back_by_a_request_in_flight(backend: MemoryBackend) -> None:
    store = backend.sessions
    sid = store.create({"role": "customer", "subject": "1001", "csrf": "x"})
    record = store.load(sid)
    assert record is not None
    assert store.revoke_card("1001") == 1
    assert not store.keep(sid, Record(record.created, {**record.data, "consents_saved": [True, True]}), True)
    assert not store.keep(sid, record, False)
    assert store.load(sid) is None


def test_the_cookie_is_httponly_samesite_and_secure_over_https(backend: MemoryBackend) -> None:
    s = backend.settings.model_copy(update={"web": {"base_url": "https://rf.example"}})
    c = TestClient(build_app(s, backend, backend.sessions), base_url="https://rf.example")
    token = c.app.state.web.links.make("customer", "1001")  # type: ignore[attr-defined]
    cookie = c.get(f"/signin/{token}").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie and "path=/" in cookie


class _Down(MemoryRedis):
    def get(self, key: str) -> str | None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.\ndetails")


def test_a_session_store_that_does_not_answer_is_503_with_its_first_line(backend: MemoryBackend) -> None:
    c = client(backend)
    sign_in(c, "customer", "1001")
    backend.sessions.client = _Down(lambda: backend.now)
    page = c.get("/card/1001")
    assert page.status_code == 503 and "Connection refused" in page.text and "details" not in page.text
    assert "Traceback" not in page.text
