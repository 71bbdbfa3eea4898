"""Where each partition really ends: the ListOffsets answer, checked against what a fetch returns.

A reader that must read a partition "to its end" (faust's table recovery, a compacted-topic reader)
usually asks ListOffsets for the end. The embedded broker answers that with the base offset of the
partition's last record batch plus one (docs/kafka.md), hiding all but one record of that batch; a
fetch from just below that answer returns the batch and the true end. On Apache Kafka the fetch
only confirms the answer, so :func:`partition_ends` is right on every broker.

Contract: ``partition_ends(cfg, reported)`` returns, per ``(topic, partition)``, the larger of the
reported end and one past the last offset a fetch from ``reported - 1`` returns (or the high
watermark of that fetch); never smaller than reported. It reads with ``assign()`` (no group, no
commits) and gives up after ``timeout`` seconds on a partition that does not answer, keeping its
reported end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from confluent_kafka import KafkaError, TopicPartition

from sfsync.config import KafkaConfig
from sfsync.kafka.clients import make_consumer

TP = tuple[str, int]


def partition_ends(cfg: KafkaConfig, reported: Mapping[TP, int], timeout: float = 30.0) -> dict[TP, int]:
    ends = dict(reported)
    pending = {tp for tp, end in reported.items() if end > 0}
    if not pending:
        return ends
    consumer = make_consumer(cfg, f"{cfg.client_id}-ends-{uuid.uuid4().hex[:8]}", "ends",
                             **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"})
    try:
        consumer.assign([TopicPartition(t, p, reported[(t, p)] - 1) for t, p in sorted(pending)])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                tp = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is None:
                    ends[tp] = max(ends[tp], (msg.offset() or 0) + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                    ends[tp] = max(ends[tp], high)
                    pending.discard(tp)
        return ends
    finally:
        consumer.close()
