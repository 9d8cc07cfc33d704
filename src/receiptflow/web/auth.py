"""Sign-in without passwords: one-time sign-in links, who may see what, CSRF tokens, rate limits.

* A **sign-in link** carries a token signed with the install's web key (itsdangerous): the role
  (``customer``, ``support`` or ``cashier``), whom it names (a card, or a staff login) and a random
  nonce. It is valid ``settings.web.link_minutes`` after it was made and once: the server records each
  redeemed nonce in ``data_dir/web/used-links`` (kept until the link would have expired anyway), so
  a link opened twice — also across a restart of the server — signs in only the first time.
* **Who may see what** (:func:`may_see_card`): a customer their own card only; support every card,
  through the audited full view only; a cashier or register login nothing that belongs to a card.
* **CSRF**: each session has a random token; every form that changes something sends it back and
  the server compares it in constant time (:func:`csrf_ok`).
* **Rate limits** (:class:`RateLimiter`): per client address in a sliding window, sign-in attempts
  with a link that is not valid (guessing) and, more generously, sign-in requests of any kind.

The session itself lives server side, in Redis (:mod:`.sessions`): the cookie (HttpOnly,
SameSite=Lax, Secure when the page is served over HTTPS) holds only its random id.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config import Settings
from ..errors import ConfigError
from ..secrets import checked, generated_secret

ROLES = ("customer", "support", "cashier")
LINK_SALT = "receiptflow-web-sign-in-link"


def web_key(settings: Settings) -> bytes:
    """The key that signs links (and keys the sessions' per-card lists): given in production, else generated
    per install."""
    if settings.web.secret_key is not None:
        return checked(settings, "RECEIPTFLOW_WEB_SECRET_KEY", settings.web.secret_key.get_secret_value()).encode()
    if settings.is_production:
        raise ConfigError(
            "RECEIPTFLOW_WEB_SECRET_KEY is not set: a production install needs its own key "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return generated_secret(settings, "web-key")


@dataclass(frozen=True, slots=True)
class Login:
    role: str  # one of ROLES
    subject: str  # the card (customer) or the staff login's name


def same_text(a: str, b: str) -> bool:
    """Constant-time equality of two texts, any characters: ``compare_digest`` refuses non-ASCII ``str``
    (a request's ``/card/é`` or ``csrf=ä`` raised, a 500), so both are compared as UTF-8 bytes."""
    return secrets.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def may_see_card(login: Login | None, card: str) -> bool:
    """Whether ``login`` may see the customer pages of ``card`` (support uses its audited view instead)."""
    return login is not None and login.role == "customer" and same_text(login.subject, card)


def csrf_ok(session_token: str | None, sent: str | None) -> bool:
    """Whether a form's CSRF token is the session's (constant-time)."""
    return bool(session_token) and bool(sent) and same_text(str(session_token), str(sent))


class UsedLinks:
    """The nonces of redeemed links until their links expire, kept in a file that survives restarts."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()

    def _read(self) -> dict[str, float]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        out = {}
        for line in lines:
            nonce, _, until = line.partition(" ")
            try:
                out[nonce] = float(until)
            except ValueError:
                continue
        return out

    def claim(self, nonce: str, until: float) -> bool:
        """Record ``nonce`` as used until ``until`` (epoch seconds); False when it was used before."""
        with self._lock:
            now = self.clock()
            used = {n: u for n, u in self._read().items() if u > now}
            if nonce in used:
                return False
            used[nonce] = until
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(f"{n} {u}\n" for n, u in used.items()), encoding="utf-8")
            tmp.replace(self.path)
            return True


class Links:
    """Makes and redeems one-time sign-in links."""

    def __init__(self, key: bytes, minutes: int, used: UsedLinks) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt=LINK_SALT)
        self.max_age = minutes * 60
        self.used = used

    def make(self, role: str, subject: str) -> str:
        """A token for ``role`` naming ``subject``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if not subject.strip():
            raise ValueError("a sign-in link needs a card or a staff login")
        return self._serializer.dumps({"r": role, "s": subject, "n": secrets.token_urlsafe(16)})

    def check(self, token: str) -> Login | None:
        """The login ``token`` names if it is genuine and not expired (does not use it up)."""
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or data.get("r") not in ROLES or not isinstance(data.get("s"), str):
            return None
        return Login(data["r"], data["s"])

    def redeem(self, token: str) -> Login | None:
        """The login of a genuine, unexpired link that was not used before; it is used up now."""
        login = self.check(token)
        if login is None:
            return None
        data = self._serializer.loads(token, max_age=self.max_age)
        if not self.used.claim(str(data.get("n", "")), self.used.clock() + self.max_age):
            return None
        return login


class RateLimiter:
    """At most ``limit`` events per key within ``window`` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def full(self, key: str) -> bool:
        """Whether ``key`` is at its limit now (counts nothing)."""
        with self._lock:
            events = self._events.get(key)
            now = self.clock()
            return events is not None and sum(1 for e in events if e > now - self.window) >= self.limit

    def allow(self, key: str) -> bool:
        """Count one event for ``key``; False when it is over the limit (the event is not counted then)."""
        with self._lock:
            now = self.clock()
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True
