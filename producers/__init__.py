"""Producers: the register client, the outbox, JSON Lines ingest and the seeded simulator.

A layer above the shared core (``receiptflow.config``, ``models``, ``codec``, ...): it never imports
``receiptflow.processors`` or ``receiptflow.sinks`` (``tests/unit/test_layers.py`` holds that).

This folder is the package ``receiptflow.producers`` of the distribution: ``pyproject.toml`` maps it
(``[tool.setuptools] package-dir``), so it is imported under that name only.
"""
