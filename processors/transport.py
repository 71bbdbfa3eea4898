"""A faust transport whose consumer fetch wait is configurable and whose partition ends are true.

faust's aiokafka driver fixes ``fetch_max_wait_ms=1500`` for its worker
consumer. On a broker that answers a waiting fetch only when the wait runs out
(the embedded tansu broker; see docs/kafka.md) that adds up to 1.5 s per hop,
and production tuning wants the knob anyway. This registers as the faust
transport ``sfsync://`` (entry point ``faust.transports``), a subclass of the
stock aiokafka transport that sets the wait from ``kafka.fetch_wait_max_ms``
before the consumer starts — faust's documented way to swap transports.

It also checks the partition ends faust reads tables up to (``highwaters``, asked of ListOffsets)
against a fetch (:func:`sfsync.kafka.ends.partition_ends`): the embedded broker under-reports them, and
a table recovered only that far holds a record's state from before its last changelog batch, which
makes a later change equal to that stale state look unchanged (docs/kafka.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from sfsync.kafka.ends import partition_ends

DEFAULT_FETCH_WAIT_MS = 1500
APP_ATTRIBUTE = "sfsync_fetch_max_wait_ms"
#: the app attribute holding sfsync's KafkaConfig (set by processors.app.build_app)
APP_KAFKA = "sfsync_kafka"
#: the app attribute naming source topics whose offsets have no holes (set by processors.app.build_app)
APP_CONTIGUOUS = "sfsync_contiguous_topics"

log = logging.getLogger("sfsync.processor")


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when start() builds its fetcher.
        consumer._fetch_max_wait_ms = int(getattr(self.app, APP_ATTRIBUTE, DEFAULT_FETCH_WAIT_MS))
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        kafka = getattr(self.app, APP_KAFKA, None)
        if kafka is None or self.consumer.in_transaction or not reported:
            return reported
        true = await asyncio.to_thread(partition_ends, kafka, {(tp.topic, tp.partition): end
                                                              for tp, end in reported.items()})
        return {tp: true.get((tp.topic, tp.partition), end) for tp, end in reported.items()}


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """faust takes a jump in a fetched partition's offsets for records that do not exist and commits past
        them. In a topic whose offsets have no holes (one non-transactional producer: ``changes.outbound``)
        a jump means records were not returned (the embedded broker can skip a batch, docs/kafka.md): no gap
        is recorded, so nothing is committed past them; the agent stops the worker at the next record
        (:data:`APP_CONTIGUOUS`), and the restarted worker reads them."""
        if tp.topic in getattr(self.app, APP_CONTIGUOUS, ()):
            log.critical("%s[%d]: offsets %d..%d were not returned by the broker; not committing past them",
                         tp.topic, tp.partition, offset_from, offset_to - 1)
            return
        await super()._add_gap(tp, offset_from, offset_to)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
