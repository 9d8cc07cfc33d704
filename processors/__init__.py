"""Processors: two wings that never import each other.

- :mod:`receiptflow.processors.router` — the exactly-once router: reads checkouts and consent
  changes, applies each chain's granularity policy and the card holder's consent, and fans out to
  the purchase and analytics topics in one transaction per batch.
- :mod:`receiptflow.processors.profiles` — the profile fold, its Redis store and views, and the faust
  agent that applies the router's ``purchases.customer`` and ``consents`` to the store.

A layer above the shared core: neither wing imports ``receiptflow.producers`` or ``receiptflow.sinks``,
and the web page and the jobs use the profiles wing only (``tests/unit/test_layers.py`` holds all
three rules). Jobs that need two layers live in ``receiptflow.jobs``.

This folder is the package ``receiptflow.processors`` of the distribution: ``pyproject.toml`` maps it
(``[tool.setuptools] package-dir``), so it is imported under that name only. A wing's modules import
each other relatively (``from .step import RouteStep``) and the core by its full name
(``from receiptflow.config import Settings``).
"""
