"""The Salesforce CDC producer (``sfsync run salesforce-producer``): CometD -> ``changes.inbound``.

Contract:

- Subscribes with aiosfstream-ng to ``/data/<Object>ChangeEvent`` for every mapped object,
  authenticating through sfsync's OAuth module (:mod:`sfsync.salesforce.streaming`).
- Every event becomes envelopes (:mod:`producers.salesforce.events`) keyed by
  ``record_key(object, sfid)``. Envelopes, the channel's position (``OffsetRecord``: replay id + commit
  time) in the compacted ``offsets`` topic and any alert are written in ONE Kafka transaction per small
  batch (``salesforce.cdc_batch_events`` events or ``salesforce.cdc_batch_ms`` after the first pending
  one). A crash at any point
  leaves either the events and their position, or neither.
- Start: fence earlier instances (``init_transactions``), read the offsets topic to its end
  (read_committed) and resume after the stored replay id; no stored id -> ``start``
  (``latest``: -1, ``all``: -2, from ``salesforce.cdc_start``).
- ``GAP_CREATE/UPDATE/DELETE/UNDELETE``: the records are read back over REST (queryAll) and emitted as
  ``snapshot`` (or ``delete``) envelopes in the same transaction as the gap's position.
- ``GAP_OVERFLOW``: catch-up query on ``SystemModstamp`` since the last commit seen (minus a margin),
  snapshot envelopes and a ``replay_gap`` alert. A stored replay id outside the retention window (the
  subscribe is refused with 400): subscribe from -1, then the same catch-up + alert; the stored position
  becomes ``(-1, catch-up start)`` until the next event, so a crash in between repeats the catch-up.
  The alert's cause is ``replay_gap:<channel>``; the channel's next change event resolves it (in that
  event's transaction): the stream flows again.
- The streaming client failing (Salesforce unreachable, refused) for longer than a minute raises one
  ``connection_down`` alert (cause ``connection_down:salesforce-producer:salesforce``), resolved once
  every channel is subscribed again (:class:`sfsync.operations.alerts.DownWatch`). So does a stream that
  breaks while running, after subscribing: aiocometd-ng would retry its ``/meta/connect`` inside the client
  and ``receive()`` would only wait, so the consume loop checks the transport's state
  (:func:`sfsync.salesforce.streaming.stream_lost`: a connect request FAILED, never mere silence: a quiet
  org sends nothing for hours) and, once the messages already received are handled, raises
  :class:`~sfsync.salesforce.streaming.StreamLost`: the outage's clock starts, and the producer reconnects
  with backoff from the committed positions like after any other client failure (nothing lost, even a
  long-poll answer cut in flight: its events are read again).
- **In Queue**: with each envelope (in its transaction) the record's In Queue state goes to ``<prefix>.status``
  under ``queued:inbound:<record key>`` (:func:`~producers.salesforce.events.queued_status`; one message per
  record and transaction, its ``updated_ts`` the time the change was read), except for sfsync's own echoes
  (``changeOrigin`` naming ``salesforce.call_options_client``). An envelope dead-lettered instead has none.
- Parent paths (``Owner.Name``) are resolved for the envelopes of every event, repair and catch-up, and a
  change of a captured parent re-emits its children's updates (:mod:`producers.salesforce.parents`).
- Network loss: a failed ``/meta/connect`` of the open stream is a client failure (above; aiocometd-ng's own
  retry loop, ``connection_timeout=0``, is left for a new client); 401/403 re-authenticate
  through the authenticator; any other client failure: flush what is processed, reconnect with backoff
  from the committed positions; so is a body that is no CometD answer (a 503 with a REST-style error array,
  refused by :func:`sfsync.salesforce.streaming.loads_cometd`). Nothing is acknowledged to Salesforce:
  position lives in Kafka only.
  Before a reconnect, a changed config file (the role's, :mod:`sfsync.config.credentials`) renews the
  ``salesforce.auth`` credentials (refused ones, e.g. a rotated password) and reconnects at once.
- A bad change does not stop the direction: a message that is no CDC event, an envelope without a record
  key, one that cannot be encoded or is larger than the message limit (the client's ``message.max.bytes``;
  a lower limit of the broker's is met at commit: the transaction is aborted and written again with that
  envelope dead-lettered) goes to ``<prefix>.dlq.postgres`` (:mod:`producers.deadletters`) with one alert,
  in the same transaction as the event's position: a crash leaves the dead letter and the position, or
  neither (the event is then read again and dead-lettered again). Everything after it flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from aiosfstream_ng import Client, ReplayMarker
from aiosfstream_ng.exceptions import AiosfstreamException, ServerError
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.deadletters import DeadLetter, direction_dlq, is_size_error, message_limit, message_size
from producers.salesforce.events import (
    GAP_OVERFLOW,
    GAP_RECORD_TYPES,
    OFFSET_KEY_PREFIX,
    OPERATIONS,
    CdcEvent,
    Envelope,
    OffsetRecord,
    catchup_query,
    catchup_since,
    change_events,
    channel_for,
    chunks,
    envelope_dead_letter,
    event_dead_letter,
    is_invalid_replay,
    offset_key,
    parse_event,
    prepare_envelope,
    query_fields,
    queued_status,
    record_query,
    refuse_envelope_for_size,
    replay_id_of,
    snapshot_events,
    start_replay_id,
)
from producers.salesforce.parents import ParentFields
from sfsync import eventloop
from sfsync.backoff import Backoff
from sfsync.config import SfsyncConfig
from sfsync.config.credentials import process_source
from sfsync.health import Health
from sfsync.kafka.clients import CheckedProducer, DeliveryError
from sfsync.kafka.compacted import read_compacted
from sfsync.kafka.settings import producer_settings
from sfsync.kafka.topics import TopicNames
from sfsync.operations.alerts import DownWatch, StreakEvent, connection_cause, resolved_alert
from sfsync.records import Alert, AlertKind, AlertSeverity, ChangeEvent, Direction, queued_status_key, utcnow
from sfsync.salesforce.paced import PacedCalls
from sfsync.salesforce.rest import SalesforceClient
from sfsync.salesforce.streaming import (
    StreamLost,
    close_client,
    make_streaming_client,
    stream_lost,
    transport_state,
)
from sfsync.salesforce.values import ObjectTypes
from sfsync.serde import EncodeError, Serde

log = logging.getLogger("sfsync.producers.salesforce")

#: how long the streaming transport may retry a failed connect on its own before the producer takes it for a
#: broken stream (a new client, the outage's clock started)
STREAM_LOST_GRACE_S = 5.0

ROLE = "salesforce-producer"


def transactional_id(cfg: SfsyncConfig) -> str:
    """The producer's transactional id: one active instance per topic prefix."""
    return f"{cfg.kafka.topic_prefix}-salesforce-producer"


def make_transactional_producer(cfg: SfsyncConfig) -> CheckedProducer:
    """The transactional producer (``producer_settings`` keeps the transaction timeout >= the message timeout)."""
    return CheckedProducer(Producer(producer_settings(cfg.kafka, ROLE, transactional_id(cfg))))


def _offset_channel(raw_key: bytes) -> str | None:
    """The channel of an offsets-topic key; ``None`` for a key that is not a CDC position."""
    text = raw_key.decode(errors="replace")
    return text[len(OFFSET_KEY_PREFIX):] if text.startswith(OFFSET_KEY_PREFIX) else None


def read_offsets(cfg: SfsyncConfig, timeout: float = 30.0) -> dict[str, OffsetRecord]:
    """The latest committed position per channel: reads the offsets topic to its end (read_committed;
    tombstones clear, foreign keys and unreadable values are ignored, no topic yet -> ``{}``)."""
    return read_compacted(
        cfg.kafka, TopicNames(cfg.kafka.topic_prefix).offsets,
        key=_offset_channel, decode=OffsetRecord.decode, skip=ValueError, timeout=timeout, missing_ok=True,
        role=ROLE, group_id=f"{cfg.kafka.topic_prefix}-salesforce-producer-offsets",
    )


#: Transactions written for one batch at most: the first, and again after the broker refused messages for
#: their size (dead-lettered, then lean dead letters).
MAX_WRITES = 3


@dataclass
class _Batch:
    events: list[_Channeled] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    offsets: dict[str, OffsetRecord] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    first_at: float | None = None

    def __len__(self) -> int:
        return len(self.events) + len(self.dead) + len(self.alerts) + len(self.offsets)


@dataclass(frozen=True, slots=True)
class _Channeled:
    """An encoded envelope with the channel it came from (for its dead letter, should the broker refuse it)
    and its record's In Queue state (status key, encoded value; ``None``: an echo)."""

    envelope: Envelope
    channel: str
    queued: tuple[str, bytes] | None = None


class _ReaderError:
    """A failure of the streaming client, queued after the messages received before it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class CdcProducer:
    """One running CDC producer (see module contract). Use :func:`run`."""

    def __init__(self, cfg: SfsyncConfig, stop: threading.Event, *, start: str | None = None,
                 health: Health | None = None) -> None:
        if not cfg.objects:
            raise ValueError("no objects are mapped: nothing to subscribe to")
        self.cfg = cfg
        self.health = health or Health("salesforce-producer", checks=("broker", "salesforce"))
        self.stop = stop
        self.start = start or cfg.salesforce.cdc_start.value
        if self.start not in ("latest", "all"):
            raise ValueError("start must be latest or all")
        self.batch_events = cfg.salesforce.cdc_batch_events
        self.batch_ms = cfg.salesforce.cdc_batch_ms
        self.topics = TopicNames(cfg.kafka.topic_prefix)
        self.dlq = direction_dlq(self.topics, Direction.INBOUND)
        self.limit = message_limit(cfg.kafka)
        self.serde = Serde.from_config(cfg.kafka)
        self.rest = SalesforceClient(cfg.salesforce)
        self.channels = {channel_for(name): name for name in cfg.objects}
        self.types: dict[str, ObjectTypes] = {}
        #: parent paths (``Owner.Name``) of the envelopes: resolved here, see producers.salesforce.parents
        #: every REST call of the producer (describe, gap repair, catch-up, parent fields) waits for the budget
        self.calls = PacedCalls(self.rest, cfg.salesforce.api_budget_share, wait=True,
                                retry_s=cfg.salesforce.api_budget_retry_s)
        self._query = self.calls.wrap(self.rest.query_records)
        self._describe_object = self.calls.wrap(self.rest.describe)
        self.parents = ParentFields(cfg.objects, self._query, self._describe_object)
        self.committed: dict[str, OffsetRecord] = {}
        self.last_commit_ms: dict[str, int] = {}
        self.markers: dict[str, ReplayMarker] = {}
        self.batch = _Batch()
        self.producer: CheckedProducer | None = None
        self.events_produced = 0
        self.dead_lettered = 0
        self.transactions = 0
        #: channels with an open replay_gap alert, resolved by their next change event
        self.gaps_open: set[str] = set()
        self.down = DownWatch()

    # ------------------------------------------------------------------ setup
    def _open_kafka(self) -> None:
        self.producer = make_transactional_producer(self.cfg)
        self.producer.init_transactions(60)
        self.committed = read_offsets(self.cfg)
        for channel, rec in self.committed.items():
            self.last_commit_ms[channel] = rec.commit_ms
        log.info("resuming CDC from %s", {c: r.replay_id for c, r in self.committed.items()} or self.start)

    def _describe(self) -> None:
        for name in self.cfg.objects:
            doc = self._describe_object(name)
            self.types[name] = ObjectTypes.from_describe(doc)
            self.parents.learn(name, doc)

    def _reset_markers(self) -> None:
        """Resume the streaming client from what is committed (or the configured start)."""
        self.markers.clear()
        for channel in self.channels:
            stored = self.committed.get(channel)
            replay = start_replay_id(stored, self.start)
            date = str(stored.commit_ms) if stored else "0"
            self.markers[channel] = ReplayMarker(date=date, replay_id=replay)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        await asyncio.to_thread(self._open_kafka)
        self.health.mark("broker", True, "transactions initialised; stored positions read")
        await asyncio.to_thread(self._describe)
        backoff = Backoff(0.5, 30.0)
        try:
            while not self.stop.is_set():
                self.health.beat()
                self._reset_markers()
                client = make_streaming_client(self.cfg.salesforce, self.markers)
                try:
                    await client.open()
                    for channel in self.channels:
                        await self._subscribe(client, channel)
                    self._connection_up()
                    await self._flush()
                    self.health.mark("salesforce", True, f"subscribed to {len(self.channels)} channel(s)")
                    backoff.reset()
                    await self._consume(client)
                except AiosfstreamException as e:
                    self.health.mark("salesforce", False, f"streaming client failed: {type(e).__name__}")
                    self._connection_down(f"streaming client failed: {type(e).__name__}"
                                          + (f": {e}" if isinstance(e, StreamLost) else ""))
                    wait = backoff.next()
                    source = process_source()  # refused credentials? the role's config file may have new ones
                    if source is not None and source.changed() and source.renew(self.cfg, "salesforce"):
                        self.rest.drop_session()
                        wait = 0.0
                    log.warning("streaming client failed (%s: %s); reconnecting in %.1f s",
                                type(e).__name__, e, wait)
                    await self._flush()
                    await _sleep_unless(self.stop, wait)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(close_client(client), 5)
            await self._flush()
        finally:
            if self.producer is not None:
                with contextlib.suppress(Exception):
                    self.producer.flush(10)
            self.rest.close()

    def _connection_down(self, detail: str) -> None:
        if self.down.down(detail) is StreakEvent.ALERT:
            self.batch.alerts.append(Alert(
                kind=AlertKind.CONNECTION_DOWN, severity=AlertSeverity.CRITICAL,
                message=f"the Salesforce CDC producer cannot stream from Salesforce for "
                        f"{self.down.down_for():.0f} s ({detail}); it keeps reconnecting",
                details={"role": ROLE, "target": "salesforce", "direction": Direction.INBOUND.value,
                         "down_s": f"{self.down.down_for():.0f}", "cause": connection_cause(ROLE, "salesforce")}))

    def _connection_up(self) -> None:
        down_s = self.down.down_for()
        if self.down.up() is StreakEvent.RESOLVED:
            self.batch.alerts.append(resolved_alert(
                connection_cause(ROLE, "salesforce"), AlertKind.CONNECTION_DOWN,
                f"the Salesforce CDC producer streams again (after {down_s:.0f} s)",
                {"role": ROLE, "target": "salesforce", "direction": Direction.INBOUND.value}))

    async def _subscribe(self, client: Client, channel: str) -> None:
        replay = self.markers[channel].replay_id
        stored = self.committed.get(channel)
        try:
            await client.subscribe(channel)
        except ServerError as e:
            if not is_invalid_replay(e.error_code, replay):
                raise
            log.warning("replay id %s of %s is outside the retention window: catching up", replay, channel)
            self.markers[channel] = ReplayMarker(date="0", replay_id=-1)
            await client.subscribe(channel)
            await self._catch_up(channel, stored.commit_ms if stored else None,
                                 f"replay id {replay} of {channel} is outside the retention window")
            return
        if stored is not None and stored.replay_id == -1:
            # a catch-up was recorded but no event followed it: repeat it (idempotent snapshots)
            await self._catch_up(channel, stored.commit_ms, None, margin_ms=0)

    async def _consume(self, client: Client) -> None:
        queue: asyncio.Queue[dict[str, Any] | _ReaderError] = asyncio.Queue(maxsize=10_000)

        async def reader() -> None:
            try:
                while True:
                    await queue.put(await client.receive())
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # handed to the main loop after the messages before it
                await queue.put(_ReaderError(e))

        task = asyncio.create_task(reader())
        lost_since: float | None = None  # when the transport was first seen retrying a failed connect
        try:
            while not self.stop.is_set():
                self.health.beat()
                timeout = 0.2
                if self.batch.first_at is not None:
                    timeout = max(0.0, self.batch.first_at + self.batch_ms / 1000 - time.monotonic())
                item: dict[str, Any] | _ReaderError | None = None
                if not queue.empty():
                    item = queue.get_nowait()
                elif timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        item = await asyncio.wait_for(queue.get(), timeout)
                if isinstance(item, _ReaderError):
                    raise item.error
                if item is not None:
                    await self._handle(item)
                elif queue.empty() and stream_lost(transport_state(client)):
                    # one slow long-poll (a loaded machine) is retried by aiocometd itself: only a failure that
                    # lasts STREAM_LOST_GRACE_S makes a new client
                    lost_since = lost_since if lost_since is not None else time.monotonic()
                    if time.monotonic() - lost_since >= STREAM_LOST_GRACE_S:
                        # everything received is handled: flushed by the caller, then resubscribed from there
                        raise StreamLost("the CometD connection failed while streaming (aiocometd-ng's connect "
                                         f"request failed; it was retrying it for {STREAM_LOST_GRACE_S:.0f} s)")
                else:
                    lost_since = None
                if self.batch.first_at is not None and (
                    len(self.batch.events) >= self.batch_events
                    or time.monotonic() >= self.batch.first_at + self.batch_ms / 1000
                ):
                    await self._flush()
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ events
    async def _handle(self, message: dict[str, Any]) -> None:
        channel = str(message.get("channel", ""))
        try:
            ev = parse_event(message)
        except ValueError as e:
            self._malformed(channel, message, str(e))
            return
        sobject = self.channels.get(channel, ev.entity)
        if ev.change_type in OPERATIONS:
            if channel in self.gaps_open:  # the stream flows again after the catch-up
                self.gaps_open.discard(channel)
                self.batch.alerts.append(resolved_alert(
                    f"{AlertKind.REPLAY_GAP.value}:{channel}", AlertKind.REPLAY_GAP,
                    f"{channel} delivers change events again after the catch-up", {"channel": channel}, sobject))
            try:
                events = change_events(ev, self._types(sobject), self._external_id(sobject))
            except (ValueError, TypeError) as e:
                self._malformed(channel, message, f"its values make no change event: {e}", sobject)
            else:
                self._add(await self.parents.resolve(sobject, events), channel, message)
                for child, updates in await self.parents.children(sobject, channel, events):
                    self._add(updates, channel_for(child))
        elif ev.change_type in GAP_RECORD_TYPES:
            await self._repair_records(ev, sobject)
        elif ev.change_type == GAP_OVERFLOW:
            await self._catch_up(channel, self.last_commit_ms.get(channel), f"GAP_OVERFLOW on {sobject}",
                                 position=str(ev.replay_id), fallback_ms=ev.commit_ms)
        else:
            log.info("ignoring change type %s on %s", ev.change_type, channel)
        self._position(channel, ev.replay_id, ev.commit_ms)

    def _types(self, sobject: str) -> ObjectTypes:
        return self.types.get(sobject) or ObjectTypes(sobject)

    def _external_id(self, sobject: str) -> str | None:
        mapping = self.cfg.objects.get(sobject)
        return mapping.external_id_field if mapping else None

    def _add(self, events: list[ChangeEvent], channel: str, message: dict[str, Any] | None = None) -> None:
        """Queue the envelopes of one event (or repair); an envelope that can never be written goes to the
        batch's dead letters instead."""
        if self.batch.first_at is None:
            self.batch.first_at = time.monotonic()
        now = utcnow()
        for event in events:
            fate = prepare_envelope(event, self.serde, self.topics.changes_inbound, channel, self.limit)
            if isinstance(fate, Envelope):
                self.batch.events.append(_Channeled(fate, channel, self._queued(event, fate.key, now)))
            else:
                self._dead(envelope_dead_letter(fate, channel=channel, message=message, dlq=self.dlq,
                                                limit=self.limit))

    def _queued(self, event: ChangeEvent, key: str, now: datetime) -> tuple[str, bytes] | None:
        """The In Queue message of an envelope's record (module contract), encoded once."""
        status = queued_status(event, self.cfg.salesforce.call_options_client, now)
        if status is None:
            return None
        try:
            return queued_status_key(Direction.INBOUND, key), self.serde.encode(status, self.topics.status)
        except EncodeError as e:  # never seen: a status is a few strings; the change still goes out
            log.warning("In Queue state of %s not encodable: %s", key, e)
            return None

    def _malformed(self, channel: str, message: dict[str, Any], reason: str, sobject: str | None = None) -> None:
        """A message that makes no envelope: dead-lettered, and its replay id (when readable) is the
        channel's new position, in the same transaction."""
        letter = event_dead_letter(channel=channel, message=message, error_class="MalformedCdcEvent",
                                   reason=reason, dlq=self.dlq, limit=self.limit,
                                   sobject=sobject or self.channels.get(channel))
        self._dead(letter)
        replay_id = replay_id_of(message)
        if replay_id is not None and replay_id >= 0 and channel in self.channels:
            self._position(channel, replay_id, self.last_commit_ms.get(channel, 0))

    def _dead(self, letter: DeadLetter, batch: _Batch | None = None) -> None:
        """Add a dead letter to ``batch`` (the one being filled by default) with its alert, once per alert id."""
        if batch is None:
            batch = self.batch
        if batch.first_at is None:
            batch.first_at = time.monotonic()
        log.warning("dead letter to %s: %s", self.dlq, letter.alert.message)
        batch.dead.append(letter)
        if all(a.alert_id != letter.alert.alert_id for a in batch.alerts):
            batch.alerts.append(letter.alert)  # one alert per bad event (and error class)

    def _position(self, channel: str, replay_id: int, commit_ms: int) -> None:
        if self.batch.first_at is None:
            self.batch.first_at = time.monotonic()
        self.batch.offsets[channel] = OffsetRecord(channel, replay_id, commit_ms)
        if replay_id >= 0:
            self.last_commit_ms[channel] = max(commit_ms, self.last_commit_ms.get(channel, 0))

    async def _repair_records(self, ev: CdcEvent, sobject: str) -> None:
        types = self._types(sobject)
        fields = query_fields(types, self.cfg.objects.get(sobject))
        rows: list[dict[str, Any]] = []
        for ids in chunks(ev.record_ids):
            soql = record_query(sobject, fields, ids)
            rows += await asyncio.to_thread(self._query, soql, True)
        events = snapshot_events(sobject, rows, types, channel=ev.channel, position=str(ev.replay_id),
                                 fallback_ms=ev.commit_ms, external_id_field=self._external_id(sobject),
                                 requested_ids=ev.record_ids)
        self._add(await self.parents.resolve(sobject, events), ev.channel)

    async def _catch_up(self, channel: str, last_commit_ms: int | None, reason: str | None, *,
                        position: str | None = None, fallback_ms: int | None = None,
                        margin_ms: int | None = None) -> None:
        """Snapshot every record of the channel's object changed since ``last_commit_ms`` (- margin).

        Without ``position`` (an out-of-retention resubscribe) the channel's stored position becomes
        ``(-1, start of this catch-up)``.
        """
        sobject = self.channels[channel]
        now_ms = int(time.time() * 1000)
        kw = {} if margin_ms is None else {"margin_ms": margin_ms}
        since = catchup_since(last_commit_ms, fallback_ms if fallback_ms is not None else now_ms, **kw)
        types = self._types(sobject)
        soql = catchup_query(sobject, query_fields(types, self.cfg.objects.get(sobject)), since)
        rows = await asyncio.to_thread(self._query, soql, True)
        pos = position or f"catchup:{since.isoformat()}"
        events = snapshot_events(sobject, rows, types, channel=channel, position=pos,
                                 fallback_ms=fallback_ms or now_ms, external_id_field=self._external_id(sobject))
        events = await self.parents.resolve(sobject, events)
        self._add(events, channel)
        if position is None:
            self._position(channel, -1, int(since.timestamp() * 1000))
        if reason is not None:
            self.batch.alerts.append(Alert(
                kind=AlertKind.REPLAY_GAP,
                severity=AlertSeverity.WARNING,
                message=f"{reason}: re-read {len(events)} {sobject} record(s) changed since {since.isoformat()}",
                object=sobject,
                details={"channel": channel, "since": since.isoformat(), "records": str(len(events)),
                         "cause": f"{AlertKind.REPLAY_GAP.value}:{channel}"},
            ))
            self.gaps_open.add(channel)
        log.warning("catch-up on %s since %s: %d record(s)", sobject, since.isoformat(), len(events))

    # ------------------------------------------------------------------ Kafka
    async def _flush(self) -> None:
        if len(self.batch) == 0:
            self.batch.first_at = None
            return
        batch, self.batch = self.batch, _Batch()
        await asyncio.to_thread(self._commit, batch)

    def _commit(self, batch: _Batch) -> None:
        """Write one batch in one transaction (envelopes, dead letters, alerts, positions) or raise after aborting.

        When the broker refuses messages for their size (a limit lower than the client's), the transaction is
        aborted and written again with those envelopes dead-lettered (and refused dead letters lean), at most
        ``MAX_WRITES`` times in all.
        """
        for _ in range(MAX_WRITES):
            refused = self._write(batch)
            if refused is None:
                self.committed.update(batch.offsets)
                self.events_produced += len(batch.events)
                self.dead_lettered += len(batch.dead)
                self.transactions += 1
                return
            self._refuse(batch, *refused)
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                        f"the broker kept refusing messages for their size after {MAX_WRITES} "
                                        "transactions"))

    def _write(self, batch: _Batch) -> tuple[set[int], set[int]] | None:
        """One transaction of the batch: ``None`` once committed; after an abort caused by the broker refusing
        messages for their size, the indexes of those envelopes and dead letters; any other failure raises."""
        producer = self.producer
        assert producer is not None
        too_big: tuple[set[int], set[int]] = (set(), set())

        def answered(kind: int, i: int, err: KafkaError | None, _msg: Message) -> None:
            if is_size_error(err):
                too_big[kind].add(i)

        producer.begin_transaction()
        try:
            kept: list[_Channeled] = []
            for item in batch.events:
                env = item.envelope
                try:
                    producer.produce(self.topics.changes_inbound, env.value, key=env.key,
                                     on_delivery=partial(answered, 0, len(kept)))
                except KafkaException as e:  # the client's exact size check (record overhead included)
                    if not (e.args and isinstance(e.args[0], KafkaError) and is_size_error(e.args[0])):
                        raise
                    self._dead(envelope_dead_letter(
                        refuse_envelope_for_size(env, item.channel, message_size(env.key, env.value), self.limit),
                        channel=item.channel, message=None, dlq=self.dlq, limit=self.limit), batch)
                    continue
                kept.append(item)
            batch.events = kept
            # one In Queue per record (the last wins on the compacted topic anyway), on the raw client: no
            # poll per message, the commit waits for them
            queued = dict(item.queued for item in kept if item.queued is not None)
            for key, value in queued.items():
                producer.queue(self.topics.status, value, key)  # the commit fails if one does
            for i, letter in enumerate(batch.dead):
                producer.produce(letter.topic, letter.value, key=letter.key, headers=list(letter.headers),
                                 on_delivery=partial(answered, 1, i))
            for alert in batch.alerts:
                producer.produce(self.topics.alerts, self.serde.encode(alert, self.topics.alerts),
                                 key=alert.object or alert.kind.value)
            # Everything else is delivered before the positions are produced. On Apache Kafka the transaction
            # alone makes the two atomic; the embedded broker shows an aborted transaction's records to
            # read_committed readers (docs/kafka.md), so a producer killed after its position record reached the
            # broker and before its events did resumed past events it never wrote: lost (the kill test, seed
            # 2781213225). Delivered first, a kill at any point leaves at worst events without their position:
            # read again after the restart, and taken for redeliveries by the processor.
            producer.flush(60)  # raises on a failed delivery (a size refusal too) or a timeout: aborted below
            for channel, rec in batch.offsets.items():
                producer.produce(self.topics.offsets, rec.encode(), key=offset_key(channel))
            producer.commit_transaction(60)
            producer.raise_failures()
        except BaseException as e:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(30)
            with contextlib.suppress(KafkaException):
                producer.poll(0)  # serve the delivery reports still queued (they say which were too large)
            if isinstance(e, KafkaException | DeliveryError) and (too_big[0] or too_big[1]):
                with contextlib.suppress(DeliveryError):
                    producer.raise_failures()
                return too_big
            raise
        return None

    def _refuse(self, batch: _Batch, envelopes: set[int], letters: set[int]) -> None:
        """Dead-letter the envelopes the broker refused for their size; refused dead letters become lean."""
        dead: list[DeadLetter] = []
        for i, letter in enumerate(batch.dead):
            if i not in letters:
                dead.append(letter)
            elif letter.lean is not None:
                dead.append(letter.lean)
            else:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                                f"the broker refused a {len(letter.value)}-byte dead letter for "
                                                f"its size: {letter.alert.message}"))
        batch.dead = dead
        kept: list[_Channeled] = []
        for i, item in enumerate(batch.events):
            if i not in envelopes:
                kept.append(item)
                continue
            env = item.envelope
            self._dead(envelope_dead_letter(
                refuse_envelope_for_size(env, item.channel, message_size(env.key, env.value), None),
                channel=item.channel, message=None, dlq=self.dlq, limit=self.limit), batch)
        batch.events = kept


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(min(0.1, deadline - time.monotonic()))


def run(cfg: SfsyncConfig, stop: threading.Event | None = None, *, start: str | None = None,
        health: Health | None = None) -> None:
    """Run the CDC producer until ``stop`` is set (forever without one). Raises on Kafka failures
    (a restart resumes from the committed positions) and when no object is mapped."""
    producer = CdcProducer(cfg, stop or threading.Event(), start=start, health=health)
    eventloop.run(producer.run())
