"""Install secrets: the keys that pseudonymise card ids and baskets, and where they come from.

Three keys turn identifiers into values that cannot be linked back without the key:

* ``erasure_salt`` keys the hashes of erased cards (the erased-cards record keeps no card id) and
  names every card's profile keys; only the writer-side roles hold it (profile writer, router, sink,
  support jobs, the customer's page);
* ``analytics_key`` keys the basket pseudonyms on the anonymous analytics data;
* ``marketing_key`` names the marketing projections (:mod:`receiptflow.processors.profiles.marketing`):
  the marketing reader holds it instead of the erasure salt, so it finds a card's projection and
  nothing else of the card.

A production install (:attr:`Settings.is_production`) must be given each key in its environment
(``RECEIPTFLOW_ERASURE_SALT``, ``RECEIPTFLOW_ANALYTICS_KEY``, ``RECEIPTFLOW_MARKETING_KEY``): a key
written in the source, or one
generated on a single machine, would either be known to everybody or differ between the machines
that must agree, so :func:`install_secret` refuses with :class:`ConfigError`; it refuses a given
placeholder (``REPLACE-ME…``) or guessable value too (:func:`checked`, every production secret's check:
:mod:`receiptflow.secret_strength`). The embedded stack
generates each key once per install, 32 random bytes, kept in ``data_dir/secrets/<name>`` readable by
its owner only (directory 0700, file 0600), so every process of that install agrees on it. The
embedded Redis's role passwords are generated the same way (:mod:`receiptflow.redis_auth`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from .config import Settings
from .errors import ConfigError
from .secret_strength import MIN_LENGTH, secret_problem

SECRETS_DIR = "secrets"
_ENV_NAMES = {
    "erasure_salt": "RECEIPTFLOW_ERASURE_SALT",
    "analytics_key": "RECEIPTFLOW_ANALYTICS_KEY",
    "marketing_key": "RECEIPTFLOW_MARKETING_KEY",
}


def secret_path(settings: Settings, name: str) -> Path:
    """Where the embedded install keeps the generated secret ``name``."""
    return settings.local.data_dir.resolve() / SECRETS_DIR / name


def install_secret(settings: Settings, name: str) -> bytes:
    """The secret ``name`` (a key of ``_ENV_NAMES``): from the settings, else generated per install.

    Raises ConfigError on a production install that was not given it.
    """
    if name not in _ENV_NAMES:
        raise ValueError(f"unknown install secret {name!r}")
    given: SecretStr | None = getattr(settings.privacy, name)
    if given is not None:
        return checked(settings, _ENV_NAMES[name], given.get_secret_value()).encode()
    if settings.is_production:
        raise ConfigError(
            f"{_ENV_NAMES[name]} is not set: a production install needs its own secret "
            f"(generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return _generated(secret_path(settings, name))


def checked(settings: Settings, variable: str, value: str) -> str:
    """``value``, the secret given as ``variable``, once it will do: on a production install not a placeholder
    and not guessable (:func:`receiptflow.secret_strength.secret_problem`), elsewhere at least 16 characters."""
    if settings.is_production:
        problem = secret_problem(variable, value)
        if problem is not None:
            raise ConfigError(problem)
    elif len(value) < MIN_LENGTH:
        raise ConfigError(f"{variable} is too short: use at least {MIN_LENGTH} random characters")
    return value


def generated_secret(settings: Settings, name: str) -> bytes:
    """The embedded install's generated secret ``name``, created (0600, in a 0700 directory) if missing.

    No setting is consulted: for secrets the caller resolves itself (the Redis role passwords).
    """
    return _generated(secret_path(settings, name))


def read_generated_secret(settings: Settings, name: str) -> bytes | None:
    """The embedded install's generated secret ``name`` if it exists; never creates it."""
    try:
        return secret_path(settings, name).read_bytes().strip()
    except FileNotFoundError:
        return None


def _generated(path: Path) -> bytes:
    """Read the secret at ``path``, creating it (0600, in a 0700 directory) if it does not exist."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        path.parent.chmod(0o700)
    value = secrets.token_hex(32).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(value + b"\n")
    try:
        # link() fails if another process created it first: then both use that one.
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value


def erasure_salt(settings: Settings) -> bytes:
    """The key of the erased-cards hashes; Redis, the warehouse and the erasure topic share it."""
    return install_secret(settings, "erasure_salt")


def analytics_key(settings: Settings) -> bytes:
    """The key of the basket pseudonyms on the analytics data; only the processor needs it."""
    return install_secret(settings, "analytics_key")


def marketing_key(settings: Settings) -> bytes:
    """The key of the marketing projections' names; the writer side and the marketing reader share it."""
    return install_secret(settings, "marketing_key")
