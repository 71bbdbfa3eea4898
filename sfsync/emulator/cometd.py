"""Change Data Capture bus and the CometD (Bayeux long-polling) endpoint with the replay extension.

Contract:
- Every committed transaction becomes one CDC event per change, in commit order, sharing one
  ``transactionKey`` with ``sequenceNumber`` 1..n. Replay ids come from one increasing counter and are
  never reused (not even after a reset); each event is visible on ``/data/ChangeEvents`` and on its
  object's channel (``/data/AccountChangeEvent``).
- Retention: an event older than ``retention_seconds`` (or beyond ``max_events``) is dropped. A subscribe
  with replay id N is valid when no dropped event has an id greater than N and N is not in the
  future; it then delivers exactly the retained events with id > N. -1 delivers only new events, -2
  every retained event. An invalid N is refused with Salesforce's ``400::The replayId {N} you provided
  was invalid...`` error.
- ``/meta/connect`` answers at once the first time, then holds until events are pending, the client
  disconnects, or ``connect_timeout_ms`` passes; it always answers with JSON, with advice
  ``{"reconnect": "retry", "interval": 0, "timeout": connect_timeout_ms}``. Only ``long-polling`` is
  advertised.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sfsync.emulator.schema import Schema
from sfsync.emulator.store import Change, Transaction

ALL_CHANGES = "/data/ChangeEvents"
GAP_TYPES = frozenset({"GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"})
MAX_EVENTS_PER_RESPONSE = 1000


@dataclass
class StoredEvent:
    """One retained CDC event."""

    replay_id: int
    channel: str
    commit_ms: int
    data: dict[str, Any]


@dataclass
class CometClient:
    """Server-side state of one Bayeux client."""

    client_id: str
    subscriptions: set[str] = field(default_factory=set)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    connected: bool = False
    closed: bool = False
    last_seen: float = field(default_factory=time.monotonic)


class EventBus:
    """The CDC event log (with retention) and fan-out to CometD clients."""

    def __init__(self, schema: Schema, retention_seconds: float = 72 * 3600, max_events: int = 1_000_000,
                 on_emit: Callable[[int], None] | None = None) -> None:
        self.schema = schema
        self.channels = schema.channels()
        self.retention_seconds = retention_seconds
        self.max_events = max_events
        self.on_emit = on_emit
        self.events: deque[StoredEvent] = deque()
        self.last_replay_id = 0
        self.dropped_upto = 0
        self.commit_number = 10_000_000
        self.clients: dict[str, CometClient] = {}

    # ------------------------------------------------------------------ producing
    def reset(self) -> None:
        """Drop every retained event (as if aged out) and every client subscription."""
        self.events.clear()
        self.dropped_upto = self.last_replay_id
        for client in self.clients.values():
            client.queue.clear()

    def publish(self, tx: Transaction) -> None:
        """Turn a committed transaction into CDC events (store commit callback)."""
        key = str(uuid.uuid4())
        commit_ms = int(time.time() * 1000)
        self.commit_number += 1
        origin = tx.ctx.origin
        for seq, change in enumerate(tx.changes, start=1):
            self.emit(change, key, seq, commit_ms, origin, tx.ctx.user_id)

    def emit(self, change: Change, transaction_key: str, sequence: int, commit_ms: int, origin: str,
             user_id: str) -> StoredEvent:
        """Append one event to the log and deliver it to subscribed clients."""
        obj = self.schema.objects[change.entity]
        header = {
            "entityName": change.entity,
            "recordIds": list(change.record_ids),
            "changeType": change.change_type,
            "changeOrigin": origin,
            "transactionKey": transaction_key,
            "sequenceNumber": sequence,
            "commitTimestamp": commit_ms,
            "commitNumber": self.commit_number,
            "commitUser": user_id,
            "changedFields": list(change.changed_fields),
            "diffFields": [],
            "nulledFields": list(change.nulled_fields),
        }
        payload = {"ChangeEventHeader": header, **change.payload}
        return self._append(obj.channel, commit_ms, payload, obj.event_schema_id)

    def emit_raw(self, channel: str, payload: Any) -> StoredEvent:
        """Append an event whose payload is taken as given, unchecked (to test how subscribers handle a
        malformed or unexpected event). ``channel`` must be an object's channel."""
        if channel not in self.channels:
            raise ValueError(f"unknown channel {channel!r}")
        header = payload.get("ChangeEventHeader") if isinstance(payload, dict) else None
        stamp = header.get("commitTimestamp") if isinstance(header, dict) else None
        commit_ms = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else int(time.time() * 1000)
        return self._append(channel, commit_ms, payload, "raw")

    def _append(self, channel: str, commit_ms: int, payload: Any, schema_id: str) -> StoredEvent:
        self.last_replay_id += 1
        event = StoredEvent(
            replay_id=self.last_replay_id,
            channel=channel,
            commit_ms=commit_ms,
            data={"schema": schema_id, "payload": payload, "event": {"replayId": self.last_replay_id}},
        )
        self.events.append(event)
        self.prune()
        for client in self.clients.values():
            delivered = False
            for sub in (ALL_CHANGES, event.channel):
                if sub in client.subscriptions:
                    client.queue.append({"channel": sub, "data": event.data})
                    delivered = True
            if delivered:
                client.wakeup.set()
        if self.on_emit:
            self.on_emit(1)
        return event

    def emit_gap(self, entity: str, change_type: str, record_ids: list[str], user_id: str) -> StoredEvent:
        """Emit a header-only gap event (GAP_* with record ids, GAP_OVERFLOW with none)."""
        self.commit_number += 1
        ids = [] if change_type == "GAP_OVERFLOW" else record_ids
        return self.emit(Change(change_type, entity, ids), str(uuid.uuid4()), 1, int(time.time() * 1000), "",
                         user_id)

    def prune(self) -> None:
        """Drop events beyond retention (age or count)."""
        horizon = int((time.time() - self.retention_seconds) * 1000)
        while self.events and (self.events[0].commit_ms < horizon or len(self.events) > self.max_events):
            self.dropped_upto = self.events.popleft().replay_id

    def truncate(self, upto: int) -> int:
        """Drop retained events with replay id <= ``upto`` as if they aged out; returns how many."""
        count = 0
        while self.events and self.events[0].replay_id <= upto:
            self.dropped_upto = self.events.popleft().replay_id
            count += 1
        self.dropped_upto = max(self.dropped_upto, min(upto, self.last_replay_id))
        return count

    # ------------------------------------------------------------------ replay
    def replay_valid(self, replay_id: int) -> bool:
        """True when every event after ``replay_id`` is still retained (see module contract)."""
        self.prune()
        if replay_id in (-1, -2):
            return True
        return self.dropped_upto <= replay_id <= self.last_replay_id

    def backlog(self, channel: str, replay_id: int) -> list[dict[str, Any]]:
        """Retained events of ``channel`` after ``replay_id`` (-2: all retained, -1: none)."""
        if replay_id == -1:
            return []
        after = -1 if replay_id == -2 else replay_id
        return [
            {"channel": channel, "data": ev.data}
            for ev in self.events
            if ev.replay_id > after and (channel == ALL_CHANGES or ev.channel == channel)
        ]

    def valid_channel(self, channel: str) -> bool:
        """True for /data/ChangeEvents and each object's change event channel."""
        return channel == ALL_CHANGES or channel in self.channels

    def release_all(self) -> None:
        """Wake every waiting long poll (server shutdown)."""
        for client in self.clients.values():
            client.closed = True
            client.wakeup.set()


class CometdEndpoint:
    """The Bayeux protocol over one POST: a list of messages in, a list of replies (and events) out."""

    def __init__(self, bus: EventBus, connect_timeout_ms: Callable[[], int],
                 client_ttl_seconds: float = 40.0) -> None:
        self.bus = bus
        self.connect_timeout_ms = connect_timeout_ms
        self.client_ttl_seconds = client_ttl_seconds

    def _advice(self) -> dict[str, Any]:
        return {"reconnect": "retry", "interval": 0, "timeout": self.connect_timeout_ms()}

    def auth_failure(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replies for a request whose bearer token is missing, invalid or expired."""
        return [
            {"channel": msg.get("channel"), "id": msg.get("id"), "successful": False,
             "error": "401::Authentication invalid", "advice": {"reconnect": "handshake", "interval": 0}}
            for msg in messages
        ]

    async def handle(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Process one request's messages in order; a connect is answered last (it may wait)."""
        self._expire_idle()
        replies: list[dict[str, Any]] = []
        connect: dict[str, Any] | None = None
        for msg in messages:
            channel = msg.get("channel")
            if channel == "/meta/connect":
                connect = msg
                continue
            handler = {
                "/meta/handshake": self._handshake,
                "/meta/subscribe": self._subscribe,
                "/meta/unsubscribe": self._unsubscribe,
                "/meta/disconnect": self._disconnect,
            }.get(str(channel), self._publish)
            replies.append(handler(msg))
        if connect is not None:
            events, reply = await self._connect(connect)
            return events + replies + [reply]
        return replies

    def _client(self, msg: dict[str, Any]) -> CometClient | None:
        client = self.bus.clients.get(str(msg.get("clientId")))
        if client is not None:
            client.last_seen = time.monotonic()
        return client

    @staticmethod
    def _unknown(msg: dict[str, Any]) -> dict[str, Any]:
        return {"channel": msg.get("channel"), "id": msg.get("id"), "successful": False,
                "error": "403::Unknown client", "advice": {"reconnect": "handshake", "interval": 0}}

    def _handshake(self, msg: dict[str, Any]) -> dict[str, Any]:
        client = CometClient(client_id=secrets.token_urlsafe(18))
        self.bus.clients[client.client_id] = client
        return {"channel": "/meta/handshake", "id": msg.get("id"), "version": "1.0", "minimumVersion": "1.0",
                "successful": True, "clientId": client.client_id, "supportedConnectionTypes": ["long-polling"],
                "ext": {"replay": True, "payload.format": True}, "advice": self._advice()}

    def _subscribe(self, msg: dict[str, Any]) -> dict[str, Any]:
        client = self._client(msg)
        if client is None:
            return self._unknown(msg)
        channel = str(msg.get("subscription"))
        base = {"channel": "/meta/subscribe", "id": msg.get("id"), "clientId": client.client_id,
                "subscription": channel}
        if not self.bus.valid_channel(channel):
            return {**base, "successful": False, "error": f"404::Unknown channel {channel}"}
        replay = ((msg.get("ext") or {}).get("replay") or {}).get(channel, -1)
        if isinstance(replay, bool) or not isinstance(replay, int) or not self.bus.replay_valid(replay):
            return {**base, "successful": False,
                    "error": f"400::The replayId {{{replay}}} you provided was invalid.  Please provide a valid ID, "
                             "-2 to replay all events, or -1 to replay only new events."}
        client.queue.extend(self.bus.backlog(channel, replay))
        client.subscriptions.add(channel)
        if client.queue:
            client.wakeup.set()
        return {**base, "successful": True}

    def _unsubscribe(self, msg: dict[str, Any]) -> dict[str, Any]:
        client = self._client(msg)
        if client is None:
            return self._unknown(msg)
        channel = str(msg.get("subscription"))
        client.subscriptions.discard(channel)
        client.queue = deque(m for m in client.queue if m["channel"] != channel)
        return {"channel": "/meta/unsubscribe", "id": msg.get("id"), "clientId": client.client_id,
                "subscription": channel, "successful": True}

    def _disconnect(self, msg: dict[str, Any]) -> dict[str, Any]:
        client = self.bus.clients.pop(str(msg.get("clientId")), None)
        if client is not None:
            client.closed = True
            client.wakeup.set()
        return {"channel": "/meta/disconnect", "id": msg.get("id"), "successful": True}

    def _publish(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"channel": msg.get("channel"), "id": msg.get("id"), "successful": False,
                "error": "403::Publish is not supported on this channel"}

    async def _connect(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        client = self._client(msg)
        if client is None:
            return [], self._unknown(msg)
        reply = {"channel": "/meta/connect", "id": msg.get("id"), "clientId": client.client_id,
                 "successful": True, "advice": self._advice()}
        if not client.connected:
            client.connected = True
            return self._drain(client), reply
        if not client.queue and not client.closed:
            client.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.wakeup.wait(), self.connect_timeout_ms() / 1000)
        client.last_seen = time.monotonic()
        return self._drain(client), reply

    @staticmethod
    def _drain(client: CometClient) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while client.queue and len(out) < MAX_EVENTS_PER_RESPONSE:
            out.append(client.queue.popleft())
        if not client.queue:
            client.wakeup.clear()
        return out

    def _expire_idle(self) -> None:
        limit = time.monotonic() - self.client_ttl_seconds - self.connect_timeout_ms() / 1000
        for client_id in [cid for cid, c in self.bus.clients.items() if c.last_seen < limit]:
            self.bus.clients.pop(client_id).closed = True
