"""Warehouse sinks: DuckDB (embedded default) and PostgreSQL behind one setup/write/flush interface.

``open_sink(settings)`` picks the implementation from the warehouse URL, ``run_sink`` is the
Kafka consume loop that stores offsets with the rows (exactly-once effect), ``warehouse_counts``
summarises what a warehouse holds.
"""

from .base import DEFAULT_GROUP, ConsentRecord, Sink, SinkRecord, WriteResult, to_rows, warehouse_counts
from .duckdb import DuckDBSink
from .postgres import PostgresSink
from .runner import SinkStats, open_sink, run_sink

__all__ = [
    "DEFAULT_GROUP",
    "ConsentRecord",
    "DuckDBSink",
    "PostgresSink",
    "Sink",
    "SinkRecord",
    "SinkStats",
    "WriteResult",
    "open_sink",
    "run_sink",
    "to_rows",
    "warehouse_counts",
]
