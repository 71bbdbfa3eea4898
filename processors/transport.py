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
from collections import defaultdict
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


class _ReadOffsets(defaultdict[TP, int | None]):
    """faust's per-partition "last read" offsets, which its fetch loop checks every record against (a record
    below it is dropped) and moves after every record. A partition being read again (:meth:`Consumer.reread`)
    reads as unknown and ignores moves until the re-read arrives: records the loop still holds from before the
    seek would otherwise move it past the re-read ones, and faust would drop those."""

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.rereading: set[TP] = set()

    def __getitem__(self, tp: TP) -> int | None:
        return None if tp in self.rereading else super().__getitem__(tp)

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if tp not in self.rereading:
            super().__setitem__(tp, offset)


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset: _ReadOffsets = _ReadOffsets()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def reread(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset`` (:mod:`processors.order`); :meth:`reread_arrived` once the agent
        got the first re-read record."""
        self._read_offset.rereading.add(tp)
        await self.seek_wait({tp: offset})  # in the consumer's own thread: seek() from here races its fetch

    def reread_arrived(self, tp: TP, offset: int) -> None:
        self._read_offset.rereading.discard(tp)
        self._read_offset[tp] = offset

    def committed_offset(self, tp: TP) -> int | None:
        """``tp``'s committed offset as faust last saw it: fetched from the broker when the partition was
        assigned (faust seeks to it before the agent gets a record) and moved by every commit since."""
        offset = self._committed_offset.get(tp)
        return offset if offset is not None and offset >= 0 else None

    def reread_cancelled(self) -> None:
        """Partitions revoked: faust seeks every assigned one to its committed offset again."""
        self._read_offset.rereading.clear()

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """faust takes a jump in a fetched partition's offsets for records that do not exist and commits past
        them. Only a one-offset jump in a topic that may have holes (a transaction's commit marker) is taken
        so here; any other jump may be records that were not returned (faust's fetch racing its seek after
        a rebalance, or the embedded broker skipping a batch: docs/kafka.md). The agent reads the partition
        again from the jump (:mod:`processors.order`) and records the gap only once the re-read confirmed
        it (:meth:`add_confirmed_gap`); in a topic without holes (:data:`APP_CONTIGUOUS`) a confirmed gap
        stops the worker instead."""
        size = offset_to - offset_from
        if tp.topic in getattr(self.app, APP_CONTIGUOUS, ()) or size > 1:
            log.warning("%s[%d]: offsets %d..%d were not returned by the broker; not committing past them",
                        tp.topic, tp.partition, offset_from, offset_to - 1)
            return
        await super()._add_gap(tp, offset_from, offset_to)

    async def add_confirmed_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Offsets ``[offset_from, offset_to)`` hold no record (a re-read confirmed it): faust may commit
        past them."""
        await super()._add_gap(tp, offset_from, offset_to)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
