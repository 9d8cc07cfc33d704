"""Processors: the exactly-once router, the profile fold and store, and the faust profile agent.

A layer above the shared core: it never imports ``receiptflow.producers`` or ``receiptflow.sinks``
(``tests/unit/test_layers.py`` holds that); jobs that need both live in ``receiptflow.jobs``.

This folder is the package ``receiptflow.processors``: ``src/receiptflow/processors`` is a link to it, and it
is only ever imported under that name (``import receiptflow.processors...``). That is why its modules can
write ``from ..config import Settings``: ``..`` is ``receiptflow``. Imported as a top-level package
from the repository root (``python -c "import processors.core"``) the same line fails with
"attempted relative import beyond top-level package"; install the project (``make setup``) and import
``receiptflow.processors`` instead.
"""
