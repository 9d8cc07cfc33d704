"""The profile agents' faust app and its consumer: committed records only, a short fetch wait, and
the purchases handed over in batches beneath faust's streams.

faust dispatches every record on its own: the consumer's drain loop wraps each in mode's
``wait_first`` (four tasks started and cancelled per record), the conductor decodes it into an event
and queues it for the stream, and the stream takes it out again (measured: about half the agent's CPU
was faust and asyncio, and a burst of 1,387 records took 580 ms to dispatch while the next purchases
waited). For a topic registered with :meth:`ProfilesApp.batches` the drain loop does none of that: it
gives the records of each fetch to the handler as one list, then acks them, so faust commits their
offsets after the handler has applied them (at least once, as with a stream; the handler must be
idempotent). The loop keeps everything else of faust's own (``faust.transport.consumer.Consumer.
_drain_messages``): the read offsets, the gaps a commit steps over (transaction markers), the commit
every N acks, a rebalance stopping the hand-over (``suspend_flow``; records of an older generation
or read while the flow is stopped are neither handled nor acked, so they are read again after the
seek to the committed offsets). Records of other topics go through faust's conductor as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message

BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]

YIELD_EVERY = 100  # records: the drain loop lets other tasks run this often (as faust's does)


class ProfilesApp(faust.App):
    """A faust App whose consumer reads only committed records, waits ``fetch_wait_ms`` on the broker
    and hands the topics registered with :meth:`batches` to their handler a fetch at a time."""

    def __init__(self, *args: Any, fetch_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_wait_ms = fetch_wait_ms
        self.batch_handlers: dict[str, BatchHandler] = {}
        super().__init__(*args, **kwargs)

    def batches(self, topic: faust.TopicT, handler: BatchHandler) -> None:
        """Subscribe to ``topic`` and give its records to ``handler`` in lists, acked once it returns.

        The records of one fetch go to the handlers in the order their topics were registered."""
        for name in topic.topics:
            self.batch_handlers[name] = handler
        self.topics.add(topic)  # the conductor subscribes the consumer to it and enables its acks

    def _new_transport(self) -> Any:
        return _ProfilesTransport(self.conf.broker_consumer, self)


class _ProfilesConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads these attributes when the consumer starts (its Fetcher is built in start()).
        # faust reads read-committed only under its own exactly_once mode, which we do not use; the
        # router's aborted transactions must stay invisible to profiles all the same.
        consumer._isolation_level = "read_committed"
        # faust fixes the fetch's wait on the broker at 1.5 s. All agents share this consumer, and
        # aiokafka sends one fetch per broker at a time, leaving out partitions whose records are not
        # yet handed over: a fetch for the idle consents topic alone then held every new purchase
        # back for up to 1.5 s (measured: the p95 from checkout to profile was 1.6 s at 500/s).
        consumer._fetch_max_wait_ms = cast(ProfilesApp, self.app).fetch_wait_ms
        return consumer


class ProfilesConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, with the batch hand-over of :class:`ProfilesApp` in its drain loop."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ProfilesConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        handlers = cast(ProfilesApp, self.app).batch_handlers
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.drain_fetch(handlers)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def drain_fetch(self, handlers: dict[str, BatchHandler]) -> None:
        """Read one fetch and hand its records over, topic by topic in the order they were registered."""
        batches = await self._read_fetch(handlers)
        for topic, handler in handlers.items():
            if topic in batches:
                # One wait per fetch, not per record: a rebalance (suspend_flow) or a stop cancels the
                # hand-over, and whatever it had not acked is read again.
                await self.wait_first(self.hand_over(handler, batches[topic]), self.suspend_flow.wait())

    async def _read_fetch(self, handlers: dict[str, BatchHandler]) -> dict[str, list[Message]]:
        """Take one fetch from the client: records of other topics go to faust's conductor at once, those
        of a batch topic are returned per topic, in the order read."""
        batches: dict[str, list[Message]] = {}
        records = self.getmany(timeout=1.0)
        await self.sleep(0)  # getmany can return at once, again and again: let the loop run
        if self.should_stop:
            return batches
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        async for tp, message in records:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue  # read before a seek back: faust drops these too
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                # A transaction marker or a compacted record leaves a gap the commit must step over.
                await self._add_gap(tp, r_offset + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            if message.topic in handlers:
                batches.setdefault(message.topic, []).append(message)
            else:
                await self.wait_first(self.callback(message), self.suspend_flow.wait())
            read_offset[tp] = offset
        return batches

    async def hand_over(self, handler: BatchHandler, messages: Sequence[Message]) -> None:
        """Give ``messages`` to ``handler`` and ack them after it returned; none if a rebalance began
        since they were read (as a faust stream skips them)."""
        generation = self.app.consumer_generation_id
        current = [m for m in messages if m.generation_id == generation]
        if not current or not self.app.flow_control.is_active():
            return
        for message in current:
            # What a stream does on taking an event: shutdown waits for these to be acked.
            message.tracked = True
            self.track_message(message)
        await handler(current)
        for message in current:
            self.ack(message)


class _ProfilesTransport(faust_aiokafka.Transport):
    Consumer = ProfilesConsumer
