"""receiptflow: event-streaming purchase ingestion for retail loyalty programmes.

Registers send Avro checkouts to Kafka (``receiptflow.producers``); a faust-streaming processor
validates them, applies each chain's granularity policy and the customer's consent and updates
rolling profiles in Redis (``receiptflow.processors``); a sink writes the permitted purchases to a
warehouse, DuckDB or PostgreSQL (``receiptflow.sinks``). Shared pieces live beside this file:
``config``, ``errors``, ``models``, ``codec``, ``topics``, ``metrics`` and the ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("receiptflow")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
