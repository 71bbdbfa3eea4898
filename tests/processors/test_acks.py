"""InOrderAcks: a source partition's events are acknowledged in offset order, each once its send was
delivered; a failed delivery is never acknowledged. Over faust's own message reference counting (the
stream holds one reference while the agent works on an event), no broker.

The end-to-end guarantee (nothing committed past a failed send) is tested through the worker in
``test_worker.py``; the embedded broker cannot make a delivery fail after the send was accepted, so the
delivery-time path is checked here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faust.types.tuples import Message

from processors.app import InOrderAcks


@dataclass
class StreamEvent:
    """What faust's stream hands the agent: the message with the stream's one reference on it."""

    message: Message

    def ack(self) -> bool:  # faust's Event.ack: release one reference; True when it was the last
        return self.message.ack(None)  # type: ignore[arg-type]  # a plain Message needs no consumer


def event(offset: int, partition: int = 0) -> StreamEvent:
    message = Message("changes", partition, offset, 0.0, 0, None, b"k", b"v", None)
    message.incref()  # the conductor's reference, released by the stream when the agent moves on
    return StreamEvent(message)


def acked(events: list[StreamEvent]) -> list[tuple[int, int]]:
    """(partition, offset) of the events faust may commit."""
    return [(e.message.partition, e.message.offset) for e in events if e.message.acked]


async def test_events_are_acknowledged_in_offset_order_once_delivered() -> None:
    loop = asyncio.get_running_loop()
    failures: list[tuple[int, BaseException]] = []
    acks = InOrderAcks(on_failed_delivery=lambda e, exc: failures.append((e.message.offset, exc)))
    events = [event(0), event(1), event(2), event(3), event(0, partition=1)]
    deliveries = [loop.create_future() for _ in events]
    held = [acks.hold(e) for e in events]
    for e in events:
        assert not e.ack()  # the stream moves on: the agent's hold keeps each message unacknowledged
    for h, d in zip(held[:3], deliveries[:3], strict=True):
        acks.when_delivered(h, d)
    acks.done(held[3])  # nothing to send for offset 3
    acks.when_delivered(held[4], deliveries[4])

    deliveries[1].set_result(None)
    deliveries[4].set_result(None)
    await asyncio.sleep(0)
    assert acked(events) == [(1, 0)]  # offset 1 of partition 0 waits behind offset 0
    deliveries[0].set_result(None)
    await asyncio.sleep(0)
    assert acked(events) == [(0, 0), (0, 1), (1, 0)]  # offset 2 is still on its way, so 3 waits behind it

    boom = RuntimeError("delivery failed")
    deliveries[2].set_exception(boom)
    await asyncio.sleep(0)
    assert failures == [(2, boom)] and acks.failed == [boom]
    assert acked(events) == [(0, 0), (0, 1), (1, 0)]  # neither the failed event nor the one behind it
