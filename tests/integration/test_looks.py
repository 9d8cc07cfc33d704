"""The audit of looks on a real Redis with the committed ACL, every look through its real way in.

* Each look leaves exactly one entry, written before anything is shown: ``profile CARD --view
  full``, ``export`` and ``web link`` through the console script, support's view and the card
  holder's download through the page (the app in process, over the real backend). Each entry names
  the principal, the reason, the kind and the card's salted hash, never the card id; a command
  without ``--as``/``RECEIPTFLOW_OPERATOR`` or ``--reason`` shows nothing and leaves nothing.
* The audit streams are append-only for support: ``DEL``, ``UNLINK``, ``XDEL``, ``XTRIM``,
  ``RENAME``, ``EXPIRE`` … answer NOPERM from the server; the auditor reads and trims, nothing more.
  ``XADD … MAXLEN`` (a trim no ACL can forbid) is caught by ``receiptflow audit``'s count check.
* ``receiptflow audit`` shows local time, ``--json`` UTC; ``--card``, ``--since``/``--until`` select.

The tests use a Redis database of their own, so the streams hold only its entries.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from starlette.testclient import TestClient

from receiptflow.config import Settings
from receiptflow.jobs.looks import LOOKS_STREAM, OLD_VIEWS_STREAM, Looker, record_look
from receiptflow.jobs.subject import AUDIT_STREAM as ERASURES_STREAM
from receiptflow.models import ConsentState, Purchase
from receiptflow.policy import load_policy
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.processors.router.route import process
from receiptflow.producers.simulator import Simulator
from receiptflow.redis_auth import RedisRole, connection_url
from receiptflow.sinks import open_sink
from receiptflow.topics import create_topics
from receiptflow.web.app import build_app
from receiptflow.web.auth import Login
from receiptflow.web.state import Web

from .conftest import MakeSettings, RedisServer
from .support import env_for

pytestmark = pytest.mark.integration

DB = 13  # a Redis database of this module's own: its streams hold only these tests' entries


def _db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
def own_db(make_settings: MakeSettings, redis_server: RedisServer) -> Iterator[Settings]:
    """Settings on a Redis database of this test's own (emptied before and after)."""
    admin = redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN, DB))
    admin.flushdb()
    settings = make_settings(redis_url=_db_url(redis_server.url, DB))
    yield settings
    admin.flushdb()


def _purchases(n: int) -> list[Purchase]:
    sim = Simulator(4404, stores=10, customers=5)
    policy, now = load_policy(), datetime.now(UTC)
    out = []
    for c in sim.stream(n, now - timedelta(days=10), n / (10 * 86_400)):
        p = process(c, policy, None, now).customer
        if p.card_id is not None:
            out.append(replace(p, consent=ConsentState(True, True, True)))
    return out


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", *args],
        env={**env_for(settings), **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _audit(settings: Settings, *args: str) -> dict[str, Any]:
    shown = _cli(settings, "audit", "--json", *args)
    assert shown.returncode == 0, shown.stderr
    doc: dict[str, Any] = json.loads(shown.stdout)
    return doc


def _sign_in(c: TestClient, role: str, subject: str) -> None:
    token = c.app.state.web.links.make(role, subject)  # type: ignore[attr-defined]
    page = c.get(f"/signin/{token}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert c.post("/signin", data={"token": token, "csrf": csrf}, follow_redirects=False).status_code == 303


def test_each_look_leaves_exactly_one_entry_written_before_it(own_db: Settings) -> None:
    settings = own_db
    create_topics(settings)
    open_sink(settings).close()  # the warehouse the export reads
    purchases = _purchases(60)
    writer = RedisProfileStore.from_settings(settings)
    writer.apply_all(purchases)
    card = next(p.card_id for p in purchases if p.card_id is not None)
    assert card is not None
    subject = writer.erased_hash(card)

    def looks() -> list[dict[str, str]]:
        found: list[dict[str, str]] = _audit(settings, "--card", card)["looks"]
        return found

    assert looks() == []
    # Without a principal or a reason: refused before anything is read, and nothing recorded.
    for args, env in [
        (("profile", card, "--view", "full", "--reason", "ticket 7"), {}),
        (("export", card, "--reason", "ticket 7"), {}),
        (("export", card), {"RECEIPTFLOW_OPERATOR": "bob"}),
        (("web", "link", card, "--as", "carol"), {}),
    ]:
        refused = _cli(settings, *args, **env)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert refused.stdout == ""
    assert looks() == []

    full = _cli(settings, "profile", card, "--view", "full", "--json", "--as", "anna", "--reason", "ticket 7")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["card_id"] == card
    exported = _cli(settings, "export", card, "--reason", "the card holder's request", RECEIPTFLOW_OPERATOR="bob")
    assert exported.returncode == 0, exported.stderr
    link = _cli(settings, "web", "link", card, "--as", "carol", "--reason", "card holder asked by phone")
    assert link.returncode == 0, link.stderr
    token = link.stdout.strip().rsplit("/signin/", 1)[1]
    links = Web(settings).links  # the page of the same install: the link signs in once
    assert links.redeem(token) == Login("customer", card) and links.redeem(token) is None
    staff = _cli(settings, "web", "link", "dave", "--role", "support", "--as", "carol", "--reason", "new staff")
    assert staff.returncode == 0, staff.stderr
    # A marketing or customer view is no staff look: no entry.
    assert _cli(settings, "profile", card, "--view", "marketing").returncode == 0

    page = TestClient(build_app(settings), base_url="http://127.0.0.1:8080")
    _sign_in(page, "support", "erin")
    asked = page.get(f"/support/card/{card}")
    assert asked.status_code == 400 and 'id="full-view"' not in asked.text  # no reason, no look
    shown = page.get(f"/support/card/{card}", params={"reason": "complaint 12"})
    assert shown.status_code == 200 and 'id="full-view"' in shown.text
    holder = TestClient(build_app(settings), base_url="http://127.0.0.1:8080")
    _sign_in(holder, "customer", card)
    download = holder.get(f"/card/{card}/data.json")
    assert download.status_code == 200 and download.json()["card_id"] == card

    entries = looks()
    got = [(e["kind"], e["principal"], e["via"], e["reason"]) for e in entries]
    assert got == [
        ("profile-full", "anna", "cli", "ticket 7"),
        ("export", "bob", "cli", "the card holder's request"),
        ("web-link", "carol", "cli", "card holder asked by phone"),
        ("support-view", "erin", "web", "complaint 12"),
        ("download", "card holder", "web", "subject access: the card holder's own data"),
    ]
    assert all(e["subject"] == subject for e in entries)
    assert entries[2]["detail"] == "role=customer"
    assert all(e["os_user"] for e in entries if e["via"] == "cli")
    everything = _audit(settings)
    assert len(everything["looks"]) == 6  # and the staff link, for its login
    assert not [e for e in everything["looks"] for v in e.values() if card in v], "an entry holds the card id"
    assert [s for s in everything["streams"] if s["removed"]] == []


def test_support_may_only_append_to_the_audit_streams_and_the_auditor_only_read_and_trim(own_db: Settings) -> None:
    settings = own_db
    support = redis.Redis.from_url(connection_url(settings, RedisRole.SUPPORT), decode_responses=True)
    auditor = redis.Redis.from_url(connection_url(settings, RedisRole.AUDITOR), decode_responses=True)
    who = Looker("anna", "probe", "cli", "")
    record_look(support, who, "export", "0" * 32)
    support.xadd(ERASURES_STREAM, {"step": "probe"})
    assert support.xlen(LOOKS_STREAM) == 1 and support.xrange(ERASURES_STREAM)  # appends and reads back
    card_key = "rf:{" + "1" * 32 + "}:p"
    support.hset(card_key, "v", "1")
    for stream in (LOOKS_STREAM, ERASURES_STREAM, OLD_VIEWS_STREAM):
        for command in [
            ("DEL", stream),
            ("UNLINK", stream),
            ("XDEL", stream, "0-1"),
            ("XTRIM", stream, "MAXLEN", "0"),
            ("XTRIM", stream, "MINID", "9999999999999"),
            ("XSETID", stream, "9999999999999-0"),
            ("XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"),
            ("RENAME", stream, "rf:audit:gone"),
            ("RENAME", card_key, stream),
            ("COPY", card_key, stream, "REPLACE"),
            ("EXPIRE", stream, "1"),
            ("PEXPIRE", stream, "1"),
            ("SET", stream, "1"),
            ("GETDEL", stream),
            ("HSET", "rf:audit:trimmed", stream, "999"),
            ("RESTORE", stream, "0", "x", "REPLACE"),
            ("FLUSHDB",),
            ("EVAL", f"return redis.call('DEL', '{stream}')", 0),
        ]:
            with pytest.raises(redis.exceptions.NoPermissionError):
                support.execute_command(*command)  # type: ignore[no-untyped-call]
    assert support.delete(card_key) == 1  # its card keys it still erases
    assert support.xlen(LOOKS_STREAM) == 1 and support.xlen(ERASURES_STREAM) == 1

    # The auditor reads and trims the audit streams; it neither writes, deletes nor reads a profile.
    assert [f["principal"] for _, f in auditor.xrange(LOOKS_STREAM)] == ["anna"]
    assert auditor.xinfo_stream(LOOKS_STREAM)["entries-added"] == 1
    for command in [
        ("XADD", LOOKS_STREAM, "*", "k", "v"),
        ("DEL", LOOKS_STREAM),
        ("XDEL", LOOKS_STREAM, "0-1"),
        ("RENAME", LOOKS_STREAM, "rf:audit:gone"),
        ("HGETALL", card_key),
        ("KEYS", "*"),
    ]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            auditor.execute_command(*command)  # type: ignore[no-untyped-call]

    # XADD's MAXLEN trims, and no ACL forbids an option: support can drop entries that way, and the
    # audit's count check says so (exit 3), naming the stream.
    for _ in range(3):
        record_look(support, who, "export", "0" * 32)
    support.xadd(LOOKS_STREAM, {"kind": "export"}, maxlen=1, approximate=False)
    listed = _cli(settings, "audit")
    assert listed.returncode == 3, listed.stderr
    assert f"4 entries of {LOOKS_STREAM} were removed other than by the auditor's trims" in listed.stderr
    streams = {s["stream"]: s for s in json.loads(_cli(settings, "audit", "--json").stdout)["streams"]}
    assert streams[LOOKS_STREAM] == {"stream": LOOKS_STREAM, "added": 5, "held": 1, "trimmed": 0, "removed": 4}


def test_audit_lists_in_local_time_selects_and_trims_by_retention(own_db: Settings, redis_server: RedisServer) -> None:
    settings = own_db
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    card, other = "2710000000000017", "2710000000000025"
    # Two looks at midnight in Helsinki (summer time): 30 June 21:30 UTC is 1 July 00:30 EEST.
    first = datetime(2026, 6, 30, 21, 30, tzinfo=UTC)
    admin = redis.Redis.from_url(redis_server.role_url(RedisRole.ADMIN, DB), decode_responses=True)
    ms = int(first.timestamp() * 1000)
    # Entries of the past, with ids of their time (as they were appended then), by the admin.
    from receiptflow.jobs.looks import look_entry  # noqa: PLC0415 - the entry the writers write

    who = Looker("anna", "ticket 7", "cli", "anna")
    admin.xadd(LOOKS_STREAM, look_entry(who, "export", store.erased_hash(card), first), id=f"{ms}-0")
    day = first + timedelta(days=1)
    admin.xadd(LOOKS_STREAM, look_entry(who, "profile-full", store.erased_hash(other), day), id=f"{ms + 86_400_000}-0")
    # A support view from before the one audit of looks, on the old stream.
    admin.xadd(OLD_VIEWS_STREAM, {"at": day.isoformat(), "subject": store.erased_hash(card), "who": "erin"})
    record_look(store.client, who, "web-link", store.erased_hash(card), detail="role=customer")  # now

    shown = _cli(settings, "audit", "--card", card, "--until", "2026-07-01")
    assert shown.returncode == 0, shown.stderr
    assert "2026-07-01 00:30:00 EEST" in shown.stdout and "1 looks" in shown.stdout
    assert "Europe/Helsinki" in shown.stdout and "ticket 7" in shown.stdout
    doc = _audit(settings, "--card", card, "--since", "2026-07-01", "--until", "2026-07-01")
    assert [(e["at"], e["kind"]) for e in doc["looks"]] == [(first.isoformat(), "export")]
    doc = _audit(settings, "--card", card)
    assert [e["kind"] for e in doc["looks"]] == ["export", "support-view", "web-link"]
    assert doc["looks"][1]["principal"] == "erin"
    assert [e["kind"] for e in _audit(settings, "--since", "2026-07-02", "--until", "2026-07-02")["looks"]] == [
        "profile-full",
        "support-view",
    ]
    bad = _cli(settings, "audit", "--since", "2026-07-02", "--until", "2026-07-01")
    assert bad.returncode == 2 and "before --since" in bad.stderr

    # Retention: the auditor trims what is older; the count check tells its trims from removals.
    trimmed = _cli(settings, "audit", "--trim-before", "2026-07-02")
    assert trimmed.returncode == 0, trimmed.stderr
    assert "removed 1 looks" in trimmed.stdout
    doc = _audit(settings)
    assert [e["kind"] for e in doc["looks"]] == ["profile-full", "support-view", "web-link"]
    streams = {s["stream"]: s for s in doc["streams"]}
    assert streams[LOOKS_STREAM] == {"stream": LOOKS_STREAM, "added": 3, "held": 2, "trimmed": 1, "removed": 0}
