"""Warehouse sinks: DuckDB (embedded default) and PostgreSQL behind one setup/write/flush interface.

``open_sink(settings)`` picks the implementation from the warehouse URL, ``run_sink`` is the
Kafka consume loop that stores offsets with the rows (exactly-once effect). Reads go through the
open sink's ``warehouse`` (``sinks.queries``, which knows the dialect); ``warehouse_counts`` and
``cell_counts`` summarise what a warehouse holds.

A layer above the shared core: it never imports ``receiptflow.producers`` or
``receiptflow.processors`` (``tests/unit/test_layers.py`` holds that).

This folder is the package ``receiptflow.sinks`` of the distribution: ``pyproject.toml`` maps it
(``[tool.setuptools] package-dir``), so it is imported under that name only.
"""

from .base import Sink
from .duckdb import DuckDBSink
from .postgres import PostgresSink
from .queries import Warehouse, cell_counts, warehouse_counts
from .rows import SinkConsentRecord, SinkRecord, to_rows
from .runner import SinkStats, open_sink, run_sink
from .tables import DEFAULT_GROUP, RowCounts

__all__ = [
    "DEFAULT_GROUP",
    "DuckDBSink",
    "PostgresSink",
    "RowCounts",
    "Sink",
    "SinkConsentRecord",
    "SinkRecord",
    "SinkStats",
    "Warehouse",
    "cell_counts",
    "open_sink",
    "run_sink",
    "to_rows",
    "warehouse_counts",
]
