"""Producer and consumer wrappers with sfsync's delivery contract.

- :class:`CheckedProducer`: idempotent, acks=all; a failed delivery is never
  silent — :meth:`CheckedProducer.flush` raises :class:`DeliveryError` naming
  the topic, partition and error of every message that did not make it.
- :func:`make_consumer`: manual commits only (the caller commits after its
  work is durable), read-committed, dev/test tuning from config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from sfsync.config import KafkaConfig
from sfsync.kafka.settings import consumer_settings, producer_settings


class DeliveryError(Exception):
    """One or more messages were not acknowledged by the broker."""

    def __init__(self, failures: list[tuple[str, int, str]]) -> None:
        self.failures = failures
        sample = "; ".join(f"{t}[{p}]: {e}" for t, p, e in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} message(s) not delivered: {sample}{more}")


class FlushTimeout(Exception):
    """The broker did not acknowledge every queued message within the flush timeout."""


@dataclass
class CheckedProducer:
    """A confluent-kafka producer whose delivery failures surface as exceptions."""

    producer: Producer
    _failures: list[tuple[str, int, str]] = field(default_factory=list)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            partition = msg.partition()
            self._failures.append((msg.topic() or "?", -1 if partition is None else partition, err.str()))

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue one message; waits for queue space instead of failing when the local queue is full."""
        callback = self._on_delivery
        if on_delivery is not None:
            user_cb = on_delivery

            def callback(err: KafkaError | None, msg: Message) -> None:
                self._on_delivery(err, msg)
                user_cb(err, msg)

        self.queue(topic, value, key, headers, callback)
        self.producer.poll(0)

    def queue(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue one message on the raw client, waiting for queue space when it is full: no delivery check of
        :meth:`flush` and no poll per message (for messages of a transaction, whose commit fails if one does,
        or best-effort ones whose ``on_delivery`` counts the failures)."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued message; raise if any failed or if the wait timed out."""
        remaining = self.producer.flush(timeout)
        self.raise_failures()
        if remaining:
            raise FlushTimeout(f"{remaining} message(s) still unacknowledged after {timeout} s")

    def raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(failures)

    def __getattr__(self, name: str) -> Any:
        # Transactions and other librdkafka calls pass straight through.
        return getattr(self.producer, name)


def make_producer(cfg: KafkaConfig, role: str, transactional_id: str | None = None) -> CheckedProducer:
    return CheckedProducer(Producer(producer_settings(cfg, role, transactional_id)))


def make_consumer(cfg: KafkaConfig, group_id: str, role: str = "consumer", **overrides: Any) -> Consumer:
    settings = consumer_settings(cfg, group_id, role)
    settings.update(overrides)
    return Consumer(settings)


def commit_messages(consumer: Consumer, messages: list[Message]) -> None:
    """Synchronously commit the offsets after the given messages (highest per partition)."""
    highest: dict[tuple[str, int], int] = {}
    for m in messages:
        tp = (m.topic() or "", m.partition() or 0)
        off = m.offset() or 0
        if off + 1 > highest.get(tp, -1):
            highest[tp] = off + 1
    if highest:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in highest.items()], asynchronous=False
        )
