"""Whether a secret given to a production install is good enough: not a placeholder, not guessable (pure).

The deploy bundles ship placeholders (``deploy/env.example``, ``deploy/k8s/secret.yaml``): a
deployment applied unchanged would run with an erasure salt and an analytics key everybody knows.
So a production install refuses, for every secret it is given (the install secrets, the web key,
the Redis role passwords, the PostgreSQL password):

* a value containing ``REPLACE-ME`` in any case, or equal to a placeholder the bundles ship
  (:data:`PLACEHOLDERS`; ``tests/unit/test_secret_strength.py`` reads the bundle files, so a new
  placeholder that this list misses fails the tests);
* a low-entropy value: fewer than :data:`MIN_LENGTH` characters, fewer than :data:`MIN_DISTINCT`
  distinct characters, an estimate below :data:`MIN_BITS` bits, a repetition of a shorter text
  (``"0123456789" * 2``) or a value holding a common password word (:data:`COMMON_WORDS`). The
  estimate is the value's length times the Shannon entropy of its own character frequencies:
  ``"k" * 32`` scores 0, ``"abcd" * 8`` 64 bits but only 4 distinct characters, a
  ``secrets.token_hex(32)`` about 240 bits. No check can prove a value random; these catch the
  typed, the repeated and the well known.

:func:`secret_problem` says what is wrong in one line, naming the variable and how to make a good one.
"""

from __future__ import annotations

import math
from collections import Counter

MIN_LENGTH = 16
MIN_DISTINCT = 10
MIN_BITS = 56.0
PLACEHOLDER_MARK = "replace-me"
# Every value the bundles ship in place of a secret (each also holds the mark; kept for a future one that does not).
PLACEHOLDERS = frozenset(
    {
        "replace-me-erasure-salt-at-least-16-chars",
        "replace-me-analytics-key-at-least-16-chars",
        "replace-me-profile-writer",
        "replace-me-marketing-reader",
        "replace-me-support",
        "replace-me-auditor",
        "replace-me-redis-admin",
        "replace-me-warehouse",
        "replace-me-warehouse-sink",
        "replace-me-warehouse-support",
        "replace-me-grafana",
        "REPLACE-ME-not-a-real-erasure-salt",
        "REPLACE-ME-not-a-real-analytics-key",
        "REPLACE-ME-not-a-real-password",
    }
)
# Words that make a value guessable; none is likely in 64 random hex or base64 characters (< 1e-5).
COMMON_WORDS = ("password", "passwd", "secret", "changeme", "letmein", "qwerty", "123456", "abcdef", "admin")
GENERATE = "generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"


def entropy_bits(value: str) -> float:
    """The value's length times the Shannon entropy of its character frequencies, in bits."""
    if not value:
        return 0.0
    n = len(value)
    per_char = -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    return n * per_char


def repeated(value: str) -> bool:
    """Whether ``value`` is a shorter text repeated (the last repetition may be cut short)."""
    n = len(value)
    return any(value == (value[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1))


def secret_problem(variable: str, value: str) -> str | None:
    """What is wrong with ``value`` as the production secret ``variable``, in one line; None when it will do."""
    if PLACEHOLDER_MARK in value.lower() or value in PLACEHOLDERS:
        return (
            f"{variable} is still the placeholder of the deploy bundle: a production install needs its own; {GENERATE}"
        )
    if len(value) < MIN_LENGTH:
        return f"{variable} is too short: use at least {MIN_LENGTH} random characters; {GENERATE}"
    distinct = len(set(value))
    bits = entropy_bits(value)
    lowered = value.lower()
    if distinct < MIN_DISTINCT or bits < MIN_BITS or repeated(value) or any(w in lowered for w in COMMON_WORDS):
        return (
            f"{variable} is too easy to guess ({distinct} distinct characters, about {bits:.0f} bits; at least "
            f"{MIN_DISTINCT} and {MIN_BITS:.0f} are needed): {GENERATE}"
        )
    return None
