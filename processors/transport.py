"""A faust transport whose consumer fetch wait is configurable.

faust's aiokafka driver fixes ``fetch_max_wait_ms=1500`` for its worker
consumer. On a broker that answers a waiting fetch only when the wait runs out
(the embedded tansu broker; see docs/kafka.md) that adds up to 1.5 s per hop,
and production tuning wants the knob anyway. This registers as the faust
transport ``sfsync://`` (entry point ``faust.transports``), a subclass of the
stock aiokafka transport that sets the wait from ``kafka.fetch_wait_max_ms``
before the consumer starts — faust's documented way to swap transports.
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_WAIT_MS = 1500
APP_ATTRIBUTE = "sfsync_fetch_max_wait_ms"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when start() builds its fetcher.
        consumer._fetch_max_wait_ms = int(getattr(self.app, APP_ATTRIBUTE, DEFAULT_FETCH_WAIT_MS))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer
