"""Warehouse sinks: DuckDB (embedded default) and PostgreSQL, behind one setup/write/flush interface."""

from .base import Sink, SinkRecord, WriteResult, to_rows, warehouse_counts
from .duckdb import DuckDBSink
from .postgres import PostgresSink
from .runner import SinkStats, open_sink, run_sink

__all__ = [
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
