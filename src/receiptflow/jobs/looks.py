"""The audit of looks: one append-only Redis stream, ``rf:audit:looks``, with an entry for every look at a card.

A *look* is anything that shows a person what is held about a card, or lets them see it:

* ``support-view``: support's full view on the page (``/support/card/CARD``);
* ``profile-full``: ``receiptflow profile CARD --view full``;
* ``export``: ``receiptflow export CARD``; ``download``: the card holder's download on the page;
* ``web-link``: ``receiptflow web link`` (a sign-in link for a card, or for a staff login).

Each entry says when (UTC, ISO 8601; shown in local time), the principal who looked (the staff
login, ``--as``/``RECEIPTFLOW_OPERATOR`` on the command line, the page's login on the page, "card
holder" for a card holder's own download), by which way (``cli``/``web``), the operating-system user
of a command, the reason (required for every staff look), the kind of look and the card's salted
hash (never the card id). The entry is written first (as the support role, which may only append to
the audit streams: ``deploy/redis/users.acl``); when it cannot be written nothing is shown: no
entry, no look.

Reading is the ``auditor`` role's (``receiptflow audit``), the only role that may read these entries
besides the erasure audit's readers, and the only one that may trim them, per the retention in
docs/privacy.md (:func:`trim_looks`, which records how many entries it removed).

**Tamper evidence.** ``XADD`` with its ``MAXLEN``/``MINID`` options trims the stream it appends to,
and no Redis ACL can forbid an option: a role that may append may also drop the oldest entries. So
every listing checks each audit stream: Redis 7 counts every entry a stream was ever given
(``entries-added`` of ``XINFO STREAM``), which no role but admin can reset, so ``entries-added``
minus the entries held minus those the auditor trimmed is what was removed by anyone else (pure:
:func:`removed_outside_trims`). ``DEL``, ``XDEL``, ``XTRIM``, ``RENAME``, ``EXPIRE`` … of an audit
stream are refused to support outright.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis

from ..config import Settings
from ..errors import ProfileStoreError, UsageError
from ..humanize import DEFAULT_ZONE
from ..processors.profiles.store import RedisClient, RedisProfileStore
from ..redis_auth import RedisRole

LOOKS_STREAM = "rf:audit:looks"
ERASURES_STREAM = "rf:audit:erasures"  # jobs.subject.AUDIT_STREAM, which imports this module
# Support's page views before the one audit of looks (read as looks of kind support-view).
OLD_VIEWS_STREAM = "rf:audit:views"
AUDIT_STREAMS = (LOOKS_STREAM, ERASURES_STREAM, OLD_VIEWS_STREAM)
# Entries the auditor trimmed, per stream (a hash only the auditor may write).
TRIMMED_KEY = "rf:audit:trimmed"

KINDS: Mapping[str, str] = {
    "support-view": "support's full view on the page",
    "profile-full": "profile --view full",
    "export": "receiptflow export",
    "download": "the card holder's download on the page",
    "web-link": "receiptflow web link",
}
VIAS = ("cli", "web")
MAX_PRINCIPAL = 64
MAX_REASON = 300
CARD_HOLDER = "card holder"  # the principal of a card holder's own download
PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Looker:
    """Who looks, why, and how: the principal, the reason, ``cli`` or ``web``, and a command's OS user."""

    principal: str
    reason: str
    via: str = "cli"
    os_user: str = ""


def looker(principal: str | None, reason: str | None, via: str = "cli", os_user: str | None = None) -> Looker:
    """A :class:`Looker` from what a command or the page was given, or :class:`UsageError` saying what is missing."""
    name = (principal or "").strip()
    why = " ".join((reason or "").split())
    if not name:
        raise UsageError(
            "who is looking? give --as YOUR-LOGIN or set RECEIPTFLOW_OPERATOR: every look at a card is audited"
        )
    if len(name) > MAX_PRINCIPAL or any(not c.isprintable() or c.isspace() for c in name):
        raise UsageError(f"--as {name!r} is not a login name: up to {MAX_PRINCIPAL} printable characters, no spaces")
    if not why:
        raise UsageError("why are you looking? give --reason TEXT (a ticket, a request): the audit records it")
    if len(why) > MAX_REASON or any(not c.isprintable() for c in why):
        raise UsageError(f"--reason is too long or holds control characters: up to {MAX_REASON} printable characters")
    if via not in VIAS:
        raise ValueError(f"unknown way of looking {via!r}")
    user = _os_user() if os_user is None else os_user
    return Looker(name, why, via, user)


def card_holder() -> Looker:
    """The card holder looking at their own data on the page (no staff, so no reason to ask for)."""
    return Looker(CARD_HOLDER, "subject access: the card holder's own data", "web", "")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return ""


def look_entry(who: Looker, kind: str, subject: str, at: datetime, detail: str = "") -> dict[str, str]:
    """The stream entry of one look (pure); ``subject`` is the card's salted hash, never the card id."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of look {kind!r}")
    if at.tzinfo is None:
        raise ValueError("a look's time needs its zone")
    return {
        "at": at.astimezone(UTC).isoformat(),
        "kind": kind,
        "principal": who.principal,
        "via": who.via,
        "os_user": who.os_user,
        "reason": who.reason,
        "subject": subject,
        "detail": detail,
    }


@dataclass(frozen=True, slots=True)
class Look:
    """One audited look, as read back."""

    id: str
    at: datetime
    kind: str
    principal: str
    via: str
    reason: str
    subject: str
    os_user: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "principal": self.principal,
            "via": self.via,
            "os_user": self.os_user,
            "reason": self.reason,
            "subject": self.subject,
            "detail": self.detail,
        }


def parse_look(entry_id: str, fields: Mapping[str, str]) -> Look:
    """A stream entry as a :class:`Look` (pure); an entry of the old ``rf:audit:views`` stream
    (``at``, ``subject``, ``who``, ``view``) reads as a support view without a reason."""
    at = datetime.fromisoformat(fields.get("at") or _id_time(entry_id).isoformat())
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if "kind" not in fields:
        return Look(entry_id, at, "support-view", fields.get("who", ""), "web", "", fields.get("subject", ""))
    return Look(
        entry_id,
        at,
        fields["kind"],
        fields.get("principal", ""),
        fields.get("via", ""),
        fields.get("reason", ""),
        fields.get("subject", ""),
        fields.get("os_user", ""),
        fields.get("detail", ""),
    )


def _id_time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-", maxsplit=1)[0]) / 1000, UTC)


def day_bounds(
    since: date | None, until: date | None, zone: str = DEFAULT_ZONE
) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` local dates as UTC bounds (pure): from the start of ``since`` to the end
    of ``until``, both days included; None where not given."""
    tz = ZoneInfo(zone)
    low = None if since is None else datetime.combine(since, time(), tz).astimezone(UTC)
    high = None if until is None else datetime.combine(until + timedelta(days=1), time(), tz).astimezone(UTC)
    if low is not None and high is not None and high <= low:
        raise UsageError(f"--until {until} is before --since {since}: give a period that ends after it starts")
    return low, high


def select_looks(
    looks: Iterable[Look], subject: str | None = None, since: datetime | None = None, before: datetime | None = None
) -> list[Look]:
    """The looks at ``subject`` (every card when None) from ``since`` up to ``before`` (exclusive), oldest
    first (pure)."""
    chosen = [
        look
        for look in looks
        if (subject is None or look.subject == subject)
        and (since is None or look.at >= since)
        and (before is None or look.at < before)
    ]
    return sorted(chosen, key=lambda look: (look.at, look.id))


def removed_outside_trims(entries_added: int, length: int, trimmed: int) -> int:
    """Entries a stream lost other than by the auditor's trims (pure): what was ever added, less what
    it holds and what the auditor trimmed. More than 0 means someone removed audit entries."""
    return max(entries_added - length - trimmed, 0)


# --- Redis -------------------------------------------------------------------------------------------
def record_look(
    client: RedisClient, who: Looker, kind: str, subject: str, *, at: datetime | None = None, detail: str = ""
) -> str:
    """Append the look to the audit (before anything is shown); its entry id. Raises ProfileStoreError
    when the entry cannot be written: then nothing may be shown."""
    entry = look_entry(who, kind, subject, at or datetime.now(UTC), detail)
    try:
        return str(client.xadd(LOOKS_STREAM, entry))  # type: ignore[arg-type]
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot write the audit entry of the look, so nothing is shown: {exc}") from exc


def audit_look(settings: Settings, who: Looker, kind: str, card: str, *, detail: str = "") -> str:
    """Record a look at ``card`` as the support role (which may append to the audit, nothing more); its id."""
    store = RedisProfileStore.from_settings(settings, RedisRole.SUPPORT)
    return record_look(store.client, who, kind, store.erased_hash(card), detail=detail)


@dataclass(frozen=True, slots=True)
class StreamCheck:
    """One audit stream's counts: entries ever added, held now, trimmed by the auditor, removed otherwise."""

    stream: str
    added: int
    held: int
    trimmed: int

    @property
    def removed(self) -> int:
        return removed_outside_trims(self.added, self.held, self.trimmed)


@dataclass(frozen=True, slots=True)
class AuditReport:
    looks: list[Look]
    checks: list[StreamCheck]


def _entries(client: RedisClient, stream: str) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    start = "-"
    while True:
        page: Sequence[Any] = client.xrange(stream, start, "+", count=PAGE_SIZE)  # type: ignore[assignment]
        out.extend((str(i), {str(k): str(v) for k, v in f.items()}) for i, f in page)
        if len(page) < PAGE_SIZE:
            return out
        start = "(" + str(page[-1][0])


def _check(client: RedisClient, stream: str, trimmed: Mapping[str, str]) -> StreamCheck | None:
    try:
        info: Mapping[str, Any] = client.xinfo_stream(stream)
    except redis.ResponseError:  # no such key: nothing was ever added
        return None
    return StreamCheck(stream, int(info["entries-added"]), int(info["length"]), int(trimmed.get(stream, 0)))


def read_looks(
    settings: Settings, card: str | None = None, since: datetime | None = None, before: datetime | None = None
) -> AuditReport:
    """Every look (at ``card``, between the bounds) and the check of every audit stream, as the auditor."""
    # The store hashes ``card`` as the stores name it (the auditor's login reads the audit streams only).
    store = RedisProfileStore.from_settings(settings, RedisRole.AUDITOR)
    subject = None if card is None else store.erased_hash(card)
    client = store.client
    try:
        looks = [parse_look(i, f) for stream in (LOOKS_STREAM, OLD_VIEWS_STREAM) for i, f in _entries(client, stream)]
        trimmed = {str(k): str(v) for k, v in client.hgetall(TRIMMED_KEY).items()}
        checks = [c for s in AUDIT_STREAMS if (c := _check(client, s, trimmed)) is not None]
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot read the audit of looks as the auditor role: {exc}") from exc
    return AuditReport(select_looks(looks, subject, since, before), checks)


def trim_looks(settings: Settings, before: datetime) -> int:
    """Remove the looks recorded before ``before`` (the documented retention), as the auditor; how many.

    Each stream's count goes to ``rf:audit:trimmed``, so the listing's check tells the auditor's trims
    from anyone else's removals (a count that fails to be written shows as a removal: the safe side).
    """
    client = RedisProfileStore.from_settings(settings, RedisRole.AUDITOR).client
    # Entry ids are the server's time of the append, so none arrives below a bound in the past.
    bound = f"{int(before.timestamp() * 1000)}-0"
    total = 0
    try:
        for stream in (LOOKS_STREAM, OLD_VIEWS_STREAM):
            removed = int(client.xtrim(stream, minid=bound, approximate=False))
            if removed:
                client.hincrby(TRIMMED_KEY, stream, removed)
            total += removed
    except redis.RedisError as exc:
        raise ProfileStoreError(f"cannot trim the audit of looks as the auditor role: {exc}") from exc
    return total
