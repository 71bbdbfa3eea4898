"""Read a compacted topic to its end: the latest value per key, as of the call.

:func:`read_compacted` is how a role loads state kept in a compacted topic (the CDC producer's
replay positions in ``<prefix>.offsets``, for instance) before it starts:

- every partition is assigned from its beginning with ``assign()``: no consumer group is joined
  and nothing is committed, so any number of readers may run at once;
- a partition is done once its high watermark *at call time* is reached (a message at or past
  ``high - 1``) or the broker reports its end (``_PARTITION_EOF``, which also covers a log
  ending in transaction markers); records written after the call may or may not be included.
  The bound is the larger of the ListOffsets answer before reading and the high watermark of the
  first fetch response: the embedded dev broker answers ListOffsets with the base offset of the
  last record batch + 1, too low whenever that batch holds several records;
- records are read ``read_committed`` (aborted transactions are skipped), in offset order per
  partition: the last value of a key wins, a tombstone (``None`` value) deletes the key,
  records without a key are ignored;
- the whole read is bounded by ``timeout``: :class:`CompactedReadTimeout` names the topic and
  the partitions not read to their end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from sfsync.config import KafkaConfig
from sfsync.kafka.clients import make_consumer

__all__ = ["CompactedReadTimeout", "read_compacted"]

K = TypeVar("K")
V = TypeVar("V")


class CompactedReadTimeout(TimeoutError):
    """A compacted topic could not be read to its end within the timeout."""


def _identity(raw: bytes) -> Any:
    return raw


def read_compacted(
    kafka_cfg: KafkaConfig,
    topic: str,
    *,
    decode: Callable[[bytes], V] = _identity,
    key: Callable[[bytes], K | None] = _identity,
    skip: type[Exception] | tuple[type[Exception], ...] = (),
    timeout: float = 30.0,
    missing_ok: bool = False,
    role: str = "compacted-reader",
    group_id: str | None = None,
) -> dict[K, V]:
    """The latest value per key of ``topic``, read to its end as of the call (see module doc).

    ``key`` maps a raw key to the dict key, or to ``None`` for a record to ignore (a foreign key:
    its tombstones are ignored too). ``decode`` maps a raw value; an exception of a type in
    ``skip`` it raises ignores that record (the key keeps its previous value), any other
    propagates. ``missing_ok`` returns ``{}`` for a topic the broker does not know instead of
    raising ``LookupError``. ``group_id`` only names the client (no group is joined); default
    ``<topic_prefix>-<role>``.
    """
    deadline = time.monotonic() + timeout
    consumer = make_consumer(
        kafka_cfg, group_id or f"{kafka_cfg.topic_prefix}-{role}", role, **{"enable.partition.eof": True}
    )

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    try:
        while True:
            info = consumer.list_topics(topic, timeout=left()).topics.get(topic)
            err = info.error if info is not None else None
            if info is None or (err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                if missing_ok:
                    return {}
                raise LookupError(f"topic {topic} does not exist")
            if err is None:
                break
            if not err.retriable() or time.monotonic() >= deadline:
                raise KafkaException(err)
            time.sleep(0.1)  # e.g. a leader not elected yet for a topic just created
        high: dict[int, int] = {}
        for p in sorted(info.partitions):
            low, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=left())
            if hi > low:
                high[p] = hi
        if not high:
            return {}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in high])
        out: dict[K, V] = {}
        remaining = set(high)
        bounded: set[int] = set()  # partitions whose bound already includes the first fetch's high watermark
        while remaining:
            if time.monotonic() >= deadline:
                raise CompactedReadTimeout(
                    f"could not read {topic} to its end within {timeout} s "
                    f"(partitions not finished: {', '.join(map(str, sorted(remaining)))})"
                )
            for msg in consumer.consume(500, min(0.2, left())):
                if time.monotonic() >= deadline:
                    break  # reported above (a slow ``decode`` counts against the timeout too)
                err = msg.error()
                partition = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition if partition is not None else -1)
                        continue
                    raise KafkaException(err)
                if partition not in remaining:
                    continue  # finished already: a record newer than the call
                if partition not in bounded:
                    bounded.add(partition)
                    _, fetched = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                    high[partition] = max(high[partition], fetched)
                offset = msg.offset()
                if offset is not None and offset + 1 >= high[partition]:
                    remaining.discard(partition)
                raw_key = msg.key()
                if raw_key is None:
                    continue
                k = key(raw_key if isinstance(raw_key, bytes) else raw_key.encode())
                if k is None:
                    continue
                value = msg.value()
                if value is None:
                    out.pop(k, None)
                    continue
                try:
                    out[k] = decode(value)
                except skip:
                    continue
        return out
    finally:
        consumer.close()
