"""Redis roles: which ACL user each command connects as, where its password comes from, and the
ACL the embedded server loads.

The roles, each granted the least it needs (``deploy/redis/users.acl`` is the one definition):

* ``writer`` (``profile-writer``): the profile agent, ``profiles rebuild``/``project``, ``segments run``,
  the demo. Profile hashes and dedup sets (``rf:{hash}:p``, ``rf:{hash}:seen``) through the profile
  scripts, and the marketing projections with their guards (``rf:m:{mhash}``, ``rf:mg:{mhash}``); the
  cards' erased markers (``rf:{hash}:x``) read and created (``SETNX``) only, the erased-cards list
  ``rf:erased`` added to (``SADD``) only: it may mark a card erased, never undo it; no audit stream,
  no administration. Holds the erasure salt and the marketing key.
* ``marketing`` (``marketing-reader``): ``profile --view marketing`` and the page's marketing view:
  ``HGET*`` on the marketing projections ``rf:m:{mhash}`` only, which hold what the marketing view shows
  and nothing else (:mod:`receiptflow.processors.profiles.marketing`). Not a profile hash, the dedup
  sets, the projections' guards, the erased markers and record or the audit stream; no write, no scan,
  no script. Holds the marketing key, never the erasure salt: it cannot compute a card's hash, so it
  cannot even name the card's other keys.
* ``customer`` (``customer-reader``): the card holder's own view (``profile --view customer``, the
  page's customer view, a household's points): ``HGET*`` on profile hashes ``rf:{hash}:p`` only, so
  the card holder sees everything the profile holds. Not the dedup sets, the projections, the erased
  markers and record or the audit stream; no write, no scan, no script.
* ``support`` (``support``): the data-protection jobs, ``export``, ``erase`` and ``profile --view
  full``: reads and deletes a card's keys (its projection too), adds to the erased-cards record; on
  the audit streams (``rf:audit:*``) it may append and read back only (``XADD``, ``XRANGE``…), never
  delete, trim, rename or expire them. Kept apart from the writer so that the credentials every
  stream worker holds cannot take a card off the erased-cards record (and bring it back with a replay).
* ``auditor`` (``auditor``): ``receiptflow audit``: reads the audit streams and is the only role that
  may trim them (per the retention of docs/privacy.md); nothing else.
* ``web_sessions`` (``web-sessions``): ``receiptflow web``'s server-side sessions: the session
  records ``rf:web:s:*`` and the per-card session lists ``rf:web:c:*`` (keyed hashes, never a card
  id), with the few commands they need; no profile, marker or audit key.
* ``dlq_vault`` (``dlq-vault``): every dead-letter writer (router, profile agent, sink, aggregator)
  and ``dlq list|replay``: the cards' dead-letter data keys (``rf:{hash}:k``) read and created
  (``SETNX``, through a script that refuses a card whose erased marker exists) only, the erased
  markers read only; never a profile, never a delete (:mod:`receiptflow.dlq_vault`).
* ``admin``: the embedded stack's own checks (``INFO``) and maintenance; on the embedded server only.

Where a role's credentials come from, first match wins (:func:`connection_url`):

1. ``RECEIPTFLOW_REDIS_<ROLE>_PASSWORD`` (with ``RECEIPTFLOW_REDIS_<ROLE>_USER``, default the
   name above): how production passes each role its own login;
2. credentials in ``RECEIPTFLOW_REDIS_URL`` / ``RECEIPTFLOW_REDIS_PASSWORD``: one login for every
   role without its own (an external Redis with a single user);
3. on an embedded (non-production) install, the password generated for the role in
   ``data_dir/secrets/redis-<user>`` (0600, directory 0700) by ``stack up``;
4. none: an unauthenticated connection (a Redis without ACL users).

The embedded server (:mod:`receiptflow.stack.redis`) always runs with these users and the
``default`` user off: :func:`embedded_acl` renders the committed ACL with each role's password
(given, else generated per install) as a SHA-256 hash, which is all the server ever sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

from .config import Settings
from .errors import ConfigError
from .secrets import checked, generated_secret, read_generated_secret


class RedisRole(StrEnum):
    WRITER = "writer"
    MARKETING = "marketing"
    SUPPORT = "support"
    ADMIN = "admin"
    WEB_SESSIONS = "web_sessions"
    DLQ_VAULT = "dlq_vault"
    CUSTOMER = "customer"
    AUDITOR = "auditor"


# The user names of deploy/redis/users.acl.
TEMPLATE_USERS: Mapping[RedisRole, str] = {
    RedisRole.WRITER: "profile-writer",
    RedisRole.MARKETING: "marketing-reader",
    RedisRole.SUPPORT: "support",
    RedisRole.ADMIN: "admin",
    RedisRole.WEB_SESSIONS: "web-sessions",
    RedisRole.DLQ_VAULT: "dlq-vault",
    RedisRole.CUSTOMER: "customer-reader",
    RedisRole.AUDITOR: "auditor",
}


def role_user(settings: Settings, role: RedisRole) -> str:
    """The ACL user the role connects as."""
    if role is RedisRole.WRITER:
        return settings.redis.writer_user
    if role is RedisRole.MARKETING:
        return settings.redis.marketing_user
    if role is RedisRole.SUPPORT:
        return settings.redis.support_user
    if role is RedisRole.WEB_SESSIONS:
        return settings.redis.web_sessions_user
    if role is RedisRole.DLQ_VAULT:
        return settings.redis.dlq_vault_user
    if role is RedisRole.CUSTOMER:
        return settings.redis.customer_user
    if role is RedisRole.AUDITOR:
        return settings.redis.auditor_user
    return TEMPLATE_USERS[role]


def given_password(settings: Settings, role: RedisRole) -> SecretStr | None:
    """The role's password from the settings (None for admin, which only the embedded stack has); a
    production install refuses a placeholder or guessable one (:func:`receiptflow.secrets.checked`)."""
    given = _given(settings, role)
    if given is not None and settings.is_production:
        checked(settings, f"RECEIPTFLOW_REDIS_{role.name}_PASSWORD", given.get_secret_value())
    return given


def _given(settings: Settings, role: RedisRole) -> SecretStr | None:
    if role is RedisRole.WRITER:
        return settings.redis.writer_password
    if role is RedisRole.MARKETING:
        return settings.redis.marketing_password
    if role is RedisRole.SUPPORT:
        return settings.redis.support_password
    if role is RedisRole.WEB_SESSIONS:
        return settings.redis.web_sessions_password
    if role is RedisRole.DLQ_VAULT:
        return settings.redis.dlq_vault_password
    if role is RedisRole.CUSTOMER:
        return settings.redis.customer_password
    if role is RedisRole.AUDITOR:
        return settings.redis.auditor_password
    return None


def _secret_name(role: RedisRole) -> str:
    return f"redis-{TEMPLATE_USERS[role]}"


def role_password(settings: Settings, role: RedisRole, *, create: bool = False) -> str | None:
    """The role's password: from the settings, else (embedded install only) the generated one.

    ``create`` generates it when missing (``stack up`` does); clients only read it, so a client
    never invents a password no server knows.
    """
    given = given_password(settings, role)
    if given is not None:
        return given.get_secret_value()
    if settings.is_production:
        return None
    name = _secret_name(role)
    value = generated_secret(settings, name) if create else read_generated_secret(settings, name)
    return None if value is None else value.decode()


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password`` as its user info, both percent-encoded (for clients; never print it)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2] or "127.0.0.1"  # keeps the port and IPv6 brackets
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connection_url(settings: Settings, role: RedisRole) -> str:
    """The URL a client of ``role`` connects with (see the module docstring for the order)."""
    given = given_password(settings, role)
    if given is not None:
        return with_credentials(settings.redis.url, role_user(settings, role), given.get_secret_value())
    parts = urlsplit(settings.redis.url)
    if parts.username or parts.password or settings.redis.password is not None:
        if settings.redis.password is not None and settings.is_production:
            checked(settings, "RECEIPTFLOW_REDIS_PASSWORD", settings.redis.password.get_secret_value())
        return settings.redis_connection_url()
    generated = role_password(settings, role)
    if generated is not None:
        return with_credentials(settings.redis.url, role_user(settings, role), generated)
    return settings.redis.url


def render_acl(template: str, users: Mapping[str, tuple[str, str]]) -> str:
    """The ACL file for the server from the committed one (pure).

    ``users`` maps a template user name to (the name to give it, the SHA-256 hex of its password):
    those users are switched on with that hash; every other user stays as committed (off).
    """
    out = []
    for line in template.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "user" and words[1] in users and words[2:4] == ["off", "resetpass"]:
            name, digest = users[words[1]]
            if not name or any(c.isspace() or c in "()" for c in name):
                raise ConfigError(f"invalid Redis user name {name!r}")
            out.append(" ".join(["user", name, "on", "resetpass", f"#{digest}", *words[4:]]))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def acl_template() -> str:
    """The committed roles (``deploy/redis/users.acl``, shipped in the package), every user off."""
    return resources.files("receiptflow").joinpath("data/redis-users.acl").read_text(encoding="utf-8")


def embedded_acl(settings: Settings) -> str:
    """The embedded server's ACL: every role on with its password (given, else generated per install)."""
    users = {}
    for role, template_name in TEMPLATE_USERS.items():
        password = role_password(settings, role, create=True)
        if password is None and role is RedisRole.ADMIN:
            continue  # a production install generates nothing: its admin stays off
        if password is None:
            raise ConfigError(
                f"no password for the Redis role {role.value}: set RECEIPTFLOW_REDIS_{role.name}_PASSWORD"
            )
        users[template_name] = (role_user(settings, role), hashlib.sha256(password.encode()).hexdigest())
    return render_acl(acl_template(), users)
