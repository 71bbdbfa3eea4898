"""The faust-streaming processor: changes in, apply commands out (``sfsync run processor``).

One thin agent over both change topics: decode, map (:mod:`processors.mapping`), decide against the
record's one state (:mod:`processors.commands` over :mod:`processors.conflicts`), send.

- ``changes.inbound``  (Salesforce) -> :func:`~processors.mapping.map_inbound`
- ``changes.outbound`` (PostgreSQL) -> :func:`~processors.mapping.map_outbound`
- each change -> commands for ``apply.local`` and/or ``apply.salesforce`` (the other side's winners, and
  repairs back to its own side)

Both topics are keyed by the record key and written by the same partitioner (librdkafka's, every producer
is confluent-kafka), with the same partition count, so both directions' changes of a record land on one
partition number and meet in one entry of the ``records`` Table (:mod:`processors.entry`); a restarted
worker rebuilds it from the changelog. faust runs at-least-once here (the embedded broker cannot run
aiokafka's idempotent producer); the sinks skip a write whose version they already hold.

Order per event: **decide -> send -> record**. The decision (decode, map, compare with the record's state,
encode) sends nothing; then the command goes to the producer; only once the producer took it does the
Table record the state it produced, and that state's changelog record is sent like a command (through the
same producer, ``app.producer.send``, to the changelog partition of the source partition). A source
offset is acknowledged to faust (and so committed) only when every message sent for it — its commands and
its state's changelog record — was delivered, and strictly in offset order per partition (:class:`InOrderAcks`):
faust commits the highest consecutive run of acknowledged offsets and does not reliably stop at an
unacknowledged first one. A change replayed after a crash is at or below the position stored with the
state: its writes are sent again as they were versioned (:mod:`processors.conflicts`, Redelivery).

Statuses (issue 12): the producers write a record's **In Queue** state when they capture a change (key
:func:`~sfsync.records.queued_status_key`), the sinks replace it with the outcome. A change that ends here
(skipped, unchanged, a redelivery with nothing to send: no command toward the other side, no status) sends a
tombstone of that key instead, unless it is sfsync's own echo (which no producer queued); a change that sends
a command sends nothing more. A change dead-lettered here after it decoded gets a **Failed** status
(``failure_count`` 1, the reason in ``last_error``) beside its dead letter.

Failures:

- **The change's own fault** — undecodable, unmappable, not encodable (``EncodeError``), or any other
  exception while deciding: the change goes to the direction's DLQ with the reason (error class = the
  exception's) and its origin, and the stream goes on. Deciding depends on nothing but the change and its
  state (the registry aside), so it fails the same way on every retry: stopping would only block the whole
  direction behind one record.
- **The environment's fault** — the schema registry failing (``RegistryError``), a send that fails (raised
  at once or reported at delivery), the Table refusing the entry, or a dead letter that cannot be sent:
  the worker **stops without committing the change** (``app.crash``; the process exits non-zero), and the
  restarted worker (Kubernetes, ``sfsync dev``) processes it again. A failure before the producer took
  the command leaves no state of it in the Table; one reported at delivery finds its state recorded, so
  the change is a redelivery and goes out in full. Not dead-lettered: the DLQ send goes through the same
  producer and broker as the failed send, so it likely fails as well, and while the broker, a topic or
  the registry is down every change would land in the DLQ for an operator to replay by hand. A command
  the producer refuses as too large (> 1 MB) also stops the worker, until an operator removes or shrinks
  the change.

faust itself would restart the agent after an unhandled exception and skip the event that raised
(faust-streaming issue 527): nothing escapes the agent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP

from processors.commands import next_step
from processors.conflicts import Side
from processors.entry import Entry, EntryCache, dump_entry, load_entry
from processors.identity import adopt, needs_pull, wait_over, with_sfid
from processors.mapping import Failed, Filtered, Mapped, Skipped, map_inbound, map_outbound
from processors.order import SourceOrder, Verdict
from processors.stall import StallWatch, WaitingProbe, watch_stall
from processors.state import SourcePosition
from processors.store import read_in_partition, store_settings, write_in_partition
from sfsync.config import SfsyncConfig
from sfsync.eventloop import use_uvloop
from sfsync.failures import Failure, FailureKind, Origin, failure_headers
from sfsync.gcfreeze import GcFreezer
from sfsync.health import Health, JoinWatch, exit_unless_gone, watch_join
from sfsync.kafka.faust_settings import faust_credentials
from sfsync.kafka.lineage import lineage_headers
from sfsync.kafka.topics import TopicNames
from sfsync.records import (
    ApplyCommand,
    ApplyTarget,
    ChangeEvent,
    Direction,
    Link,
    LinkKind,
    RecordStatus,
    SyncState,
    queued_status_key,
    record_key,
)
from sfsync.serde import DecodeError, EncodeError, RegistryError, Serde

log = logging.getLogger("sfsync.processor")

#: how long a worker that stops itself (without committing) may take to shut down before it exits hard
STOP_GRACE_S = 15.0


class ProcessorStats:
    """Counters the processor exposes (and logs periodically)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        #: events the agent received from its stream (:mod:`processors.stall` reads it from another thread)
        self.events = 0

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


def build_app(cfg: SfsyncConfig, web_port: int | None = None) -> tuple[faust.App, ProcessorStats]:
    """The faust app with both agents; ``web_port=None`` runs it without faust's web server."""
    names = TopicNames(cfg.kafka.topic_prefix)
    serde = Serde.from_config(cfg.kafka)
    brokers = ";".join(f"sfsync://{h}" for h in cfg.kafka.bootstrap_servers.split(","))
    app = faust.App(
        names.processor_group,
        broker=brokers,
        broker_credentials=faust_credentials(cfg.kafka),
        broker_session_timeout=cfg.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=cfg.kafka.heartbeat_interval_ms / 1000,
        broker_request_timeout=max(40.0, cfg.kafka.session_timeout_ms / 1000 + 5),
        broker_commit_interval=0.5,
        topic_partitions=cfg.kafka.partitions,
        topic_replication_factor=cfg.kafka.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        **store_settings(cfg),
        table_cleanup_interval=3600.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.02,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        stream_wait_empty=False,
    )
    app.sfsync_fetch_max_wait_ms = cfg.kafka.fetch_wait_max_ms  # type: ignore[attr-defined]  # processors.transport
    app.sfsync_kafka = cfg.kafka  # type: ignore[attr-defined]  # processors.transport: true partition ends
    # written by the relay alone, idempotent and not transactional: its offsets have no holes
    app.sfsync_contiguous_topics = frozenset({names.changes_outbound})  # type: ignore[attr-defined]  # processors.transport
    stats = ProcessorStats()

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def table(name: str) -> Any:
        # faust declares the changelog topic <app-id>-<name>-changelog itself (compacted).
        return app.Table(name, default=None, partitions=cfg.kafka.partitions, key_type=bytes, value_type=bytes)

    # Messages go out through faust's producer itself (``app.producer.send``), by topic name: faust's
    # Topic.send adds a FutureMessage, its sensors and two more coroutine layers per message, for nothing the
    # processor uses (py-spy, bench/inbound.py). The topics are still declared, so faust creates them.
    for name in (names.dlq("postgres"), names.dlq("salesforce"), names.apply_local, names.apply_salesforce,
                 names.status):
        topic(name)
    inbound_dlq, outbound_dlq = names.dlq("postgres"), names.dlq("salesforce")
    targets = {Side.LOCAL: names.apply_local, Side.SALESFORCE: names.apply_salesforce}
    records = table("records")
    status = names.status
    links = names.links
    topic(links)
    entries = EntryCache()
    wait_s = cfg.processor.identity_wait_s
    #: how often parked changes are checked for a handover that did not come (a fraction of the wait)
    give_up_every = min(1.0, max(0.05, wait_s / 4))
    #: when this worker last read a links message (a backlog delays handovers, :func:`wait_over`)
    last_link = [time.monotonic()]
    partitions = list(range(cfg.kafka.partitions))
    partitioner = DefaultPartitioner()  # murmur2, the one every producer uses (sfsync.kafka.settings)

    def held_here(key: bytes) -> int | None:
        """The table partition of ``key`` when this worker holds it (its change topics' partition of that
        number is assigned here: they are co-partitioned with the table), else ``None``."""
        partition: int = partitioner(key, partitions, partitions)
        return partition if TP(names.changes_outbound, partition) in app.consumer.assignment() else None
    #: record key -> (when its first change was parked, the partition, its sfid, its local key): changes waiting
    #: for the handover of the record's state (:mod:`processors.identity`); the agent holds the events
    waiting_since: dict[bytes, tuple[float, int, str, str]] = {}
    counter = _CounterNames()

    def status_of(change: ChangeEvent, side: Side, state: SyncState, detail: str, failures: int = 0) -> Outgoing:
        """The record's status in the direction its change goes (compacted, like the sinks' statuses)."""
        record = RecordStatus(key=change.key, object=change.object, direction=_direction(side),
                              state=state, sfid=change.sfid, local_key=change.local_key, last_error=detail,
                              failure_count=failures, last_attempt_ts=datetime.now(UTC))
        return Outgoing(status, record.kafka_key.encode(), serde.encode(record, names.status), [])

    def queued_cleared(change: ChangeEvent, side: Side) -> list[Outgoing]:
        """A tombstone of the record's In Queue state (issue 12) for a change that ends here: no command goes
        to the other side and no status is written, so nothing else would ever replace it. None for a change
        without a record key (neither sfid nor local key): no producer could have written one for it."""
        try:
            key = change.key
        except ValueError:
            return []
        return [Outgoing(status, queued_status_key(_direction(side), key).encode(), None, [])]

    def dead_letter(change: ChangeEvent, side: Side, dlq: str, event: Any, failure: Failure) -> list[Outgoing]:
        """The dead letter of a decoded change and the record's Failed status beside it (the reason shown
        where an operator looks first; the dead letter keeps the change for a replay)."""
        out = [_dead_letter(dlq, event, failure)]
        try:
            out.append(status_of(change, side, SyncState.FAILED, failure.message or failure.error_class, 1))
        except RegistryError:
            raise  # the environment's fault: the worker stops (module docstring)
        except Exception:  # no status (no record key, say) must keep the change from its dead letter
            pass
        return out

    def on_link(event: Any) -> list[Outgoing] | Handover:
        """A pull: answer with the state kept under the local key (and record the sfid in it). A handover:
        for the agent to adopt. A link that cannot be decoded is skipped (logged): nothing waits on it for
        longer than ``processor.identity_wait_s``."""
        msg = event.message
        last_link[0] = time.monotonic()
        try:
            link = serde.decode(event.value, Link, msg.topic)
        except DecodeError as e:
            stats.add("identity.link_undecodable")
            log.warning("%s[%d]@%d: skipping a link that cannot be decoded: %s", msg.topic, msg.partition,
                        msg.offset, e.reason)
            return []
        if link.kind is LinkKind.HANDOVER:
            return Handover(link.kafka_key.encode(), link)
        if link.partition is None:  # the record of a move made in place (moved_here): nobody waits for it
            return []
        local = link.kafka_key.encode()
        raw = read_in_partition(records.data, msg.partition, local)  # co-partitioned: the local key's partition
        stored = load_entry(raw)
        answer = Link(kind=LinkKind.HANDOVER, object=link.object, sfid=link.sfid, local_key=link.local_key,
                      entry=raw if stored is not None else None)
        stats.add("identity.handed_over" if stored is not None else "identity.nothing_to_hand_over")
        out = Outgoing(links, answer.kafka_key.encode(), serde.encode(answer, links), [], partition=link.partition)
        if stored is not None and stored.sfid != link.sfid:
            moved = with_sfid(stored, link.sfid)
            out = Outgoing(out.topic, out.key, out.value, [], local, dump_entry(moved), moved, link.partition)
        return [out]

    def moved_here(sfid: str, local_key: str, local: bytes, partition: int) -> tuple[Entry, list[Outgoing]]:
        """The state of a record created locally, moved in place to its sfid key: this worker holds the local
        key's partition too, so nothing waits for a pull and a handover, and nothing goes to the links topic
        (nobody would read it: the pull would need no answer, and the handover would find the state adopted
        already). What is kept is what that round trip leaves behind in the Table: the sfid recorded under
        the local key (in the local key's partition), and the adopted entry under the sfid."""
        raw = read_in_partition(records.data, partition, local)
        found = entries.get(local, raw)
        if found is None and raw is not None:
            found = load_entry(raw)
        out: list[Outgoing] = []
        if found is not None and found.sfid != sfid:
            named = with_sfid(found, sfid)
            out.append(Outgoing(None, None, b"", [], local, dump_entry(named), named, state_partition=partition))
        return adopt(found, sfid, local_key), out

    def decide(event: Any, released: bool = False) -> list[Outgoing] | Parked | Handover:
        """What to send for one event (``[]``: nothing). Sends nothing, stores nothing; raises
        ``RegistryError`` when the registry fails, anything else is about the change itself (a change that
        decoded and then failed unexpectedly is dead-lettered here, with its Failed status). A change that
        waits for its record's state (:mod:`processors.identity`) is :class:`Parked`; a handover of that
        state from the links topic is :class:`Handover`, for the agent to adopt."""
        msg = event.message
        if msg.topic == links:
            return on_link(event)
        side = Side.SALESFORCE if msg.topic == names.changes_inbound else Side.LOCAL
        direction = "inbound" if side is Side.SALESFORCE else "outbound"
        dlq = inbound_dlq if side is Side.SALESFORCE else outbound_dlq
        try:
            change = serde.decode(event.value, ChangeEvent, msg.topic)
        except DecodeError as e:
            stats.add(counter(direction, "decode_failed"))
            return [_dead_letter(dlq, event, Failure(FailureKind.PERMANENT, "DecodeError", e.reason))]
        try:
            return decide_change(event, change, side, direction, dlq, released)
        except RegistryError:
            raise
        except Exception as e:  # deciding is pure: an error there is about this change
            stats.add("unexpected_failed")
            log.exception("%s[%d]@%d: unexpected error; dead-lettering the change", msg.topic, msg.partition,
                          msg.offset)
            return dead_letter(change, side, dlq, event, Failure(FailureKind.PERMANENT, type(e).__name__, str(e)))

    def decide_change(event: Any, change: ChangeEvent, side: Side, direction: str, dlq: str, released: bool = False
                      ) -> list[Outgoing] | Parked:
        """:func:`decide` for a change that decoded."""
        msg = event.message
        result = map_inbound(change, cfg, keep_echo=True) if side is Side.SALESFORCE else map_outbound(change, cfg)
        if isinstance(result, Filtered):
            stats.add(counter(direction, "filtered"))
            return [status_of(change, side, SyncState.FILTERED, f"{result.reason} ({result.rule})")]
        if isinstance(result, Skipped):
            stats.add(counter(direction, "skipped"))
            return queued_cleared(change, side)
        if isinstance(result, Failed):
            stats.add(counter(direction, "mapping_failed"))
            log.warning("%s %s[%d]@%d %s: %s", direction, msg.topic, msg.partition, msg.offset,
                        change.key, result.reason)
            return dead_letter(change, side, dlq, event, Failure(FailureKind.PERMANENT, "CoercionError",
                                                                 result.reason))
        assert isinstance(result, Mapped)
        if result.unmapped_fields:
            stats.add(counter(direction, "unmapped_fields"), len(result.unmapped_fields))
        key: bytes | None = event.key
        state_key = key or change.key.encode()
        if state_key in waiting_since and not released:
            return Parked(state_key, None)  # behind the changes of the key parked before it
        # the store itself, by the event's partition: faust's Table.get adds sensors and a default lookup, and
        # its store goes by the event being handled, which a change released from a timer is not
        raw = read_in_partition(records.data, msg.partition, state_key)
        stored = entries.get(state_key, raw)
        if stored is None and raw is not None:
            stored = load_entry(raw)
        moved: list[Outgoing] | None = None  # a move in place: what it records under the local key
        if needs_pull(stored, change, state_key):
            assert change.sfid and change.local_key
            local = record_key(change.object, local_key=change.local_key).encode()
            here = held_here(local)
            if here is None:
                stats.add("identity.pulled")
                pull = Link(kind=LinkKind.PULL, object=change.object, sfid=change.sfid, local_key=change.local_key,
                            partition=msg.partition)
                return Parked(state_key, Outgoing(links, pull.kafka_key.encode(), serde.encode(pull, links), []),
                              change.sfid, change.local_key)
            stats.add("identity.moved_here")
            stored, moved = moved_here(change.sfid, change.local_key, local, here)
        position = SourcePosition(msg.partition, msg.offset)
        step = next_step(stored, change, result.command, side, result.echo, position, cfg)
        if not step.commands:
            stats.add(counter(direction, "unchanged"))
        stats.add(counter(direction, "redelivered" if step.entry is None else "applied"))
        if step.losses:
            stats.add("conflicts.lost", step.losses)
            log.info("%s %s: %d field(s) kept the other side's value (%s)", direction, change.key, step.losses,
                     "; ".join(step.loss_notes))
        out: list[Outgoing] = []
        if step.losses:  # never silently gone: the record's status says what was lost, to what, why, when
            out.append(status_of(change, side, SyncState.CONFLICT, "; ".join(step.loss_notes)))
        to_other = False
        for command, repair in step.commands:
            stats.add("repairs" if repair else counter(direction, "sent"))
            to = _side_of(command)
            to_other = to_other or to is not side
            try:
                value = serde.encode(command, targets[to])
            except EncodeError as e:
                stats.add(counter(direction, "encode_failed"))
                return dead_letter(change, side, dlq, event, Failure(FailureKind.PERMANENT, "EncodeError", str(e)))
            # lineage headers name a position in the target sink's own change topic: not for a repair
            headers = [] if repair else lineage_headers(msg.partition, msg.offset)
            out.append(Outgoing(targets[to], state_key, value, headers))
        if not to_other and not step.losses and not result.echo:
            out.extend(queued_cleared(change, side))  # issue 12: the change ends here; its In Queue goes
        if moved is not None:
            out = [*moved, *out]
            if step.entry is None:  # the adopted entry is stored whatever the change does (or it moves again)
                assert stored is not None
                out.append(Outgoing(None, state_key, b"", [], state_key, dump_entry(stored), stored))
        entry_value = dump_entry(step.entry) if step.entry is not None else None
        if entry_value is not None and out and out[-1].state_key is None:
            last = out[-1]
            out[-1] = Outgoing(last.topic, last.key, last.value, last.headers, state_key, entry_value, step.entry)
        elif entry_value is not None and (step.entry != stored or moved is not None):
            out.append(Outgoing(None, state_key, b"", [], state_key=state_key, state_value=entry_value,
                                entry=step.entry))
        return out

    async def crash(event: Any, exc: BaseException) -> None:
        """Stop the worker; ``event`` stays unacknowledged, so its offset is not committed.

        The reference taken here is what keeps it so: faust's stream acknowledges the event it last yielded
        when the agent is cancelled (its iterator's ``finally``), and the consumer's stop commits what was
        acknowledged. An event the agent did not hold yet (a hole's first record) was committed that way."""
        msg = event.message
        msg.incref()
        stats.add("worker_stopped")
        log.critical("stopping the worker without committing %s[%d]@%d: %s: %s", msg.topic, msg.partition,
                     msg.offset, type(exc).__name__, exc)
        exit_unless_gone(STOP_GRACE_S, 1, f"{type(exc).__name__} at {msg.topic}[{msg.partition}]@{msg.offset}")
        await app.crash(exc)

    async def stop_worker(event: Any, exc: BaseException) -> NoReturn:
        """:func:`crash`, then wait to be cancelled by the stopping worker: nothing after ``event`` runs."""
        await crash(event, exc)
        await _parked()

    async def process(stream: Any) -> None:
        stopping: set[asyncio.Future[None]] = set()  # strong references: the loop keeps only weak ones

        def failed_delivery(event: Any, exc: BaseException) -> None:
            stopping.add(asyncio.ensure_future(crash(event, exc)))

        acks = InOrderAcks(on_failed_delivery=failed_delivery,
                           on_acked=lambda e: app.sensors.on_message_out(e.message.tp, e.message.offset,
                                                                         e.message))
        order = SourceOrder({names.changes_outbound: 0, names.changes_inbound: 1})
        sources = (names.changes_inbound, names.changes_outbound, links)

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def _forget(_app: Any, *args: Any, **kw: Any) -> None:
            order.forget()  # whoever owns a partition next starts from its committed offset
            app.consumer.reread_cancelled()  # type: ignore[attr-defined]
            # changes parked on a partition this worker gives up wait for a handover its next owner gets: they
            # are dropped unacknowledged (so never committed here) and that owner reads them again
            revoked = set(args[0] if args else kw.get("revoked", ()))
            acks.forget(revoked)
            for key, waiting in list(parked.items()):
                if waiting and waiting[0].event.message.tp in revoked:
                    del parked[key]
                    waiting_since.pop(key, None)

        def start_assigned() -> None:
            """Where each assigned source partition resumes: its committed offset."""
            for tp in app.consumer.assignment():
                if tp.topic in sources:
                    order.start(tp, app.consumer.committed_offset(tp))  # type: ignore[attr-defined]  # transport

        producer = app.producer
        changelog = records.changelog_topic.get_topic_name()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _recovered(_app: Any, *_args: Any, **_kw: Any) -> None:
            entries.clear()  # tables are recovered again: what the cache holds may be from before

        #: record key -> its parked events, in the order read (:mod:`processors.identity`)
        parked: dict[bytes, list[_Held]] = {}

        def persisted(tp: TP, delivery: asyncio.Future[Any]) -> None:
            """The changelog offset the store's files hold up to (what faust's Table._on_changelog_sent does
            for its own sends): a restarted worker then recovers only what its files lack."""
            if not delivery.cancelled() and delivery.exception() is None:
                records.data.set_persisted_offset(tp, delivery.result().offset)

        async def handle(held: _Held, released: bool = False) -> None:
            """Decide one held event and send what it makes; or park it; or adopt a handover and decide the
            changes parked for it. ``released``: a parked change decided now (:func:`release`)."""
            event = held.event
            try:
                outs = decide(event, released)
            except RegistryError as e:
                await stop_worker(event, e)
            except Exception as e:  # deciding is pure: an error there is about this change
                msg = event.message
                stats.add("unexpected_failed")
                log.exception("%s[%d]@%d: unexpected error; dead-lettering the change", msg.topic, msg.partition,
                              msg.offset)
                dlq = inbound_dlq if msg.topic == names.changes_inbound else outbound_dlq
                outs = [_dead_letter(dlq, event, Failure(FailureKind.PERMANENT, type(e).__name__, str(e)))]
            if isinstance(outs, Parked):
                parked.setdefault(outs.state_key, []).append(held)  # unacknowledged until decided
                if outs.pull is not None and outs.pull.topic is not None:
                    waiting_since[outs.state_key] = (time.monotonic(), event.message.partition, outs.sfid,
                                                     outs.local_key)
                    try:
                        sent = asyncio.ensure_future(await producer.send(
                            outs.pull.topic, outs.pull.key, outs.pull.value, partition=None, timestamp=None,
                            headers=None))
                    except Exception as e:
                        await stop_worker(event, e)
                    sent.add_done_callback(functools.partial(pull_delivered, event))
                return
            if isinstance(outs, Handover):
                key = outs.state_key
                adopted: list[Outgoing] = []
                if read_in_partition(records.data, event.message.partition, key) is None:
                    entry = adopt(load_entry(outs.link.entry), outs.link.sfid, outs.link.local_key)
                    adopted.append(Outgoing(None, None, b"", [], key, dump_entry(entry), entry))
                await emit(held, adopted)
                await release(key)
                return
            await emit(held, outs)

        def pull_delivered(event: Any, future: asyncio.Future[Any]) -> None:
            exc = future.exception() if not future.cancelled() else asyncio.CancelledError("pull cancelled")
            if exc is not None:
                failed_delivery(event, exc)

        #: keys whose parked changes are being decided (:func:`release`)
        releasing: set[bytes] = set()

        async def release(key: bytes) -> None:
            """Decide the events parked under ``key``, in the order they were read, those parked while this runs
            included (the key stays in ``waiting_since`` until the last is decided, so a new change of it queues
            behind them). One release per key at a time: a handover that comes while the give-up releases the
            key leaves it to that release."""
            if key in releasing:
                return
            releasing.add(key)
            try:
                while waiting := parked.get(key):
                    await handle(waiting.pop(0), released=True)
            finally:
                releasing.discard(key)
                parked.pop(key, None)
                waiting_since.pop(key, None)

        async def give_up_waiting() -> None:
            """Decide, without it, the changes whose handover did not come in time (:mod:`processors.identity`),
            whatever partition they wait on. Runs beside the agent (:func:`give_up_loop`): a parked change's
            partition may get no other event for as long as it likes. The Table is read and written by the
            parked change's partition, not by an event being handled."""
            now = time.monotonic()
            for key, (since, on, sfid, local_key) in list(waiting_since.items()):
                if key in releasing or not wait_over(since, last_link[0], now, wait_s):
                    continue
                stats.add("identity.timed_out")
                log.warning("%s: no handover of its state within %.0f s; deciding its changes without it",
                            key.decode(errors="replace"), now - since)
                if read_in_partition(records.data, on, key) is None:  # the store only, no changelog record: a
                    # worker that recovers from the changelog (a new machine) may pull for it again
                    write_in_partition(records.data, on, key, dump_entry(adopt(None, sfid, local_key)))
                await release(key)

        async def give_up_loop() -> None:
            try:
                while not acks.failed:
                    await asyncio.sleep(give_up_every)
                    if waiting_since:
                        await give_up_waiting()
            except Exception as e:  # a bug here must not leave changes parked for good: stop, commit nothing
                log.critical("stopping the worker: giving up on parked changes failed: %s: %s", type(e).__name__, e)
                exit_unless_gone(STOP_GRACE_S, 1, f"{type(e).__name__} while giving up on parked changes")
                await app.crash(e)

        async def emit(held: _Held, outs: list[Outgoing]) -> None:
            """Send ``outs``, record their Table entries, acknowledge ``held`` once all of it was delivered."""
            if not outs:
                acks.done(held)
                return
            msg = held.event.message
            try:
                deliveries: list[Any] = []
                for out in outs:
                    if out.topic is not None:
                        deliveries.append(await producer.send(out.topic, out.key, out.value, partition=out.partition,
                                                              timestamp=None, headers=out.headers))
                for out in outs:
                    if out.state_key is not None:
                        # not ``records[key] = value``: faust buffers that changelog record unawaited, and its
                        # pre-commit flush gives up after 0.1 s, so an offset could be committed ahead of the
                        # state it produced; a kill then restores a state one decision behind. The record goes
                        # through the same producer, awaited for delivery like a command.
                        partition = msg.partition if out.state_partition is None else out.state_partition
                        assert out.state_value is not None  # every entry is dump_entry's; none is deleted
                        # by partition, not by faust's current event: a released change is decided from a timer
                        write_in_partition(records.data, partition, out.state_key, out.state_value)
                        if out.entry is not None and out.state_value is not None:
                            entries.put(out.state_key, out.state_value, out.entry)
                        delivery = asyncio.ensure_future(await producer.send(
                            changelog, out.state_key, out.state_value, partition=partition, timestamp=None,
                            headers=None))
                        delivery.add_done_callback(functools.partial(persisted, TP(changelog, partition)))
                        deliveries.append(delivery)
            except Exception as e:
                await stop_worker(held.event, e)
            if len(deliveries) == 1:
                acks.when_delivered(held, asyncio.ensure_future(deliveries[0]))
            elif deliveries:
                acks.when_delivered(held, asyncio.gather(*deliveries))
            else:
                acks.done(held)

        give_up = asyncio.ensure_future(give_up_loop())  # beside the stream: a quiet partition has no event
        try:
            async for event in stream.events():
                stats.events += 1
                msg = event.message
                if not order.known(msg.tp):
                    start_assigned()
                check = order.check(msg.tp, msg.topic, msg.offset)
                if check.verdict is Verdict.SEEK:
                    assert check.seek is not None
                    log.warning("%s[%d]: offset %d read while %d was next; reading again from %d", msg.topic,
                                msg.partition, msg.offset, check.seek, check.seek)
                    stats.add("source_reread")
                    await app.consumer.reread(msg.tp, check.seek)  # type: ignore[attr-defined]  # transport
                if check.verdict in (Verdict.SEEK, Verdict.DROP):
                    event.message.incref()  # never acknowledged: the re-read copy is processed instead
                    continue
                if check.verdict is Verdict.HOLE:
                    assert check.gap is not None
                    await stop_worker(event, SkippedRecords(
                        f"{msg.topic}[{msg.partition}]: offsets {check.gap[0]}..{check.gap[1] - 1} were not "
                        "returned by the broker, read again"))
                if check.reread:
                    app.consumer.reread_arrived(msg.tp, msg.offset)  # type: ignore[attr-defined]
                if check.gap is not None:
                    await app.consumer.add_confirmed_gap(msg.tp, *check.gap)  # type: ignore[attr-defined]
                held = acks.hold(event)
                if acks.failed:  # a delivery failed and the worker is stopping: process nothing more
                    await _parked()
                await handle(held)
        finally:
            give_up.cancel()

    process.__name__ = "records_agent"
    app.agent(app.topic(names.changes_inbound, names.changes_outbound, links, key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw"), name="records")(process)
    return app, stats


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message an event sends to the topic named ``topic`` (``None``: none, only the Table entry;
    ``value=None``: a tombstone), and the Table entry to record once the producer took the event's messages
    (``state_value``, and ``entry``: what it encodes, kept decoded for the next change of the record)."""

    topic: str | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    state_key: bytes | None = None
    state_value: bytes | None = None
    entry: Entry | None = None
    partition: int | None = None  # ``None``: the key's, by the partitioner (a handover: the parked changes')
    #: the table partition of the entry (``None``: the event's; another only for a move in place)
    state_partition: int | None = None


@dataclass(frozen=True, slots=True)
class Parked:
    """A change that waits for its record's state (:mod:`processors.identity`); ``pull``: the pull to send
    (the key's first parked change, with its ids), else ``None``."""

    state_key: bytes
    pull: Outgoing | None
    sfid: str = ""
    local_key: str = ""


@dataclass(frozen=True, slots=True)
class Handover:
    """A record's state handed over from its local key, for the agent to adopt under ``state_key``."""

    state_key: bytes
    link: Link


class _CounterNames:
    """The stats counter names ``"<direction>.<what>"``, built once each: an f-string per counter per change
    adds up at thousands of changes a second."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], str] = {}

    def __call__(self, direction: str, what: str) -> str:
        name = self._names.get((direction, what))
        if name is None:
            name = self._names[(direction, what)] = f"{direction}.{what}"
        return name


def _direction(side: Side) -> Direction:
    """The direction of a change read from ``side``."""
    return Direction.INBOUND if side is Side.SALESFORCE else Direction.OUTBOUND


class SkippedRecords(Exception):
    """The broker returned a partition of a topic without holes with a hole in it."""


def _side_of(command: ApplyCommand) -> Side:
    return Side.LOCAL if command.target is ApplyTarget.LOCAL else Side.SALESFORCE


async def _parked() -> NoReturn:
    """Wait until cancelled (the stopping worker cancels its agents)."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")  # pragma: no cover


def _dead_letter(dlq: str, event: Any, failure: Failure) -> Outgoing:
    """The dead letter of ``event``: its original key and value, the failure headers with its origin."""
    msg = event.message
    headers = failure_headers(failure, stage="processor", attempt=1, origin=Origin(msg.topic, msg.partition,
                                                                                      msg.offset),
                              now=datetime.now(UTC))
    return Outgoing(dlq, event.key, event.value, headers)


@dataclass
class _Held:
    event: Any
    done: bool = False


@dataclass
class InOrderAcks:
    """Acknowledges a source partition's events to faust strictly in offset order, each once the message
    sent for it was delivered (or at once when nothing was sent), so faust commits no offset past an event
    whose output is not durable. A failed delivery is never acknowledged: ``on_failed_delivery`` stops the
    worker, and every later event of that partition stays unacknowledged behind it.

    :meth:`hold` takes one extra reference on the event's message (faust acknowledges a message when its
    last reference is released; the stream releases its own when the agent moves on).
    """

    on_failed_delivery: Callable[[Any, BaseException], object]
    on_acked: Callable[[Any], object] = lambda _event: None
    failed: list[BaseException] = field(default_factory=list)
    _pending: defaultdict[Any, deque[_Held]] = field(default_factory=lambda: defaultdict(deque))

    def hold(self, event: Any) -> _Held:
        event.message.incref()
        held = _Held(event)
        self._pending[event.message.tp].append(held)
        return held

    def done(self, held: _Held) -> None:
        """``held`` needs nothing more; acknowledge it and the events behind it that are done too."""
        held.done = True
        queue = self._pending[held.event.message.tp]
        while queue and queue[0].done:
            event = queue.popleft().event
            if event.ack():  # the last reference: the offset may be committed now
                self.on_acked(event)

    def forget(self, tps: set[Any]) -> None:
        """Partitions revoked: their held events are dropped, never acknowledged here (the next owner reads
        them again from the committed offset); a delivery that completes later acknowledges nothing."""
        for tp in tps:
            self._pending.pop(tp, None)

    def when_delivered(self, held: _Held, delivery: asyncio.Future[Any]) -> None:
        """:meth:`done` once ``delivery`` succeeds; on failure, ``on_failed_delivery`` and nothing acknowledged."""
        def delivered(future: asyncio.Future[Any]) -> None:
            exc = future.exception() if not future.cancelled() else asyncio.CancelledError("delivery cancelled")
            if exc is None:
                self.done(held)
            else:
                self.failed.append(exc)
                self.on_failed_delivery(held.event, exc)

        delivery.add_done_callback(delivered)


def watch_health(app: faust.App, health: Health) -> None:
    """Feed ``health`` from the worker: ready once a rebalance completed (tables recovered, streams
    resumed) with partitions assigned; alive while the event loop runs its timers."""
    assigned: set[Any] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust types receivers loosely
    async def _assigned(_app: Any, *args: Any, signal: Any = None, **_kw: Any) -> None:  # (sender, TPs)
        assigned.clear()
        assigned.update(args[0] if args else _kw.get("assigned", ()))
        health.mark("group", False, f"{len(assigned)} partition(s) assigned; recovering tables")
        log.info("assigned %d partition(s); recovering tables", len(assigned))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        health.mark("group", False, "rebalancing")
        log.info("partitions revoked: rebalancing")

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _complete(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        health.mark("group", bool(assigned), f"joined; {len(assigned)} partition(s) assigned, tables recovered")
        log.info("rebalance complete: %d partition(s), tables recovered", len(assigned))

    @app.timer(interval=1.0)
    async def _beat() -> None:
        health.beat()


def restart_stuck_join(app: faust.App, watch: JoinWatch) -> None:
    """Feed ``watch`` from the worker's group membership: joining from the start and at every
    revocation, joined at every assignment (even an empty one). Table recovery after the assignment is
    not timed: it can rightly take long."""

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        watch.joined()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        watch.joining("revocation")


def restart_stalled(app: faust.App, stats: ProcessorStats, cfg: SfsyncConfig) -> None:
    """Exit with 75 when this worker holds partitions with records waiting and handles none of them for
    ``processor.stall_timeout_s`` (:mod:`processors.stall`). Armed once a rebalance completed with source
    partitions assigned; a revocation disarms it (table recovery can rightly take long)."""
    names = TopicNames(cfg.kafka.topic_prefix)
    sources = {names.changes_inbound, names.changes_outbound, names.links}
    watch = StallWatch(cfg.processor.stall_timeout_s)
    held: list[frozenset[tuple[str, int]]] = [frozenset()]  # replaced whole: the watchdog thread reads it
    probe = WaitingProbe(cfg.kafka, names.processor_group, markers={names.changes_inbound})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(_app: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        held[0] = frozenset((tp.topic, tp.partition) for tp in (args[0] if args else kw.get("assigned", ()))
                            if tp.topic in sources)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        watch.disarm()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _complete(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        if held[0]:
            watch.arm(time.monotonic())
        else:
            watch.disarm()

    watch_stall(watch, lambda: probe.waiting(held[0]), lambda: stats.events,
                interval_s=max(0.5, min(10.0, cfg.processor.stall_timeout_s / 6)))


def run(cfg: SfsyncConfig, loglevel: str = "warn", health: Health | None = None) -> None:
    """Run one processor worker until SIGINT/SIGTERM (faust handles both), or until its group join is
    stuck for ``kafka.join_timeout_ms``, or it stalls for ``processor.stall_timeout_s`` (both exit 75,
    :data:`sfsync.health.RESTART_EXIT_CODE`)."""
    use_uvloop()
    app, stats = build_app(cfg)
    if health is not None:
        watch_health(app, health)
    watch = JoinWatch(cfg.kafka.join_timeout_ms / 1000)
    restart_stuck_join(app, watch)
    watch_join(watch, "processor")
    if cfg.processor.stall_timeout_s > 0:
        restart_stalled(app, stats, cfg)

    @app.task
    async def quiet_libraries() -> None:
        # The worker's logging set-up leaves faust/aiokafka debug-enabled; their per-message debug
        # calls cost ~9% of the processor's CPU (py-spy, bench/inbound.py).
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)

    freezer = GcFreezer()

    @app.task
    async def freeze_the_heap() -> None:
        freezer.install()  # the worker is built: what is alive now lives as long as the process

    @app.timer(interval=1.0)
    async def freeze_survivors() -> None:
        freezer.tick()  # full collections walk only what is new since the last one (sfsync/gcfreeze.py)

    @app.timer(interval=30.0)
    async def report() -> None:
        if stats.counts:
            log.info("processor counts: %s", dict(stats.counts))

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

