"""``receiptflow produce`` on the real broker: every good line delivered, every bad one named (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from receiptflow.codec import Codec
from receiptflow.config import Settings
from receiptflow.topics import TopicNames, create_topics

from .support import env_for, read_all

WHEN = (datetime.now(UTC) - timedelta(hours=1)).isoformat()


def _checkout(rid: str, **over: object) -> dict[str, object]:
    line = {"line_no": 1, "sku": "6410100000000", "product_group": "dairy", "quantity": 2, "unit_price_cents": 109}
    doc: dict[str, object] = {
        "receipt_id": rid,
        "chain": "K_MARKET",
        "store_id": "K_MARKET-0001",
        "register_id": "1",
        "card_id": "6390000000001",
        "event_time": WHEN,
        "payment_method": "CARD",
        "currency": "EUR",
        "total_cents": 218,
        "lines": [{**line, "amount_cents": 218}],
    }
    doc.update(over)
    return doc


def _produce(settings: Settings, path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptflow", "produce", str(path)],
        env={**env_for(settings), **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sent(settings: Settings) -> set[str]:
    codec = Codec()
    topic = TopicNames(settings.kafka.topic_prefix).checkouts
    return {codec.decode(m.value(), expect="checkout").value["receipt_id"] for m in read_all(settings, topic)}


def test_bad_lines_are_named_and_every_good_line_is_delivered(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    long_line = {"line_no": 1, "sku": "6" * 1_000_000, "product_group": "dairy", "quantity": 1}
    rows: list[bytes] = [
        json.dumps(_checkout("good-1")).encode(),
        json.dumps(_checkout("bad-currency", currency=978)).encode(),
        json.dumps(_checkout("good-3")).encode(),
        b'{"receipt_id": "bad-utf8-\xff\xfe"}',
        json.dumps(_checkout("good-5")).encode(),
        json.dumps(_checkout("bad-sku", lines=[{**long_line, "unit_price_cents": 218, "amount_cents": 218}])).encode(),
        json.dumps(_checkout("good-7", loyalty_tier="gold")).encode(),
        json.dumps(
            _checkout("bad-line-no", lines=[{**_checkout("x")["lines"][0], "line_no": 2**40}])  # type: ignore[index]
        ).encode(),
        json.dumps(_checkout("bad-card", card_id="6390000000001\u200b")).encode(),
        json.dumps(_checkout("good-10")).encode(),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")

    done = _produce(settings, path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for lineno, reason in (
        (2, "schema"),
        (4, "not_utf8"),
        (6, "too_long"),
        (8, "out_of_range"),
        (9, "invalid_characters"),
    ):
        assert f"line {lineno}: rejected ({reason})" in done.stderr, done.stderr
    assert "line 7: warning: not in the contract, not sent: loyalty_tier" in done.stderr
    assert "sent 5, acknowledged 5, failed 0, rejected 5" in done.stdout
    assert _sent(settings) == {"good-1", "good-3", "good-5", "good-7", "good-10"}


def test_a_record_over_the_message_limit_is_one_bad_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topics(settings)
    lines = [
        {
            "line_no": i,
            "sku": f"64101{i:08d}",
            "product_group": "dairy",
            "quantity": 1,
            "unit_price_cents": 100,
            "amount_cents": 100,
        }
        for i in range(1, 41)
    ]
    big = _checkout("too-big", lines=lines, total_cents=4000)
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in (_checkout("small-1"), big, _checkout("small-3"))) + "\n")

    # A producer limit of 1,000 bytes: the 40-line receipt is over it, the others are not.
    done = _produce(settings, path, RECEIPTFLOW_KAFKA_EXTRA='{"message.max.bytes": "1000"}')
    assert done.returncode == 1, done.stderr
    assert "line 2: rejected (too_large)" in done.stderr and "Traceback" not in done.stderr
    assert _sent(settings) == {"small-1", "small-3"}
