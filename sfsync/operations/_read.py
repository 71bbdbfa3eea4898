"""Read whole (non-compacted) topics to their end as of the call: what the DLQ and alert tools list.

Every partition is assigned from its beginning (no consumer group, nothing committed); a partition is
done at its end (``_PARTITION_EOF``, or the high watermark of a fetch response); the whole read is
bounded by ``timeout`` (:class:`TimeoutError` names what was not finished). Messages come back in
offset order per partition, topic by topic.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from sfsync.config import KafkaConfig
from sfsync.kafka.clients import make_consumer


def read_all(kafka_cfg: KafkaConfig, topics: list[str], *, timeout: float = 30.0, role: str = "ops-reader"
             ) -> list[Message]:
    """Every message of ``topics`` (those the broker knows; others are skipped) up to their current end."""
    deadline = time.monotonic() + timeout
    consumer = make_consumer(kafka_cfg, f"{kafka_cfg.topic_prefix}-{role}", role, **{"enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        high: dict[tuple[str, int], int] = {}
        for topic in topics:
            info = metadata.get(topic)
            if info is None or info.error is not None:
                continue
            for p in info.partitions:
                low, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                if hi > low:
                    high[(topic, p)] = hi
        if not high:
            return []
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in high])
        remaining = set(high)
        bounded: set[tuple[str, int]] = set()
        out: list[Message] = []
        while remaining:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"could not read {', '.join(sorted({t for t, _ in remaining}))} to the end "
                                   f"within {timeout} s")
            for msg in consumer.consume(500, 0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(tp)
                        continue
                    raise KafkaException(err)
                if tp not in remaining:
                    continue
                if tp not in bounded:  # the embedded broker's ListOffsets is low: take the fetch's end too
                    bounded.add(tp)
                    _, fetched = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                    high[tp] = max(high[tp], fetched)
                out.append(msg)
                if (msg.offset() or 0) + 1 >= high[tp]:
                    remaining.discard(tp)
        order = {t: i for i, t in enumerate(topics)}
        out.sort(key=lambda m: (order.get(m.topic() or "", 0), m.partition() or 0, m.offset() or 0))
        return out
    finally:
        consumer.close()


def headers_of(msg: Message) -> list[tuple[str, bytes | None]]:
    """Message headers as (name, bytes) pairs, whatever form librdkafka returned."""
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
