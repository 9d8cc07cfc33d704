"""The card holder's web page in a real browser against the real stack.

Chromium (Debian's, through Playwright's ``executable_path``) drives ``receiptflow web`` running as
its own process, with the profile worker (``process --role profiles``) on the session's Kafka, the
session's Redis with its ACL users and a DuckDB warehouse the sink filled. Sign-in is by the link
that ``receiptflow web link`` prints. The checks: the figures on the pages equal ``profile --view
customer``; switching product-data consent off removes product data from the marketing view within
a second; the download equals ``receiptflow export``; erasure empties the page and ends the session;
a cashier login gets 403; requests without the CSRF token or for another card are refused; axe-core
finds no serious or critical violation on any page. Each page's screenshot is saved under ``test-artifacts/web/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from receiptflow.config import Settings
from receiptflow.jobs.looks import LOOKS_STREAM
from receiptflow.models import ConsentChange, ConsentState
from receiptflow.processors.profiles.keys import profile_key, seen_key
from receiptflow.processors.profiles.projections import MarketingReader
from receiptflow.processors.profiles.store import RedisProfileStore
from receiptflow.producers.client import RegisterClient
from receiptflow.redis_auth import RedisRole
from receiptflow.sinks import open_sink, run_sink
from receiptflow.stack import free_port
from receiptflow.topics import create_topics
from receiptflow.web.i18n import euros, number, percent

from .conftest import KafkaServer, RedisServer
from .support import env_for, send_purchases, simulated_purchases, stop, visits_by_card

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "integration" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM = os.environ.get("RECEIPTFLOW_TEST_CHROMIUM", "/usr/bin/chromium")


@dataclass
class Site:
    settings: Settings
    url: str
    cards: dict[str, str]  # what each test uses: "main", "other", "erase"
    proc: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "receiptflow", *args],
            env=_env(self.settings),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result

    def link(self, subject: str, role: str = "customer") -> str:
        return self.cli("web", "link", subject, "--role", role, "--as", "anna", "--reason", "test").stdout.strip()

    def view(self, card: str, kind: str) -> dict[str, Any]:
        looker = ("--as", "anna", "--reason", "test") if kind == "full" else ()
        doc: dict[str, Any] = json.loads(self.cli("profile", card, "--view", kind, "--json", *looker).stdout)
        return doc


def _env(settings: Settings) -> dict[str, str]:
    env = env_for(settings)
    env["RECEIPTFLOW_WEB_BASE_URL"] = settings.web.base_url
    if settings.profiles.households_file is not None:
        env["RECEIPTFLOW_HOUSEHOLDS_FILE"] = str(settings.profiles.households_file)
    return env


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # the home page without a session
    except OSError:
        return False
    return False


@pytest.fixture(scope="module")
def site(
    kafka_server: KafkaServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    run = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("web")
    port = free_port()
    s = Settings(
        **redis_server.role_settings(),
        **kafka_server.auth_settings(),
        kafka={"bootstrap_servers": kafka_server.bootstrap, "topic_prefix": f"web-{run}.", "topic_partitions": 3},
        redis={"url": redis_server.url},
        local={"data_dir": data / "data"},
        warehouse={"url": f"duckdb:///{data / 'warehouse.duckdb'}"},
        router={"id": f"web-{run}"},
        metrics={"port": 0},
        web={"base_url": f"http://127.0.0.1:{port}"},
    )
    create_topics(s)
    s.local.data_dir.mkdir(parents=True, exist_ok=True)
    sim, purchases = simulated_purchases(seed=4242, count=1200, span=timedelta(days=120))
    # The cards with the most receipts that kept their item lines (chains that keep totals only have none).
    with_items = sorted(sim.truth.per_card, key=lambda c: -sum(1 for p in purchases if p.card_id == c and p.items))
    cards = {"main": with_items[0], "other": with_items[1], "erase": with_items[2]}
    # One household; the third card does not share its points with it.
    households = data / "households.csv"
    households.write_text(
        f"card_id,household_id,share_points\n{cards['main']},h1,yes\n{cards['other']},h1,\n{cards['erase']},h1,no\n",
        encoding="utf-8",
    )
    s = s.model_copy(update={"profiles": {"households_file": households}})
    mine = [replace(p, consent=ConsentState(True, True, True)) for p in purchases if p.card_id in cards.values()]
    store = RedisProfileStore.from_settings(s)
    store.client.delete(*[k for c in cards.values() for k in (profile_key(c), seen_key(c))])
    worker_log = s.local.data_dir / "profiles.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "receiptflow", "process", "--role", "profiles"],
            env=_env(s),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    web_log = s.local.data_dir / "web.log"
    web = None
    try:
        send_purchases(s, mine)
        client = RegisterClient(s)
        for card in cards.values():
            client.send_consent(ConsentChange(card, datetime.now(UTC), True, True, "app"))
        client.flush()
        # Visits are sales: a refund of an earlier receipt is none (receipts v2).
        visits = visits_by_card(mine)
        expected = {c: visits[c] for c in cards.values()}

        def arrived() -> bool:
            got = store.get_many(list(cards.values()), with_seen=False)
            return all(c in got and got[c].visits == n and got[c].consent for c, n in expected.items())

        _wait(arrived, 90, "the cards' profiles")
        with open_sink(s) as sink:
            run_sink(s, sink, idle_exit_after=3.0)
        with web_log.open("wb") as out:
            web = subprocess.Popen(
                [sys.executable, "-m", "receiptflow", "web", "--port", str(port)],
                env=_env(s),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: _answers(s.web.base_url + "/"), 30, "the web page to answer")
        yield Site(s, s.web.base_url, cards, web, web_log)
    finally:
        for proc in (web, worker):
            if proc is None:
                continue
            stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(bypass_csp=True, locale="en-GB", accept_downloads=True)
    yield context.new_page()
    context.close()


def sign_in(page: Page, site: Site, subject: str, role: str = "customer") -> None:
    page.goto(site.link(subject, role))
    page.click("#signin")
    page.wait_for_load_state()


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now.

    The page's Content-Security-Policy allows no script, so the contexts bypass it to inject axe.
    """
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_sign_in_by_link_and_the_figures_equal_the_customer_view(site: Site, page: Page) -> None:
    card = site.cards["main"]
    sign_in(page, site, card)
    assert page.url == f"{site.url}/card/{card}"
    view = site.view(card, "customer")
    for key, (visits, cents) in {
        **{
            f"{n}d": (view["windows"][f"{n}d"]["visits"], view["windows"][f"{n}d"]["spend_cents"])
            for n in (30, 90, 365)
        },
        "all": (view["visits"], view["spend_cents"]),
    }.items():
        row = page.locator(f'#windows tr[data-window="{key}"]')
        assert row.locator(".visits").inner_text() == str(visits)
        assert row.locator(".spend").inner_text() == euros(cents, "en")
    assert view["visits"] > 0 and view["windows"]["90d"]["visits"] > 0
    assert page.inner_text("#points") == number(view["points"], "en")
    assert set(view["household"]["members_points"]) == {card, site.cards["other"]}  # not the card that keeps its own
    assert page.inner_text("#household-points") == number(view["household"]["points"], "en")
    assert page.locator("#chains tbody tr").count() >= 1
    assert page.locator("svg.chart").count() == 1
    shoot(page, "purchases")
    assert axe_violations(page) == []

    page.click("nav >> text=What I buy")
    mix = [(r.locator("td").inner_text()) for r in page.locator("#mix tbody tr").all()]
    assert mix == [percent(s, "en", 1) for s in view["product_group_mix"].values()] and mix
    shoot(page, "mix")
    assert axe_violations(page) == []

    page.click("nav >> text=Nutrition")
    n = view["nutrition_and_climate"]
    assert page.inner_text('#nutrition tr[data-measure="salt"] td.num') == number(n["salt_g_per_1000_kcal"], "en", 2)
    assert page.inner_text('#nutrition tr[data-measure="sugar"] td.num') == percent(n["sugar_energy_share"], "en", 1)
    assert page.inner_text('#nutrition tr[data-measure="vegfruit"] td.num') == number(
        n["vegfruit_g_per_1000_kcal"], "en", 1
    )
    assert page.locator("#salt_sources tbody tr").count() == len(n["salt_sources"])
    shoot(page, "nutrition")
    assert axe_violations(page) == []

    page.click("nav >> text=Climate and origin")
    assert page.inner_text("#co2e") == number(n["kg_co2e_per_euro"], "en", 3)
    assert page.inner_text("#domestic") == percent(n["domestic_share"], "en", 1)
    shoot(page, "climate")
    assert axe_violations(page) == []

    for name, label in (("consents", "My consents"), ("data", "My data"), ("erase", "Erase me")):
        page.click(f"nav >> text={label}")
        shoot(page, name)
        assert axe_violations(page) == [], name


def test_the_finnish_page_writes_euros_the_finnish_way(site: Site, browser: Browser) -> None:
    context = browser.new_context(
        bypass_csp=True, locale="fi-FI", extra_http_headers={"Accept-Language": "fi-FI,fi;q=0.9"}
    )
    page = context.new_page()
    try:
        card = site.cards["other"]
        sign_in(page, site, card)
        view = site.view(card, "customer")
        assert page.locator("html").get_attribute("lang") == "fi"
        assert page.inner_text('#windows tr[data-window="all"] .spend') == euros(view["spend_cents"], "fi")
        assert "\u00a0€" in euros(view["spend_cents"], "fi")
        shoot(page, "purchases-fi")
        page.click("text=English")
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.inner_text('#windows tr[data-window="all"] .spend') == euros(view["spend_cents"], "en")
    finally:
        context.close()


def test_product_data_consent_off_leaves_the_marketing_view_within_a_second(site: Site, page: Page) -> None:
    card = site.cards["main"]
    reader = MarketingReader.from_settings(site.settings)  # the card's marketing projection
    before = reader.view(card)
    assert before is not None and before["product_group_mix"]
    sign_in(page, site, card)
    page.goto(f"{site.url}/card/{card}/consents")
    assert page.is_checked("#product_data")
    page.uncheck("#product_data")
    page.click("#save-consents")
    page.wait_for_selector("#saved")
    saved = time.monotonic()  # the page answers once the broker acknowledged the change
    assert reader.view(card) is not None

    def gone() -> bool:
        v = reader.view(card)
        return v is not None and "product_group_mix" not in v and not [k for k in reader.fields(card) if k[0] == "P"]

    _wait(gone, 5, "product data to leave the marketing view")
    assert time.monotonic() - saved < 1.0
    assert not page.is_checked("#product_data") and page.is_checked("#email")
    shoot(page, "consents-saved")
    marketing = site.view(card, "marketing")
    assert marketing["product_data_consent"] is False and "product_group_mix" not in marketing
    page.goto(f"{site.url}/card/{card}/mix")
    assert "not consented to the use of product data" in page.inner_text("#why-absent")
    shoot(page, "mix-without-consent")


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    """An export without what depends on the moment it was made."""
    out = {k: v for k, v in doc.items() if k != "exported_at"}
    out["topics"] = [
        {k: v for k, v in t.items() if k not in ("written_up_to", "may_hold_until")} for t in doc["topics"]
    ]
    return out


def test_the_download_equals_the_export(site: Site, page: Page, tmp_path: Path) -> None:
    card = site.cards["other"]
    sign_in(page, site, card)
    page.goto(f"{site.url}/card/{card}/data")
    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / "my-data.json"
    info.value.save_as(path)
    downloaded = json.loads(path.read_text(encoding="utf-8"))
    exported = json.loads(site.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert downloaded["profile"] is not None and downloaded["warehouse"]["receipts"]
    assert _stable(downloaded) == _stable(exported)


def test_a_cashier_gets_403_and_support_looks_are_audited(site: Site, page: Page, browser: Browser) -> None:
    card = site.cards["other"]
    sign_in(page, site, "register-12", "cashier")
    for path in ("/", f"/card/{card}", f"/card/{card}/nutrition", f"/card/{card}/data.json", f"/support/card/{card}"):
        assert page.goto(site.url + path).status == 403, path  # type: ignore[union-attr]
    shoot(page, "cashier-403")

    support = RedisProfileStore.from_settings(site.settings, RedisRole.SUPPORT)
    subject = support.erased_hash(card)

    def looks() -> int:
        return sum(1 for _, f in support.client.xrange(LOOKS_STREAM) if f.get("subject") == subject)

    context = browser.new_context(bypass_csp=True, locale="en-GB")
    staff = context.new_page()
    try:
        sign_in(staff, site, "anna", "support")
        assert staff.goto(f"{site.url}/card/{card}").status == 403  # type: ignore[union-attr]
        before = looks()
        assert staff.goto(f"{site.url}/support/card/{card}").status == 400  # type: ignore[union-attr]
        assert looks() == before  # no reason, no look
        for expected in (before + 1, before + 2):
            assert staff.goto(f"{site.url}/support/card/{card}?reason=ticket+7").status == 200  # type: ignore[union-attr]
            assert json.loads(staff.inner_text("#full-view"))["card_id"] == card
            assert looks() == expected
        shoot(staff, "support-full-view")
        assert axe_violations(staff) == []
        entries = [f for _, f in support.client.xrange(LOOKS_STREAM) if f.get("subject") == subject]
        assert (
            entries[-1]["principal"] == "anna"
            and entries[-1]["reason"] == "ticket 7"
            and not any(card in v for e in entries for v in e.values())
        )
    finally:
        context.close()


def test_requests_without_csrf_or_for_another_card_are_refused(site: Site, page: Page) -> None:
    card, other = site.cards["other"], site.cards["main"]
    sign_in(page, site, card)
    page.goto(f"{site.url}/card/{card}/consents")
    csrf = page.get_attribute('input[name="csrf"]', "value")
    assert csrf
    reader = RedisProfileStore.from_settings(site.settings, RedisRole.CUSTOMER)
    consent_before = {c: reader.get(c, with_seen=False).consent for c in (card, other)}  # type: ignore[union-attr]
    r = page.request.post(f"{site.url}/card/{card}/consents", form={"email": "on"})
    assert r.status == 403
    r = page.request.post(f"{site.url}/card/{card}/consents", form={"email": "on", "csrf": "x" + csrf})
    assert r.status == 403
    r = page.request.post(f"{site.url}/card/{other}/consents", form={"product_data": "on", "csrf": csrf})
    assert r.status == 403
    assert page.request.post(f"{site.url}/card/{card}/erase", form={"confirm": "yes"}).status == 403
    for path in (f"/card/{other}", f"/card/{other}/data.json", f"/support/card/{other}"):
        assert page.request.get(site.url + path).status == 403, path
    time.sleep(1.0)  # a change that got through would have reached the profile by now
    assert {c: reader.get(c, with_seen=False).consent for c in (card, other)} == consent_before  # type: ignore[union-attr]
    assert reader.get(card, with_seen=False) is not None


def test_erasure_with_confirmation_empties_the_page(site: Site, page: Page) -> None:
    card = site.cards["erase"]
    sign_in(page, site, card)
    unused = site.link(card)  # a link made before the erasure, opened after it
    page.goto(f"{site.url}/card/{card}/erase")
    page.click("#erase-continue")
    page.click("#erase-now")  # not confirmed yet
    assert page.locator('[role="alert"]').count() == 1
    reader = RedisProfileStore.from_settings(site.settings, RedisRole.CUSTOMER)
    assert reader.get(card, with_seen=False) is not None  # nothing erased without the confirmation
    page.check("#confirm")
    page.click("#erase-now")
    assert page.inner_text("#nothing-held") == "Nothing is held about your card."
    shoot(page, "erased")
    assert axe_violations(page) == []
    # The session ended with the card, and no sign-in link opens the card again.
    assert page.goto(f"{site.url}/card/{card}").status == 401  # type: ignore[union-attr]
    assert page.goto(unused).status == 410  # type: ignore[union-attr]
    assert page.locator("#signin").count() == 0
    exported = json.loads(site.cli("export", card, "--as", "dpo", "--reason", "test").stdout)
    assert exported["profile"] is None and all(rows == [] for rows in exported["warehouse"].values())
    assert exported["erasure"]["complete"] is True
