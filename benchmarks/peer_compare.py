"""The pure parts of the peers benchmark: comparing a peer's outputs with the router's, and the table.

Outputs are compared per topic as multisets of (key, decoded value): the order of records across
partitions is not part of the contract, their number and content are. Fields that legitimately
differ between two correct processors of the same input are left out (:data:`IGNORED`):

* ``processed_at`` of a purchase (customer and marketing): the wall-clock time the record was made;
* ``failed_at`` of a dead letter: likewise the time it was rejected;
* ``processor`` and ``consumer_group`` of a dead letter: name the worker and group that rejected it
  (the router's transactional id, ``quixstreams-peer``, ...), by design different per path;
* how a dead letter keeps the rejected record -- its Kafka key, ``payload``, ``card_hash``, ``sealed``,
  ``original_key``, ``original_value``: the router seals it under the card's data key with a random
  nonce (docs/privacy.md, Dead letters), so no two writers' letters hold the same bytes; what is
  sealed is tested in ``tests/integration/test_dlq.py``;
* the times inside a dead letter's ``message`` (masked, the rest of the text is compared): a receipt
  from the future is rejected with "event_time ... is after <now plus the tolerance>";
* the Avro library's own words after "cannot decode '<subject>' body: " (masked): a broken body fails
  inside the decoder, and fastavro and Apache Avro (the Kafka Streams peer) say it differently.

Everything else is compared: keys, consent applied, granularity, items and groups, policy version,
the anonymous basket (its id is keyed by the install's analytics key, which every path shares) and
the dead letter's reason, field, message and source topic, partition and offset. Record timestamps
and headers are not compared: they are the broker's or the framework's, not the job's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# Logical output topic -> fields left out of the comparison (see the module docstring).
IGNORED: dict[str, frozenset[str]] = {
    "purchases.customer": frozenset({"processed_at"}),
    "purchases.marketing": frozenset({"processed_at"}),
    "purchases.baskets": frozenset(),
    "checkouts.dlq": frozenset(
        {
            "failed_at",
            "processor",
            "consumer_group",
            "payload",
            "card_hash",
            "sealed",
            "original_key",
            "original_value",
        }
    ),
}
# Output topics whose records' Kafka keys are the writer's own (a dead letter's: the card hash, or none).
_KEY_IGNORED = frozenset({"checkouts.dlq"})
OUTPUTS = tuple(IGNORED)
# The field that names a record in a difference (the receipt, the basket, the rejected input).
_IDENTITY = {
    "purchases.customer": ("receipt_id",),
    "purchases.marketing": ("receipt_id",),
    "purchases.baskets": ("basket_id",),
    "checkouts.dlq": ("source_topic", "source_partition", "source_offset"),
}

Record = tuple[bytes | None, dict[str, Any]]  # (key, decoded value)


# An ISO-8601 time as the dead letters' messages print it.
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")
# The codec's message for a body the Avro decoder fails on; what follows the colon is the decoder's.
_DECODER_WORDS = re.compile(r"^(cannot decode '[^']*' body: ).*\Z", re.DOTALL)


def canonical(topic: str, key: bytes | None, value: Mapping[str, Any]) -> str:
    """One record as a comparable string: the ignored fields dropped, times in messages masked, keys sorted."""
    kept = {k: v for k, v in value.items() if k not in IGNORED[topic]}
    if isinstance(kept.get("message"), str) and topic == "checkouts.dlq":
        kept["message"] = _DECODER_WORDS.sub(r"\1<decoder's words>", _TIME.sub("<time>", kept["message"]))
    shown_key = None if key is None or topic in _KEY_IGNORED else key.hex()
    return json.dumps([shown_key, kept], sort_keys=True, default=repr)


def _identity(topic: str, value: Mapping[str, Any]) -> str:
    return "/".join(str(value.get(f)) for f in _IDENTITY[topic])


def first_difference(
    expected: Mapping[str, Iterable[Record]], actual: Mapping[str, Iterable[Record]], peer: str = "peer"
) -> str | None:
    """None when ``actual`` holds the same records as ``expected`` in every output topic; else the first
    difference in words: a count, then one record present on one side only and what differs in it."""
    for topic in OUTPUTS:
        exp = {canonical(topic, k, v): (k, v) for k, v in expected.get(topic, ())}
        act = {canonical(topic, k, v): (k, v) for k, v in actual.get(topic, ())}
        exp_count = Counter(canonical(topic, k, v) for k, v in expected.get(topic, ()))
        act_count = Counter(canonical(topic, k, v) for k, v in actual.get(topic, ()))
        if exp_count == act_count:
            continue
        missing, extra = exp_count - act_count, act_count - exp_count
        head = (
            f"{topic}: {sum(exp_count.values()):,} records from the router, {sum(act_count.values()):,} from {peer}"
            f" ({sum(missing.values()):,} only in the router's, {sum(extra.values()):,} only in {peer}'s)"
        )
        if missing:
            key, value = exp[next(iter(missing))]
            ident = _identity(topic, value)
            twin = next((a for c, a in act.items() if c in extra and _identity(topic, a[1]) == ident), None)
            if twin is None:
                return f"{head}; e.g. {ident} missing from {peer}'s"
            return f"{head}; e.g. {ident} differs: {_fields_differing(topic, (key, value), twin, peer)}"
        key, value = act[next(iter(extra))]
        return f"{head}; e.g. {_identity(topic, value)} only in {peer}'s"
    return None


def differing_cards(
    expected: Mapping[str, Iterable[Record]], actual: Mapping[str, Iterable[Record]], limit: int = 5
) -> list[str]:
    """The cards of the card-linked records (customer and marketing) found on one side only, at most
    ``limit`` of them: whose input to keep when a peer and the router disagree."""
    cards: list[str] = []
    for topic in ("purchases.customer", "purchases.marketing"):
        exp = Counter(canonical(topic, k, v) for k, v in expected.get(topic, ()))
        act = Counter(canonical(topic, k, v) for k, v in actual.get(topic, ()))
        only = (exp - act) + (act - exp)
        for side in (expected, actual):
            for k, v in side.get(topic, ()):
                card = v.get("card_id")
                if canonical(topic, k, v) in only and card and card not in cards:
                    cards.append(card)
                    if len(cards) == limit:
                        return cards
    return cards


def _fields_differing(topic: str, router: Record, peer_record: Record, peer: str) -> str:
    if router[0] != peer_record[0]:
        return f"key {router[0]!r} in the router's, {peer_record[0]!r} in {peer}'s"
    parts = []
    for name in sorted(set(router[1]) | set(peer_record[1])):
        if name in IGNORED[topic]:
            continue
        a, b = router[1].get(name), peer_record[1].get(name)
        if a != b:
            parts.append(f"{name} {_short(a)} in the router's, {_short(b)} in {peer}'s")
    return "; ".join(parts)


def _short(v: object, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table(rows: list[dict[str, Any]]) -> str:
    """The peers table (Markdown): path, receipts/s per worker, ratio to the router, outputs equal."""
    router = next((r for r in rows if r["path"].startswith("router")), None)
    out = [
        "| path | receipts/s per worker | vs router | outputs equal to the router's |",
        "| --- | ---: | ---: | --- |",
    ]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['path']} | - | - | {r['error']} |")
            continue
        rate = r["receipts_per_s"] / r["workers"]
        base = router["receipts_per_s"] / router["workers"] if router and not router.get("error") else None
        ratio = f"{rate / base:.2f}x" if base else "-"
        if r["path"] == (router or {}).get("path"):
            equal = "(the reference)"
        elif not r.get("compared", True):
            equal = "(not compared: writes the input unchanged)"
        else:
            equal = "yes" if r["difference"] is None else f"no: {r['difference']}"
        out.append(f"| {r['path']} | {rate:,.0f} | {ratio} | {equal} |")
    return "\n".join(out) + "\n"
