"""Producers: the register client, the outbox, JSON Lines ingest and the seeded simulator.

A layer above the shared core (``receiptflow.config``, ``models``, ``codec``, ...): it never imports
``receiptflow.processors`` or ``receiptflow.sinks`` (``tests/unit/test_layers.py`` holds that).

This folder is the package ``receiptflow.producers``: ``src/receiptflow/producers`` is a link to it, and it
is only ever imported under that name (``import receiptflow.producers...``). That is why its modules can
write ``from ..config import Settings``: ``..`` is ``receiptflow``. Imported as a top-level package
from the repository root (``python -c "import producers.client"``) the same line fails with
"attempted relative import beyond top-level package"; install the project (``make setup``) and import
``receiptflow.producers`` instead.
"""
