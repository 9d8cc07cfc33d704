"""What the web page reads and changes, each through the path the command line uses, as the least role.

* Views: the card holder's view is ``profile CARD --view customer`` (``profile_views.render`` over the
  profile hash, the household's points added as the CLI adds them), read as the ``marketing`` Redis
  user, which may read profile hashes and nothing else; the marketing view likewise.
* Support's full view: read as the ``support`` user, and only after an audit entry for the look is
  written to ``rf:audit:views`` (the erasure audit's mechanism: an append-only Redis stream with the
  card's salted hash, never the card id); no entry, no view.
* Consent changes: a :class:`~receiptflow.models.ConsentChange` (source ``web``) validated and sent
  by :class:`~receiptflow.producers.client.RegisterClient`, exactly as the registers' app and
  ``receiptflow produce --kind consent`` send them; the profile agent applies it within a second.
* Download and erasure: :func:`receiptflow.jobs.subject.export_card` and ``erase_card``, the jobs
  behind ``receiptflow export`` and ``receiptflow erase`` (support role, warehouse, Kafka).
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
from ..errors import BrokerError, ProfileStoreError, ReceiptflowError
from ..jobs.subject import erase_card, export_card
from ..kafka_auth import KafkaPrincipal, as_principal
from ..models import ConsentChange
from ..processors.profiles.fold import WINDOWS, Profile
from ..processors.profiles.households import load_households, members
from ..processors.profiles.store import RedisProfileStore
from ..processors.profiles.views import render
from ..producers.client import RegisterClient
from ..redis_auth import RedisRole
from ..sinks.read_only import open_warehouse
from ..validation import validate_consent

VIEWS_AUDIT_STREAM = "rf:audit:views"


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
        self._support: RedisProfileStore | None = None
        self._producer: RegisterClient | None = None

    # --- stores, opened on first use -------------------------------------------------------------
    def reader(self) -> RedisProfileStore:
        if self._reader is None:
            self._reader = RedisProfileStore.from_settings(self.settings, RedisRole.MARKETING)
        return self._reader

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

    def marketing(self, card: str, now: datetime | None = None) -> dict[str, Any] | None:
        """``profile CARD --view marketing``: what marketing may see of the card."""
        store = self.reader()
        profile = store.get(card, with_seen=False)
        if profile is None:
            return None
        return render(profile, "marketing", now or datetime.now(UTC), segments=store.segments(card))

    def support_look(self, card: str, who: str, now: datetime | None = None) -> tuple[dict[str, Any] | None, str]:
        """The full view for support, after its audit entry; (view or None, audit entry id)."""
        store = self.support()
        at = now or datetime.now(UTC)
        entry = {"at": at.isoformat(), "subject": store.erased_hash(card), "who": who, "view": "full"}
        try:
            audit_id = str(store.client.xadd(VIEWS_AUDIT_STREAM, entry))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot write the audit entry of the look, so nothing is shown: {exc}") from exc
        profile = store.get(card, with_seen=True)
        if profile is None:
            return None, audit_id
        return render(profile, "full", at, segments=store.segments(card)), audit_id

    def views_audit(self) -> list[dict[str, str]]:
        """Every support look recorded, oldest first."""
        try:
            entries = self.support().client.xrange(VIEWS_AUDIT_STREAM)
        except redis.RedisError as exc:
            raise ProfileStoreError(f"cannot read the audit of looks: {exc}") from exc
        return [{"id": str(i), **{str(k): str(v) for k, v in f.items()}} for i, f in entries]  # type: ignore[union-attr]

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
            consent = db.query(
                "SELECT product_data_marketing, electronic_marketing, changed_at FROM consent_changes "
                f"WHERE card_id = {p} ORDER BY changed_at DESC LIMIT 1",
                (card,),
            )
        newest = None
        if consent:
            product, email, when = consent[0]
            newest = {"product_data_marketing": bool(product), "electronic_marketing": bool(email), "at": when}
        return {"chains": chains, "consent": newest}

    # --- changing ----------------------------------------------------------------------------------
    def set_consents(self, card: str, product_data: bool, email: bool, now: datetime | None = None) -> ConsentChange:
        """Publish the card's new consent state as the registers' app does; returns it once acknowledged."""
        change = ConsentChange(card, now or datetime.now(UTC), product_data, email, source="web")
        validate_consent(change)
        if self._producer is None:
            self._producer = RegisterClient(as_principal(self.settings, KafkaPrincipal.CONSENT_WRITER))
        failed = self._producer.stats.failed
        self._producer.send_consent(change)
        stats = self._producer.flush(10)
        if stats.failed > failed:
            raise BrokerError(f"the consent change was not accepted by Kafka: {stats.errors[-1]}; try again")
        return change

    def export(self, card: str) -> dict[str, Any]:
        """The same document as ``receiptflow export CARD``."""
        return export_card(as_principal(self.settings, KafkaPrincipal.SUPPORT), card)

    def erase(self, card: str) -> Mapping[str, Any]:
        """``receiptflow erase CARD --yes``; what it did."""
        e = erase_card(as_principal(self.settings, KafkaPrincipal.SUPPORT), card)
        return {"subject": e.subject, "audit_id": e.audit_id, "at": e.at.isoformat()}
