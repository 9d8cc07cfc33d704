"""The profile consumer's drain loop: purchases handed over a fetch at a time, acked only after the
handler returned, other topics through faust's conductor (the client's fetch is replaced; no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from faust.transport.consumer import ConsumerMessage
from faust.types import TP, Message

from receiptflow.config import Settings
from receiptflow.processors.profiles.agent import create_app
from receiptflow.processors.profiles.consumer import ProfilesConsumer
from receiptflow.topics import TopicNames

PURCHASES = TopicNames("").purchases_customer
CONSENTS = TopicNames("").consents


def _message(topic: str, partition: int, offset: int, generation: int = 0) -> ConsumerMessage:
    return ConsumerMessage(
        topic, partition, offset, 1_700_000_000.0, 1, [], b"card", b"value", None, generation_id=generation
    )


Handler = Callable[[Sequence[Message]], Awaitable[None]]
OTHER = "some.other.topic"  # a topic of a faust agent: through the conductor


async def _ignore(messages: Sequence[Message]) -> None:
    return None


async def _consumer(
    tmp_path: Path, handler: Handler, committed: dict[TP, int] | None = None
) -> tuple[ProfilesConsumer, list[Message]]:
    """The app's consumer, subscribed as a worker would be, with the purchases going to ``handler``
    and faust's conductor (the agents' streams) replaced by a list of what it was given."""
    app: Any = create_app(Settings(local={"data_dir": tmp_path}))
    app.batch_handlers[CONSENTS] = _ignore  # registered first, as the app does
    app.batch_handlers[PURCHASES] = handler
    consumer: ProfilesConsumer = app.consumer
    await app.topics._update_indices()  # what subscribing does: the acking topics
    app.flow_control.resume()
    for tp, offset in (committed or {}).items():
        consumer._committed_offset[tp] = offset
    conducted: list[Message] = []

    async def callback(message: Message) -> None:
        conducted.append(message)

    consumer.callback = callback
    return consumer, conducted


async def _run(consumer: ProfilesConsumer, fetches: list[list[ConsumerMessage]]) -> None:
    """One pass of the drain loop per fetch (each what one ``getmany`` returns), without a broker."""
    pending = list(fetches)

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, ConsumerMessage]]:
        for message in pending.pop(0):
            yield message.tp, message

    consumer.getmany = getmany  # type: ignore[method-assign]
    for _ in fetches:
        await consumer.drain_fetch(consumer.app.batch_handlers)  # type: ignore[attr-defined]


async def _drain(
    tmp_path: Path, fetches: list[list[ConsumerMessage]], handler: Handler, committed: dict[TP, int] | None = None
) -> tuple[ProfilesConsumer, list[Message]]:
    consumer, conducted = await _consumer(tmp_path, handler, committed)
    await _run(consumer, fetches)
    return consumer, conducted


def _acked(consumer: ProfilesConsumer, tp: TP) -> list[int]:
    return sorted(consumer._acked.get(tp, []))


def test_a_fetch_of_purchases_reaches_the_handler_as_one_list_and_is_acked_after_it(tmp_path: Path) -> None:
    tp0, tp1 = TP(PURCHASES, 0), TP(PURCHASES, 1)
    fetch = [_message(PURCHASES, 0, 0), _message(PURCHASES, 1, 0), _message(PURCHASES, 0, 1)]
    seen: list[list[tuple[int, int]]] = []
    acked_while_handled: list[bool] = []

    async def handler(messages: Sequence[Message]) -> None:
        seen.append([(m.partition, m.offset) for m in messages])
        acked_while_handled.extend(m.acked for m in messages)

    consumer, conducted = asyncio.run(_drain(tmp_path, [fetch], handler))
    assert seen == [[(0, 0), (1, 0), (0, 1)]]
    assert acked_while_handled == [False, False, False]
    assert _acked(consumer, tp0) == [0, 1] and _acked(consumer, tp1) == [0]
    assert conducted == []


def test_records_of_other_topics_go_through_fausts_conductor(tmp_path: Path) -> None:
    fetch = [_message(OTHER, 0, 0), _message(PURCHASES, 0, 0), _message(OTHER, 0, 1)]
    handled: list[Message] = []

    async def handler(messages: Sequence[Message]) -> None:
        handled.extend(messages)

    _, conducted = asyncio.run(_drain(tmp_path, [fetch], handler))
    assert [(m.topic, m.offset) for m in conducted] == [(OTHER, 0), (OTHER, 1)]
    assert [(m.topic, m.offset) for m in handled] == [(PURCHASES, 0)]


def test_the_consent_changes_of_a_fetch_are_applied_before_its_purchases(tmp_path: Path) -> None:
    # A withdrawal read in the same fetch as a purchase of its card reaches the profile store first:
    # the stricter order, whatever order the client returned them in.
    calls: list[tuple[str, list[int]]] = []

    async def purchases(messages: Sequence[Message]) -> None:
        calls.append((PURCHASES, [m.offset for m in messages]))

    async def consents(messages: Sequence[Message]) -> None:
        calls.append((CONSENTS, [m.offset for m in messages]))

    async def drain() -> None:
        consumer, _ = await _consumer(tmp_path, purchases)
        consumer.app.batch_handlers[CONSENTS] = consents  # type: ignore[attr-defined]
        fetch = [_message(PURCHASES, 0, 7), _message(CONSENTS, 0, 3), _message(PURCHASES, 0, 8)]
        await _run(consumer, [fetch])

    asyncio.run(drain())
    assert calls == [(CONSENTS, [3]), (PURCHASES, [7, 8])]


def test_the_app_registers_the_consents_before_the_purchases(tmp_path: Path) -> None:
    app: Any = create_app(Settings(local={"data_dir": tmp_path}))
    assert list(app.batch_handlers) == [CONSENTS, PURCHASES]


def test_a_handler_that_fails_leaves_the_fetch_unacked(tmp_path: Path) -> None:
    async def handler(messages: Sequence[Message]) -> None:
        raise RuntimeError("Redis gone")

    async def drain() -> ProfilesConsumer:
        consumer, _ = await _consumer(tmp_path, handler)
        with pytest.raises(RuntimeError, match="Redis gone"):
            await _run(consumer, [[_message(PURCHASES, 0, 0), _message(PURCHASES, 0, 1)]])
        return consumer

    consumer = asyncio.run(drain())
    assert _acked(consumer, TP(PURCHASES, 0)) == []
    assert consumer._new_offset(TP(PURCHASES, 0)) is None  # nothing to commit


def test_records_read_before_a_rebalance_are_neither_handled_nor_acked(tmp_path: Path) -> None:
    # A record of an older consumer generation belongs to an assignment that is over: it is read
    # again from the committed offset by whoever holds the partition now.
    handled: list[Message] = []

    async def handler(messages: Sequence[Message]) -> None:
        handled.extend(messages)

    stale = _message(PURCHASES, 0, 0, generation=-1)
    consumer, _ = asyncio.run(_drain(tmp_path, [[stale, _message(PURCHASES, 0, 1)]], handler))
    assert [m.offset for m in handled] == [1]
    assert _acked(consumer, TP(PURCHASES, 0)) == [1]


def test_the_offsets_a_transaction_marker_takes_become_a_gap_the_commit_steps_over(tmp_path: Path) -> None:
    # The router writes transactionally: after each transaction's records its marker takes an offset
    # no consumer sees. Without the gap the committed offset would stop before the marker for ever.
    tp = TP(PURCHASES, 0)

    async def handler(messages: Sequence[Message]) -> None:
        return None

    fetches = [[_message(PURCHASES, 0, 0), _message(PURCHASES, 0, 1)], [_message(PURCHASES, 0, 3)]]
    consumer, _ = asyncio.run(_drain(tmp_path, fetches, handler, committed={tp: 0}))
    assert consumer._new_offset(tp) == 4  # 0, 1, the marker at 2 and 3: the next to read is 4


def test_records_already_read_before_a_seek_back_are_dropped(tmp_path: Path) -> None:
    handled: list[int] = []

    async def handler(messages: Sequence[Message]) -> None:
        handled.extend(m.offset for m in messages)

    fetches = [[_message(PURCHASES, 0, 5)], [_message(PURCHASES, 0, 4), _message(PURCHASES, 0, 6)]]
    asyncio.run(_drain(tmp_path, fetches, handler))
    assert handled == [5, 6]
