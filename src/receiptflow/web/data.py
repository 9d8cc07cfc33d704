"""What the web page reads and changes, each through the path the command line uses, as the least role.

* Views: the card holder's view is ``profile CARD --view customer`` (``profile_views.render`` over the
  profile hash, the household's points added as the CLI adds them), read as the ``customer`` Redis
  user, which may read profile hashes and nothing else. The marketing view is ``profile CARD --view
  marketing``: the card's marketing projection, read as the ``marketing`` user with the marketing key
  only (:class:`~receiptflow.processors.profiles.projections.MarketingReader`), never the erasure salt.
* Support's full view: read as the ``support`` user, and only after an entry for the look, with the
  staff login and the reason given, is written to the audit of looks (``rf:audit:looks``,
  :mod:`receiptflow.jobs.looks`: an append-only Redis stream with the card's salted hash, never the
  card id); no entry, no view. The card holder's download is audited there too.
* Consent changes: a :class:`~receiptflow.models.ConsentChange` (source and channel ``web``, the
  page's consent text version ``texts.CONSENT_TEXT_VERSION``, the page's Kafka principal) validated and sent
  by :class:`~receiptflow.producers.client.RegisterClient`, exactly as the registers' app and
  ``receiptflow produce --kind consent`` send them; the profile agent applies it within a second.
* Download and erasure: :func:`receiptflow.jobs.subject.export_card` and ``erase_card``, the jobs
  behind ``receiptflow export`` and ``receiptflow erase`` (support role, warehouse, Kafka).
* Whether a card is erased (:meth:`Backend.erased`): its erased marker in the profile store, read as
  the ``support`` user on every request of a card's page and at sign-in. The marker is set in the
  same Redis transaction that deletes the card's profile, and the profile scripts check it, so it is
  what keeps the card out of the store; one ``EXISTS`` on a connection already open.
* Chains and the e-mail consent: read from the warehouse, which is the only store that keeps them;
  None when it cannot be opened (the page then says so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from ..config import Settings
from ..consent_codec import newest_written
from ..errors import BrokerError, ProfileStoreError, ReceiptflowError
from ..jobs.looks import card_holder, looker, record_look
from ..jobs.profile_rebuild import CONSENT_COLUMNS, consent_from_row
from ..jobs.subject import erase_card, export_card
from ..kafka_auth import KafkaPrincipal, as_principal
from ..models import ConsentChange
from ..processors.profiles.fold import WINDOWS, Profile
from ..processors.profiles.households import load_households, members
from ..processors.profiles.projections import MarketingReader
from ..processors.profiles.store import RedisProfileStore
from ..processors.profiles.views import render
from ..producers.client import RegisterClient
from ..redis_auth import RedisRole
from ..sinks.read_only import open_warehouse
from ..validation import validate_consent
from .texts import CONSENT_TEXT_VERSION


@dataclass(frozen=True, slots=True)
class CustomerPage:
    """One card's data for the customer's pages: the view the CLI prints and the profile it came from."""

    view: dict[str, Any]
    profile: Profile


class Backend:
    """The page's access to Redis, Kafka and the warehouse for one install (``settings``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._reader: RedisProfileStore | None = None
        self._marketing: MarketingReader | None = None
        self._support: RedisProfileStore | None = None
        self._producer: RegisterClient | None = None

    # --- stores, opened on first use -------------------------------------------------------------
    def reader(self) -> RedisProfileStore:
        """The card holder's own view: profile hashes, read only (the ``customer`` role)."""
        if self._reader is None:
            self._reader = RedisProfileStore.from_settings(self.settings, RedisRole.CUSTOMER)
        return self._reader

    def marketing_reader(self) -> MarketingReader:
        """The marketing projections, read only (the ``marketing`` role and the marketing key)."""
        if self._marketing is None:
            self._marketing = MarketingReader.from_settings(self.settings)
        return self._marketing

    def support(self) -> RedisProfileStore:
        if self._support is None:
            self._support = RedisProfileStore.from_settings(self.settings, RedisRole.SUPPORT)
        return self._support

    # --- reading -----------------------------------------------------------------------------------
    def customer(self, card: str, now: datetime | None = None) -> CustomerPage | None:
        """``profile CARD --view customer`` and the profile behind it; None when nothing is held."""
        store = self.reader()
        profile = store.get(card, with_seen=False)
        if profile is None:
            return None
        household: dict[str, int] | None = None
        if self.settings.profiles.households_file is not None:
            cards = members(load_households(self.settings.profiles.households_file), card)
            household = {c: p.points for c, p in store.get_many(cards, with_seen=False).items()}
        segments = store.segments(card)
        view = render(profile, "customer", now or datetime.now(UTC), household=household, segments=segments)
        return CustomerPage(view, profile)

    def marketing(self, card: str) -> dict[str, Any] | None:
        """``profile CARD --view marketing``: what marketing may see of the card, from its projection
        (the figures of the day the profile writer computed it for)."""
        return self.marketing_reader().view(card)

    def support_look(
        self, card: str, who: str, reason: str, now: datetime | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """The full view for support login ``who``, after its entry in the audit of looks; (view or None, entry id)."""
        store = self.support()
        at = now or datetime.now(UTC)
        audit_id = record_look(
            store.client, looker(who, reason, "web", ""), "support-view", store.erased_hash(card), at=at
        )
        profile = store.get(card, with_seen=True)
        if profile is None:
            return None, audit_id
        return render(profile, "full", at, segments=store.segments(card)), audit_id

    def erased(self, card: str) -> bool:
        """Whether ``card`` is erased (its erased marker: see the module docstring)."""
        store = self.support()
        try:
            return bool(store.client.exists(store.keys_for(card).erased))
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read whether the card is erased: {exc}") from exc

    def warehouse_facts(self, card: str, now: datetime | None = None) -> dict[str, Any] | None:
        """Chains per window and the newest consent state from the warehouse; None when it cannot be opened
        (a DuckDB file that a running sink holds, a PostgreSQL that does not answer)."""
        at = now or datetime.now(UTC)
        with contextlib.ExitStack() as stack:
            try:
                db = stack.enter_context(open_warehouse(self.settings))  # read-only: the page changes nothing
            except ReceiptflowError:
                return None
            p = db.p
            chains: dict[str, dict[str, dict[str, int]]] = {}
            for n in WINDOWS:
                rows = db.query(
                    f"SELECT chain, COUNT(*), SUM(total_cents) FROM receipts WHERE card_id = {p} "
                    f"AND event_time > {p} GROUP BY chain ORDER BY chain",
                    (card, at - timedelta(days=n)),
                )
                for chain, visits, cents in rows:
                    chains.setdefault(str(chain), {})[f"{n}d"] = {"visits": int(visits), "spend_cents": int(cents)}
            # Newest written (appended_at), never newest dated: a grant dated ahead must not outrank a
            # withdrawal written after it (consent_codec.newest_written, as the router decides).
            rows = db.query(
                f"SELECT {CONSENT_COLUMNS} FROM consent_changes WHERE card_id = {p}",
                (card,),
            )
        change = newest_written(consent_from_row(r) for r in rows)
        newest = None
        if change is not None:
            newest = {
                "product_data_marketing": change.product_data_marketing,
                "electronic_marketing": change.electronic_marketing,
                "at": change.event_time,
            }
        return {"chains": chains, "consent": newest}

    # --- changing ----------------------------------------------------------------------------------
    def set_consents(self, card: str, product_data: bool, email: bool, now: datetime | None = None) -> ConsentChange:
        """Publish the card's new consent state as the registers' app does; returns it once acknowledged."""
        if self._producer is None:
            self._producer = RegisterClient(as_principal(self.settings, KafkaPrincipal.CONSENT_WRITER))
        at = now or datetime.now(UTC)
        change = ConsentChange(card, at, product_data, email, "web", channel="web", text_version=CONSENT_TEXT_VERSION)
        change = self._producer.stamped(change)  # the principal the page writes as
        validate_consent(change, at, self.settings.privacy.consent_max_age)
        failed = self._producer.stats.failed
        self._producer.send_consent(change)
        stats = self._producer.flush(10)
        if stats.failed > failed:
            raise BrokerError(f"the consent change was not accepted by Kafka: {stats.errors[-1]}; try again")
        return change

    def export(self, card: str) -> dict[str, Any]:
        """The same document as ``receiptflow export CARD``, audited as the card holder's download."""
        return export_card(
            as_principal(self.settings, KafkaPrincipal.SUPPORT), card, who=card_holder(), kind="download"
        )

    def erase(self, card: str) -> Mapping[str, Any]:
        """``receiptflow erase CARD --yes``; what it did."""
        e = erase_card(as_principal(self.settings, KafkaPrincipal.SUPPORT), card)
        return {"subject": e.subject, "audit_id": e.audit_id, "at": e.at.isoformat()}
