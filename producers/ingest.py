"""JSON Lines ingest (``receiptflow produce``): stream a file to Kafka, one verdict per line.

Reads bytes, so one line that is not UTF-8 is one bad line, not the end of the run. Every line is
parsed, validated with the processor's own rules and sent on its own: a line with a wrong type, a
bad encoding, an oversize field or a record over the producer's message limit is reported with its
line number and reason, and every good line is still delivered (the producer is flushed whatever
happens). Deliveries that fail later are traced back to their lines through the client's tags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ..errors import ValidationError
from ..models import Checkout, ConsentChange
from ..validation import CONSENT_MAX_AGE, validate, validate_consent
from .client import RegisterClient
from .jsonl import Kind, parse_document


@dataclass(frozen=True, slots=True)
class LineNote:
    lineno: int
    reason: str
    message: str


@dataclass(frozen=True)
class ConsentDefaults:
    """What ``produce --kind consent`` fills in for a line without it, and the horizon it checks."""

    channel: str = ""
    text_version: str = ""
    max_age: timedelta = CONSENT_MAX_AGE

    def fill(self, change: ConsentChange) -> ConsentChange:
        return replace(
            change, channel=change.channel or self.channel, text_version=change.text_version or self.text_version
        )


@dataclass
class IngestReport:
    lines: int = 0
    sent: int = 0
    acked: int = 0
    rejected: list[LineNote] = field(default_factory=list)  # not sent: why
    failed: list[LineNote] = field(default_factory=list)  # sent, delivery failed
    warnings: list[LineNote] = field(default_factory=list)  # sent, with something left out

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.failed


def ingest(
    raw_lines: Iterable[bytes],
    kind: Kind,
    client: RegisterClient,
    now: datetime,
    consent: ConsentDefaults | None = None,
) -> IngestReport:
    """Send every good line of ``raw_lines`` (JSON, one record a line); report the rest by line number.

    A consent change is sent with the client's principal, and the ``consent`` defaults for a line that
    names no channel or text version; one that still lacks them, or whose time is out of bounds at
    ``now``, is rejected (``validate_consent``).
    """
    consent = consent or ConsentDefaults()
    report = IngestReport()
    try:
        for lineno, raw in enumerate(raw_lines, start=1):
            report.lines = lineno
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.rejected.append(LineNote(lineno, "not_utf8", f"byte {exc.start + 1} is not UTF-8"))
                continue
            if not text.strip():
                continue
            try:
                parsed = parse_document(text, kind)
                record = parsed.record
                if isinstance(record, Checkout):
                    validate(record, now)
                    client.send(record, tag=lineno)
                else:
                    assert isinstance(record, ConsentChange)
                    record = client.stamped(consent.fill(record))
                    validate_consent(record, now, consent.max_age)
                    client.send_consent(record, tag=lineno)
            except ValidationError as exc:
                where = f" (field {exc.field})" if exc.field else ""
                report.rejected.append(LineNote(lineno, exc.reason, exc.message + where))
                continue
            report.sent += 1
            if parsed.unknown_fields:
                names = ", ".join(parsed.unknown_fields)
                report.warnings.append(LineNote(lineno, "unknown_fields", f"not in the contract, not sent: {names}"))
    finally:
        stats = client.flush()
        report.acked = stats.acked
        report.failed = [LineNote(int(str(tag)), "delivery_failed", err) for tag, err in stats.failed_tags]
    return report
