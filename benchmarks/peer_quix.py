"""The router's job on quixstreams, as a quixstreams team would write it: the peer `peers.py` times.

Same inputs (``checkouts`` and ``consents``), same per-record decisions, its own output topics:

* both inputs are one ``StreamingDataFrame`` (``consents.concat(checkouts)``): quixstreams then
  buffers the two and hands over same-numbered partitions in timestamp order, as the router's
  time-ordered merge does, so a consent change written before a checkout applies to it;
* one stateful ``apply`` per record runs the router's own per-record code
  (:class:`~receiptflow.processors.router.step.RouteStep`: decode, validate, policy, consent, dedup,
  encode), so the comparison measures the framework, not a rewrite of the core. Its state -- each
  card's consent history and the receipt ids seen -- lives in quixstreams' RocksDB state store,
  scoped by the message key (the card id; the store id of an anonymous receipt), changelogged to
  Kafka by quixstreams;
* ``to_topic`` with the topic chosen per output writes customer, marketing, analytics and dead
  letters; ``processing_guarantee="exactly-once"``: outputs, state changelog and offsets commit in
  one Kafka transaction per checkpoint (``commit_interval``, quixstreams' default 5 s).

quixstreams pins an older confluent-kafka and pydantic than the project does, so it is installed
into a folder of its own (``constraints-quixstreams.txt``; ``make bench`` does it) and this script
runs in a child process with that folder first on its path: ``PYTHONPATH=.venv/quixstreams python
benchmarks/peer_quix.py OUTPUT_PREFIX GROUP`` with the ``RECEIPTFLOW_*`` environment of the inputs
(their prefix is ``RECEIPTFLOW_TOPIC_PREFIX``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from peer_record import Record, peer_letters, peer_outputs, peer_step
from quixstreams import Application, State, message_context
from quixstreams.models.serializers import Serializer

from receiptflow.config import Settings
from receiptflow.processors.router.consent import ConsentHistory, ConsentRecord
from receiptflow.processors.router.state import Staged
from receiptflow.processors.router.step import Output
from receiptflow.topics import TopicNames

# Keys in the state store (scoped by quixstreams to the message key, i.e. the card).
SEEN, CONSENT = "seen:", "consent:"


class _Seen:
    """``receipt id in seen`` answered from the state store."""

    state: State

    def __contains__(self, rid: object) -> bool:
        return bool(self.state.exists(SEEN + str(rid)))


class _Consents:
    """``consent.get(card)`` answered from the state store (a history as JSON: its changes as
    [[iso time, product, electronic]], the append time of the newest and the changes before it)."""

    state: State

    def get(self, card: str) -> ConsentHistory | None:
        raw = self.state.get(CONSENT + card)
        if raw is None:
            return None
        before = raw["before_written"]
        return ConsentHistory(_records(raw["changes"]), raw["written_ms"], None if before is None else _records(before))


def _records(raw: list[list[Any]]) -> tuple[ConsentRecord, ...]:
    return tuple(ConsentRecord(datetime.fromisoformat(t), p, e) for t, p, e in raw)


def _records_json(records: tuple[ConsentRecord, ...]) -> list[list[Any]]:
    return [[r.event_time.isoformat(), r.product_data_marketing, r.electronic_marketing] for r in records]


def _history_json(h: ConsentHistory) -> dict[str, Any]:
    before = None if h.before_written is None else _records_json(h.before_written)
    return {"changes": _records_json(h.changes), "written_ms": h.written_ms, "before_written": before}


class _PartitionView:
    """What :meth:`RouteStep.step` reads of a partition's state (``PartitionState``'s two fields)."""

    def __init__(self) -> None:
        self.seen = _Seen()
        self.consent = _Consents()

    def bind(self, state: State) -> None:
        self.seen.state = self.consent.state = state


class _OutputValue(Serializer):
    """Writes an :class:`Output`'s encoded bytes (the step has encoded them already)."""

    def __call__(self, value: Output, ctx: object) -> bytes:
        return value.value


def main() -> int:
    out_prefix, group = sys.argv[1], sys.argv[2]
    settings = Settings()
    inputs, outputs = TopicNames(settings.kafka.topic_prefix), TopicNames(out_prefix)
    step = peer_step(settings, out_prefix, "quixstreams-peer")
    letters = peer_letters(settings, "quixstreams-peer")
    app = Application(
        broker_address=settings.kafka.bootstrap_servers,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        state_dir=str(settings.local.data_dir / f"quix-state-{group}"),
        loglevel="WARNING",
    )

    def source(name: str) -> Any:
        return app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))

    sinks = {
        name: app.topic(name, key_serializer="bytes", value_serializer=_OutputValue())
        for name in (
            outputs.purchases_customer,
            outputs.purchases_marketing,
            outputs.analytics_baskets,
            outputs.checkouts_dlq,
        )
    }
    view, staged = _PartitionView(), Staged()

    def route(value: bytes | None, key: bytes | None, timestamp: int, headers: object, state: State) -> list[Output]:
        ctx = message_context()
        msg = Record(ctx.topic, ctx.partition, ctx.offset, key, value, timestamp)
        view.bind(state)
        now = datetime.now(UTC)
        result = step.step(msg, {ctx.partition: view}, staged, now)  # type: ignore[dict-item]
        for (_, rid), at in staged.seen.items():
            state.set(SEEN + rid, at)
        for (_, card), history in staged.consent.items():
            state.set(CONSENT + card, _history_json(history))
        staged.seen.clear()
        staged.consent.clear()
        staged.appended.clear()
        return peer_outputs(step, result, letters, now)

    sdf = source(inputs.consents).concat(source(inputs.checkouts))
    sdf = sdf.apply(route, stateful=True, expand=True, metadata=True)
    sdf.to_topic(lambda out, key, ts, headers: sinks[out.topic], key=lambda out: out.key)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
