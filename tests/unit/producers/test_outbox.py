"""Outbox without a broker: accepted sales are on disk, survive a reopen, and the budget is enforced."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from receiptflow.config import Settings
from receiptflow.errors import OutboxFullError, ValidationError
from receiptflow.producers.outbox import Outbox
from receiptflow.producers.simulator import Simulator

START = datetime(2026, 11, 24, 9, tzinfo=UTC)


def _settings(tmp_path: Path) -> Settings:
    # Nothing listens there: these tests never start the sender.
    return Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, local={"data_dir": tmp_path})


def test_accepted_sales_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "register.sqlite3"
    sim = Simulator(1, stores=5, customers=10)
    sales = list(sim.stream(120, START, rate=1))
    box = Outbox(path, _settings(tmp_path))
    for c in sales[:20]:
        box.accept(c)
    box.accept_many(sales[20:])
    assert box.pending() == 120
    size = box.bytes_pending
    box.close()

    again = Outbox(path, _settings(tmp_path))
    assert again.pending() == 120
    assert again.bytes_pending == size > 0
    ids = [r[0] for r in again._db.execute("SELECT receipt_id FROM outbox ORDER BY seq")]
    assert ids == [c.receipt_id for c in sales]
    again.close()


def test_disk_budget_gives_a_clear_error_and_keeps_what_was_accepted(tmp_path: Path) -> None:
    sim = Simulator(2, stores=5, customers=10)
    box = Outbox(tmp_path / "r.sqlite3", _settings(tmp_path), max_bytes=4000)
    accepted = 0
    with pytest.raises(OutboxFullError, match="budget of 4000 bytes"):
        for c in sim.stream(1000, START, rate=1):
            box.accept(c)
            accepted += 1
    assert 0 < accepted < 1000
    assert box.pending() == accepted
    assert box.bytes_pending <= 4000
    box.close()


def test_schema_violation_is_rejected_before_it_is_stored(tmp_path: Path) -> None:
    sim = Simulator(3, stores=5, customers=10)
    c = next(iter(sim.stream(1, START, rate=1)))
    box = Outbox(tmp_path / "r.sqlite3", _settings(tmp_path))
    with pytest.raises(ValidationError) as info:
        box.accept(replace(c, total_cents="12.50"))  # type: ignore[arg-type]
    assert info.value.reason == "schema"
    assert box.pending() == 0
    box.close()


def test_the_outbox_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files 0644 unless created otherwise
    try:
        path = tmp_path / "outbox" / "register.sqlite3"
        box = Outbox(path, _settings(tmp_path))
        box.accept_many(list(Simulator(2, stores=3, customers=5).stream(10, START, rate=1)))
        files = sorted(path.parent.iterdir())
        box.close()
    finally:
        os.umask(old)
    # The database, its WAL and shared-memory files (SQLite gives them the database file's mode).
    assert {f.name for f in files} >= {"register.sqlite3", "register.sqlite3-wal"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files if f.exists()), files
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
