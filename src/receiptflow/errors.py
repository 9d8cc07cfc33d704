"""The one exception tree of receiptflow.

Every error the package raises on purpose is a :class:`ReceiptflowError`; third-party errors are
wrapped at the boundary (``raise StackError(...) from exc``) so callers can catch ours without
importing librdkafka, redis-py or psycopg types::

    ReceiptflowError
    ├── ConfigError                 a setting is missing or inconsistent
    ├── UsageError                  a command was given an argument it cannot use (exit status 2)
    ├── SchemaError                 an .avsc file, schema id or compatibility problem
    │   └── IncompatibleSchemaError a new schema cannot read data written with an older version
    ├── ValidationError             an event breaks the contract (field, reason); goes to the DLQ
    │   └── DecodeError             bytes that are not a framed Avro record of a known schema
    ├── StackError                  the embedded broker / Redis / PostgreSQL could not be managed
    │   ├── DependencyMissingError  java, mvn or a server binary is not installed
    │   ├── PortInUseError          a port we must bind is taken by something else
    │   └── ReadinessTimeoutError   a started process did not become ready in time
    ├── BrokerError                 Kafka refused or failed an operation (admin, produce, commit)
    ├── OutboxFullError             a register's outbox has spent its disk budget
    ├── ProfileStoreError           Redis failed
    │   └── DeadLetterVaultError    the dead-letter vault (card data keys) did not answer
    ├── SealError                   a dead letter's sealed record cannot be made or opened
    ├── WarehouseError              DuckDB / PostgreSQL failed
    └── ErasureIncompleteError      an erasure stopped after recording the card as erased: run it again
"""

from __future__ import annotations


class ReceiptflowError(Exception):
    """Base of every error raised by receiptflow on purpose."""


class ConfigError(ReceiptflowError):
    """A setting is missing or inconsistent."""


class UsageError(ReceiptflowError):
    """A command was given an argument it cannot use: a missing file, a value out of range."""


class SchemaError(ReceiptflowError):
    """An Avro schema file, schema id or compatibility problem."""


class IncompatibleSchemaError(SchemaError):
    """A reader schema cannot read data written with an older schema version."""


class ValidationError(ReceiptflowError):
    """An event breaks the contract. ``reason`` is a short machine-friendly code, ``field`` the culprit."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{reason}: {message}" + (f" (field {field!r})" if field else ""))
        self.reason = reason
        self.message = message
        self.field = field


class DecodeError(ValidationError):
    """Bytes that are not a framed Avro record of a known schema."""


class StackError(ReceiptflowError):
    """The embedded broker, Redis or PostgreSQL could not be started, stopped or inspected."""


class DependencyMissingError(StackError):
    """A program the stack needs (java, mvn, redis-server, postgres) is not installed."""


class PortInUseError(StackError):
    """A port the stack must bind is taken by another program."""


class ReadinessTimeoutError(StackError):
    """A started process did not become ready within its timeout."""


class BrokerError(ReceiptflowError):
    """Kafka refused or failed an operation."""


class OutboxFullError(ReceiptflowError):
    """A register's outbox has spent its disk budget (the broker has been unreachable too long)."""


class ProfileStoreError(ReceiptflowError):
    """Redis failed."""


class DeadLetterVaultError(ProfileStoreError):
    """The dead-letter vault (the card data keys in Redis) did not answer: a letter cannot be sealed yet."""


class SealError(ReceiptflowError):
    """A dead letter's sealed record cannot be made or opened (wrong key, altered letter, bad envelope)."""


class WarehouseError(ReceiptflowError):
    """The warehouse (DuckDB or PostgreSQL) failed."""


class ErasureIncompleteError(ReceiptflowError):
    """An erasure stopped after the card was recorded as erased; running it again completes it."""
