"""Which change-topic record an apply command came from, carried in two message headers.

The processor stamps every command it sends with the partition and offset of
the change it read. A sink uses them to know how much of the processor's
backlog it has already seen (:mod:`consumers.backlog`): the change topic's end
minus the newest stamped offset is what is still on its way. Headers, not
Avro fields: they describe the transport, not the record, and a command
replayed from the DLQ keeps its original stamps harmlessly.
"""

from __future__ import annotations

from collections.abc import Iterable

H_SOURCE_PARTITION = "sfsync.source.partition"
H_SOURCE_OFFSET = "sfsync.source.offset"


def lineage_headers(partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [(H_SOURCE_PARTITION, str(partition).encode()), (H_SOURCE_OFFSET, str(offset).encode())]


def read_lineage(headers: Iterable[tuple[str, bytes | None]]) -> tuple[int, int] | None:
    """(partition, offset) of the change a command came from; ``None`` when not stamped or garbled."""
    found = {k: v for k, v in headers if k in (H_SOURCE_PARTITION, H_SOURCE_OFFSET)}
    try:
        return int(found[H_SOURCE_PARTITION] or b""), int(found[H_SOURCE_OFFSET] or b"")
    except (KeyError, ValueError):
        return None
