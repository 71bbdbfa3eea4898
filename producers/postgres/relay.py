"""The outbox relay (``sfsync run postgres-producer``): outbox rows -> ``<prefix>.changes.outbound``.

Contract:

- **One active relay per outbox.** The relay holds a session-level advisory
  lock (``pg_try_advisory_lock(hashtextextended('sfsync.relay:<schema>.<outbox>', 0))``)
  on the connection it reads and deletes with. Other replicas are hot
  standbys: they retry the lock every ``standby_check_s`` and take over as
  soon as the active relay's session ends (process killed, connection
  terminated, host gone).
- **The lock is confirmed before every send.** Before it produces a batch (and
  each retry of it, and its dead letters) the relay checks in ``pg_locks`` that
  its own session still holds the lock, and again every ``lock_check_s`` while
  it waits for the broker's acks. A relay whose session is gone (the check
  fails) or whose lock is gone (the check answers no) stops being active at
  once: it purges what its producer still holds, sends nothing more, and goes
  back to standby. So after a standby took over, the old relay does not keep
  retrying its batch; a message already handed to the broker before the check
  may still land, as a duplicate with the same event id.
- **Deterministic event ids.** A row's event id is a UUIDv5 of the outbox's
  identity (database, table, table oid) and the outbox id
  (:func:`~producers.postgres.convert.outbox_event_id`): however often, by
  whichever relay, a row is sent, it is the same change to the processor.
  Each message carries the header ``sfsync.relay.session``
  (``host:pid:backend pid``) of the relay that sent it.
- **At-least-once, in order.** Rows are read in id order in batches; each
  batch is produced with the idempotent producer and flushed; only after the
  broker acknowledged every message of the batch are those rows deleted by id
  (or moved to the archive table). Kill -9 at any moment: rows not yet deleted
  are sent again on restart (duplicates possible, loss not). A failed delivery
  deletes nothing: the batch is sent again after a backoff, with a fresh producer.
- **A bad row does not block the outbox.** A row that can never be sent (no
  record key, not convertible, not encodable, larger than the message limit —
  the client's ``message.max.bytes`` or the broker's) goes to
  ``<prefix>.dlq.salesforce`` (:mod:`producers.deadletters`) with one alert on
  ``<prefix>.alerts``; the rest of its batch and everything behind it flows.
  Its row is deleted like the others, only after the dead letter and the
  alert were acknowledged.
- **Wake-ups.** The relay LISTENs on the outbox channel (the trigger's
  ``pg_notify``) and also polls every ``poll_interval_s``, so a missed
  notification costs at most one poll interval.
- Rows are deleted by explicit id, never by range: a row of a transaction
  that commits late (lower id, visible later) is sent when it appears.
- **In Queue.** With each change it sends, the relay writes the record's
  In Queue state (:func:`~producers.postgres.convert.queued_status`) to
  ``<prefix>.status`` under ``queued:outbound:<record key>``, produced with the
  batch and acknowledged with it (one message per record and batch, its
  ``updated_ts`` taken once per batch, before the first send: a resend of the
  batch carries the same time, older than the outcome a sink may have written
  meanwhile). Best effort: a status the broker refuses is logged, never a
  reason to resend changes. A change the broker refuses for its size goes to
  the DLQ, and its record's In Queue is removed again (a tombstone with the
  dead letter) unless another change of the record in the batch went out.
  sfsync's own local writes are never captured, so nothing here is an echo.
- **Refused credentials** (SQLSTATE class 28 at connect): one ``credential_failure`` alert per outage
  (cause ``credential_failure:postgres-producer:postgres``), ``postgres.dsn`` re-read from the role's
  config file (:mod:`sfsync.config.credentials`) and tried at once when it changed, else again after the
  backoff or as soon as the file changes; the first connection that works resolves the alert.
- **PostgreSQL unreachable** (:func:`connection_failure`: no answer at connect, or the session lost mid-run)
  for longer than a minute (``RelaySettings.down_after_s``): one ``connection_down`` alert (cause
  ``connection_down:postgres-producer:postgres``), "resolved" at the first connection that works again (the
  server answering, a standby or refused credentials included: the outage is over). A shorter outage says
  nothing (:class:`sfsync.operations.alerts.DownWatch`). An alert the broker did not take is raised again
  at the next failed attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from producers.deadletters import DeadLetter, direction_dlq, is_size_error, message_limit, message_size
from producers.postgres.convert import (
    OutboxRow,
    Prepared,
    Refused,
    TableIndex,
    outbox_source,
    prepare_row,
    queued_status,
    refuse_for_size,
    row_dead_letter,
    row_from_db,
)
from sfsync.backoff import Backoff
from sfsync.config import SfsyncConfig
from sfsync.config.credentials import postgres_credentials_refused, process_source
from sfsync.database.connect import connect
from sfsync.database.schema import archive_table_name, notify_channel, relay_lock_name
from sfsync.health import Health
from sfsync.kafka.clients import CheckedProducer, DeliveryError, FlushTimeout, make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.operations.alerts import DOWN_AFTER, DownWatch, StreakEvent, connection_cause, resolved_alert
from sfsync.records import Alert, AlertKind, AlertSeverity, Direction, queued_status_key, utcnow
from sfsync.serde import EncodeError, Serde
from sfsync.signals import stop_on_signals

log = logging.getLogger("sfsync.relay")

APPLICATION_NAME = "sfsync-postgres-relay"
ROLE = "postgres-producer"
#: the cause of "PostgreSQL refused the relay's login"
CREDENTIAL_CAUSE = f"{AlertKind.CREDENTIAL_FAILURE.value}:{ROLE}:postgres"
#: the cause of "the relay cannot reach PostgreSQL"
DOWN_CAUSE = connection_cause(ROLE, "postgres")
#: SQLSTATEs of a server that is there but takes no session: connection exceptions (class 08), shutting down
#: or starting up (57P01-57P03), too many connections (53300)
_UNREACHABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
#: Header naming the relay session that sent a message (``host:pid:backend pid``).
H_SESSION = "sfsync.relay.session"
_COLUMNS = ("id, table_name, local_key, operation, changed_columns, new_values, txid, committed_at, origin, "
            "seen_versions")
#: Does this session hold the relay's advisory lock? (A bigint key is held as classid = high 32 bits,
#: objid = low 32 bits, objsubid = 1.)
_HOLDS_LOCK = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted "
    "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0))"
)
_OUTBOX_IDENTITY = (
    "SELECT current_database(), c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)


def connection_failure(sqlstate: str | None, lost: bool) -> bool:
    """Whether a database error means "PostgreSQL cannot be reached" (the ``connection_down`` watch), from its
    SQLSTATE and whether it is a connection-level error (``psycopg.OperationalError``/``InterfaceError``): no
    SQLSTATE on such an error (refused, timed out, closed by the server's end), class 08, a server shutting
    down or starting up, or full. Not: refused credentials (their own alert), statement errors."""
    if sqlstate is None:
        return lost
    return sqlstate.startswith("08") or sqlstate in _UNREACHABLE_STATES


class LockLost(Exception):
    """The relay's session no longer holds the advisory lock: it must stop being active."""


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    key: str | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    """The broker's (or, ``local``, the client's) answer for one message; ``error`` ``None``: acknowledged."""

    error: KafkaError | None
    local: bool = False


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Tuning of the relay. :meth:`from_config` reads ``postgres.relay_*`` keys when the config has them."""

    batch_size: int = 1000
    poll_interval_s: float = 1.0
    standby_check_s: float = 0.5
    archive: bool = False
    archive_retention_s: float = 7 * 24 * 3600.0
    prune_every_s: float = 300.0
    flush_timeout_s: float = 30.0
    backoff_s: float = 0.5
    max_backoff_s: float = 15.0
    lock_check_s: float = 1.0
    #: how long PostgreSQL may be unreachable before the ``connection_down`` alert
    down_after_s: float = DOWN_AFTER

    @classmethod
    def from_config(cls, cfg: SfsyncConfig) -> RelaySettings:
        pg = cfg.postgres
        return cls(
            batch_size=pg.relay_batch_size,
            poll_interval_s=pg.relay_poll_interval_s,
            archive=pg.outbox_archive,
            archive_retention_s=pg.outbox_archive_retention_s,
        )


@dataclass
class RelayStatus:
    """What the relay is doing, for tests and health checks (updated by the relay thread)."""

    state: str = "starting"  # starting | standby | active | stopped
    backend_pid: int | None = None
    session: str | None = None  # host:pid:backend pid, the H_SESSION header of what this relay sends
    relayed: int = 0
    dead_lettered: int = 0
    #: In Queue states the broker did not take (best effort: logged, not resent)
    queued_lost: int = 0
    batches: int = 0
    takeovers: int = 0
    lock_losses: int = 0
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class OutboxRelay:
    """The relay loop; :meth:`run` returns when ``stop`` is set (after finishing the batch in hand)."""

    def __init__(self, cfg: SfsyncConfig, settings: RelaySettings | None = None, health: Health | None = None) -> None:
        self.cfg = cfg
        self.health = health or Health("postgres-producer", checks=("postgres", "broker"))
        self.settings = settings or RelaySettings.from_config(cfg)
        self.status = RelayStatus()
        names = TopicNames(cfg.kafka.topic_prefix)
        self.topic = names.changes_outbound
        self.dlq = direction_dlq(names, Direction.OUTBOUND)
        self.alerts = names.alerts
        self.status_topic = names.status
        self.limit = message_limit(cfg.kafka)
        self.index = TableIndex.from_config(cfg)
        self.serde = Serde.from_config(cfg.kafka)
        self._producer: CheckedProducer | None = None
        self._last_prune = 0.0
        self._unmapped_seen: set[str] = set()
        schema = cfg.postgres.schema_name
        self._outbox = sql.Identifier(schema, cfg.postgres.outbox_table)
        self._outbox_name = f"{schema}.{cfg.postgres.outbox_table}"
        self._archive = sql.Identifier(schema, archive_table_name(cfg.postgres.outbox_table))
        self._lock_name = relay_lock_name(cfg)
        self._source = ""
        #: where renewed credentials come from (the role's config file); None: never renewed
        self.credentials = process_source()
        self._credential_alert: str | None = None  # the open credential_failure alert's message
        self.down = DownWatch(self.settings.down_after_s)

    # ----------------------------------------------------------------- lifecycle

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; survives database and broker outages (retrying with backoff)."""
        backoff = Backoff(self.settings.backoff_s, self.settings.max_backoff_s)
        try:
            while not stop.is_set():
                try:
                    with connect(self.cfg, APPLICATION_NAME, autocommit=True) as conn:
                        self._reachable()
                        self._credentials_accepted()
                        set_json_loads(partial(json.loads, parse_float=Decimal), conn)
                        self.status.backend_pid = conn.info.backend_pid
                        self.status.session = f"{socket.gethostname()}:{os.getpid()}:{conn.info.backend_pid}"
                        if not self._acquire(conn, stop):
                            break
                        self._source = self._identify(conn)
                        self.status.state = "active"
                        self.status.takeovers += 1
                        log.info("relay active (backend %s)", conn.info.backend_pid)
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self.cfg))))
                        self.health.mark("postgres", True, "active: listening for outbox rows")
                        self._check_broker()
                        backoff.reset()
                        self._pump(conn, stop)
                except LockLost as e:
                    self._error(f"relay lock lost: {e}: no longer active, back to standby")
                    self.status.lock_losses += 1
                    self.status.state = "standby"
                    self._drop_producer()  # nothing it still holds may go out after the new relay's sends
                    stop.wait(self.settings.standby_check_s)
                except psycopg.Error as e:
                    self._error(f"database: {type(e).__name__}: {e}".strip())
                    self.health.mark("postgres", False, f"database: {type(e).__name__}")
                    self.status.state = "standby"
                    self._drop_producer()  # the session (and with it the lock) may be gone: send nothing more
                    if not postgres_credentials_refused(e.sqlstate, str(e)):
                        lost = isinstance(e, psycopg.OperationalError | psycopg.InterfaceError)
                        if connection_failure(e.sqlstate, lost):
                            self._unreachable(f"{type(e).__name__}: {e}".strip())
                        stop.wait(backoff.next())
                        continue
                    self._reachable()  # the server answered: it refuses the login (its own alert)
                    self._credentials_refused(str(e))
                    source = self.credentials
                    if source is not None and source.renew(self.cfg, "postgres"):
                        continue  # at once, with the renewed credentials
                    deadline = time.monotonic() + backoff.next()
                    while not stop.wait(0.2) and time.monotonic() < deadline:
                        self.health.beat()
                        if source is not None and source.changed():
                            break
        finally:
            self.status.state = "stopped"
            if self._producer is not None:
                self._drop_producer()

    def _unreachable(self, detail: str) -> None:
        """A failed attempt to reach PostgreSQL; raises the alert once the outage is older than the limit."""
        if self.down.down(detail) is not StreakEvent.ALERT:
            return
        down_s = self.down.down_for()
        if not self._send_alert(Alert(
                kind=AlertKind.CONNECTION_DOWN, severity=AlertSeverity.CRITICAL,
                message=f"the outbox relay cannot reach PostgreSQL for {down_s:.0f} s ({detail[:300]}); "
                        "it keeps reconnecting",
                details={"role": ROLE, "target": "postgres", "direction": Direction.OUTBOUND.value,
                         "down_s": f"{down_s:.0f}", "cause": DOWN_CAUSE})):
            self.down.alerted = False  # not delivered: raised again at the next failed attempt

    def _reachable(self) -> None:
        """PostgreSQL answered; resolves an alerted outage (a resolution the broker did not take is sent again
        from the relay's loops while connected)."""
        down_s = self.down.down_for()
        if self.down.up() is not StreakEvent.RESOLVED:
            return
        message = "the outbox relay reaches PostgreSQL again" + (f" (after {down_s:.0f} s)" if down_s else "")
        if not self._send_alert(resolved_alert(DOWN_CAUSE, AlertKind.CONNECTION_DOWN, message, {
                "role": ROLE, "target": "postgres", "direction": Direction.OUTBOUND.value})):
            self.down.alerted = True  # still to resolve

    def _credentials_refused(self, detail: str) -> None:
        """One alert per outage (module contract)."""
        if self._credential_alert is not None:
            return
        message = f"{ROLE} paused: PostgreSQL refused sfsync's credentials: {detail}".strip()
        if self._send_alert(Alert(kind=AlertKind.CREDENTIAL_FAILURE, severity=AlertSeverity.CRITICAL,
                                  message=message, details={"role": ROLE, "cause": CREDENTIAL_CAUSE})):
            self._credential_alert = message

    def _credentials_accepted(self) -> None:
        if self._credential_alert is None:
            return
        if self._send_alert(resolved_alert(CREDENTIAL_CAUSE, AlertKind.CREDENTIAL_FAILURE,
                                           f"{ROLE} connects again (was: {self._credential_alert})",
                                           {"role": ROLE})):
            self._credential_alert = None

    def _send_alert(self, alert: Alert) -> bool:
        """Produce one alert and wait for its ack; False (logged) when the broker did not take it."""
        try:
            producer = self._producer_()
            producer.produce(self.alerts, self.serde.encode(alert, self.alerts), key=alert.kind.value)
            producer.flush(10)
        except (FlushTimeout, DeliveryError, KafkaException, BufferError) as e:
            log.warning("alert %s not delivered: %s", alert.kind.value, e)
            return False
        return True

    def _acquire(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        """Take the relay lock, waiting as a standby; False when stopped before getting it."""
        name = relay_lock_name(self.cfg)
        announced = False
        while not stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)).fetchone()
            if row is not None and row[0]:
                return True
            if not announced:
                log.info("another relay holds the lock: standing by")
                announced = True
                # a hot standby is healthy and ready: it takes over the moment the active relay goes
                self.health.mark("postgres", True, "standby: another relay holds the lock")
                self._check_broker()
            self.health.beat()
            if self.down.alerted:  # connected, its resolution not delivered yet
                self._reachable()
            self.status.state = "standby"
            stop.wait(self.settings.standby_check_s)
        return False

    def _identify(self, conn: psycopg.Connection) -> str:
        """The outbox's identity (:func:`~producers.postgres.convert.outbox_source`) event ids derive from."""
        schema, table = self.cfg.postgres.schema_name, self.cfg.postgres.outbox_table
        row = conn.execute(_OUTBOX_IDENTITY, (schema, table)).fetchone()
        database, oid = (str(row[0]), int(row[1])) if row is not None else (str(conn.info.dbname), 0)
        return outbox_source(database, schema, table, oid)

    def _confirm_lock(self, conn: psycopg.Connection) -> None:
        """Raise :class:`LockLost` unless this session still holds the relay lock (a dead session raises
        its ``psycopg`` error): called before anything is sent."""
        row = conn.execute(_HOLDS_LOCK, (self._lock_name,)).fetchone()
        if row is None or not row[0]:
            raise LockLost(f"session {conn.info.backend_pid} no longer holds the advisory lock of {self._outbox_name}")

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.status.last_error = message
        self.status.errors.append(message)
        del self.status.errors[:-20]

    # ----------------------------------------------------------------- the loop

    def _check_broker(self) -> None:
        try:
            self._producer_().list_topics(self.topic, timeout=10)
        except KafkaException as e:
            self.health.mark("broker", False, f"metadata request failed: {e.args[0] if e.args else e}")
            return
        self.health.mark("broker", True, "reachable")

    def _pump(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        while not stop.is_set():
            self.health.beat()
            if self.down.alerted:  # connected, its resolution not delivered yet
                self._reachable()
            rows = self._fetch(conn)
            if rows:
                if not self._send(conn, rows, stop):
                    return  # stopped before the broker acknowledged: the rows stay for the next run
                self._remove(conn, [r.id for r in rows])
                self.status.batches += 1
                if len(rows) >= self.settings.batch_size:
                    continue
            self._maybe_prune(conn)
            for _ in conn.notifies(timeout=self.settings.poll_interval_s, stop_after=1):
                pass

    def _fetch(self, conn: psycopg.Connection) -> list[OutboxRow]:
        query = sql.SQL("SELECT {cols} FROM {t} ORDER BY id LIMIT %s").format(
            cols=sql.SQL(_COLUMNS), t=self._outbox
        )
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, (self.settings.batch_size,))
            return [row_from_db(r) for r in cur.fetchall()]

    def _remove(self, conn: psycopg.Connection, ids: list[int]) -> None:
        if self.settings.archive:
            conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {o} WHERE id = ANY(%s) RETURNING {cols}) "
                    "INSERT INTO {a} ({cols}) SELECT {cols} FROM moved ORDER BY id ON CONFLICT (id) DO NOTHING"
                ).format(o=self._outbox, a=self._archive, cols=sql.SQL(_COLUMNS)),
                (ids,),
            )
        else:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._outbox), (ids,))

    def _maybe_prune(self, conn: psycopg.Connection) -> None:
        now = time.monotonic()
        if not self.settings.archive or now - self._last_prune < self.settings.prune_every_s:
            return
        self._last_prune = now
        cur = conn.execute(
            sql.SQL("DELETE FROM {} WHERE relayed_at < now() - make_interval(secs => %s)").format(self._archive),
            (self.settings.archive_retention_s,),
        )
        if cur.rowcount:
            log.info("pruned %d archived outbox row(s)", cur.rowcount)

    # ----------------------------------------------------------------- Kafka

    def _producer_(self) -> CheckedProducer:
        if self._producer is None:
            self._producer = make_producer(self.cfg.kafka, "postgres-relay")
        return self._producer

    def _drop_producer(self) -> None:
        """Discard the producer, purging what it still holds (so nothing old arrives after a resend)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.producer.purge()
            producer.producer.flush(1.0)
        except (KafkaException, RuntimeError) as e:  # a broken producer may refuse; it is dropped anyway
            log.debug("purging the old producer: %s", e)

    def _send(self, conn: psycopg.Connection, rows: list[OutboxRow], stop: threading.Event) -> bool:
        """Produce the batch and wait for the broker's acks, dead-letter the rows that can never be sent;
        True once every row is acknowledged on the change topic or the DLQ, False if stopped first.

        Raises :class:`LockLost` (or the session's ``psycopg`` error) when the lock is gone before a send.
        """
        self._warn_unmapped(rows)
        headers = [(H_SESSION, (self.status.session or "").encode())]
        header_bytes = message_size(None, b"", headers)
        fates = [prepare_row(row, self.index, self.serde, self.topic, self._source, self.limit, header_bytes)
                 for row in rows]
        good = [f for f in fates if isinstance(f, Prepared)]
        refused = [f for f in fates if isinstance(f, Refused)]
        queued = self._queued(good)
        sent_queued: set[str] = set()
        backoff = Backoff(self.settings.backoff_s, self.settings.max_backoff_s)
        while good:
            self._confirm_lock(conn)
            statuses = list({m.key: m for g in good if (m := queued.get(g.row.id)) is not None}.values())
            sent_queued.update(m.key for m in statuses if m.key)
            try:
                results = self._deliver(conn, [_Outgoing(self.topic, g.key, g.value, headers) for g in good], statuses)
            except (FlushTimeout, KafkaException, BufferError) as e:
                self._error(f"kafka: {type(e).__name__}: {e}")
                self._drop_producer()
            else:
                too_big = {i for i, r in enumerate(results) if is_size_error(r.error)}
                for i in sorted(too_big):
                    size = message_size(good[i].key, good[i].value) + header_bytes
                    refused.append(refuse_for_size(good[i], size, self.limit if results[i].local else None))
                failed = [r.error for i, r in enumerate(results) if r.error is not None and i not in too_big]
                good = [g for i, g in enumerate(good) if i not in too_big]
                if not failed:
                    break  # every message acknowledged (or refused for its size: dead-lettered below)
                self._error(f"kafka: {len(failed)} of {len(results)} message(s) not delivered: {failed[0]}")
                self._drop_producer()  # the whole batch again (its order kept), with a fresh producer
            if stop.wait(backoff.next()):
                return False
        # the In Queue of a record whose every change of this batch went to the DLQ instead: removed again
        kept = {m.key for g in good if (m := queued.get(g.row.id)) is not None}
        withdrawn = [_Outgoing(self.status_topic, key, None) for key in sorted(sent_queued - kept)]
        if refused and not self._dead_letter(conn, refused, stop, withdrawn):
            return False
        self.status.relayed += len(good)
        self.status.dead_lettered += len(refused)
        return True

    def _queued(self, good: list[Prepared]) -> dict[int, _Outgoing]:
        """The In Queue message of each row to send (by outbox id), all with one ``updated_ts`` (module doc)."""
        now = utcnow()
        out: dict[int, _Outgoing] = {}
        for g in good:
            status = queued_status(g, now)
            if status is None:
                continue
            try:
                value = self.serde.encode(status, self.status_topic)
            except EncodeError as e:  # never seen: a status is a few strings; the change still goes out
                log.warning("In Queue state of %s not encodable: %s", g.key, e)
                continue
            out[g.row.id] = _Outgoing(self.status_topic, queued_status_key(Direction.OUTBOUND, g.key), value)
        return out

    def _dead_letter(self, conn: psycopg.Connection, refused: list[Refused], stop: threading.Event,
                     extra: Sequence[_Outgoing] = ()) -> bool:
        """Write each refused row's dead letter and alert (and, best effort, the ``extra`` status messages);
        True once all are acknowledged, False if stopped."""
        letters: list[DeadLetter] = []
        for r in refused:
            log.warning("dead letter to %s: %s: %s", self.dlq, r.error_class, r.reason)
            letters.append(row_dead_letter(r, dlq=self.dlq, outbox=self._outbox_name, source=self._source,
                                           limit=self.limit))
        alerts = [letter.alert for letter in letters]
        backoff = Backoff(self.settings.backoff_s, self.settings.max_backoff_s)
        while letters or alerts:
            self._confirm_lock(conn)
            out = [_Outgoing(d.topic, d.key, d.value, d.headers) for d in letters]
            out += [_Outgoing(self.alerts, a.object or a.kind.value, self.serde.encode(a, self.alerts)) for a in alerts]
            try:
                results = self._deliver(conn, out, extra)
            except (FlushTimeout, KafkaException, BufferError) as e:
                self._error(f"kafka: {type(e).__name__}: {e}")
                self._drop_producer()
            else:
                extra = ()
                letter_results, alert_results = results[:len(letters)], results[len(letters):]
                letters = [d.lean if is_size_error(r.error) and d.lean is not None else d
                           for d, r in zip(letters, letter_results, strict=True) if r.error is not None]
                alerts = [a for a, r in zip(alerts, alert_results, strict=True) if r.error is not None]
                if not letters and not alerts:
                    break
                self._error(f"kafka: {len(letters)} dead letter(s), {len(alerts)} alert(s) not delivered")
                self._drop_producer()
            if stop.wait(backoff.next()):
                return False
        return True

    def _deliver(self, conn: psycopg.Connection, messages: Sequence[_Outgoing],
                 extra: Sequence[_Outgoing] = ()) -> list[_Result]:
        """Produce ``messages`` (then the best-effort ``extra``: status messages, whose failures are only
        counted and logged) and wait for every answer: one :class:`_Result` per message of ``messages``, in order.

        A message the client refuses at once (e.g. over ``message.max.bytes``) is a local result, not an
        exception. Raises ``FlushTimeout`` when the broker does not answer in ``flush_timeout_s``, and
        :class:`LockLost` when the lock goes while waiting (checked every ``lock_check_s``).
        """
        producer = self._producer_()
        results: list[_Result | None] = [None] * len(messages)

        def answered(i: int, err: KafkaError | None, _msg: Message) -> None:
            results[i] = _Result(err)

        for i, m in enumerate(messages):
            try:
                producer.produce(m.topic, m.value, key=m.key, headers=list(m.headers or []) or None,
                                 on_delivery=partial(answered, i))
            except KafkaException as e:
                error = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else KafkaError(KafkaError._FAIL)
                results[i] = _Result(error, local=True)
        for m in extra:
            self._produce_extra(producer, m)
        self._await_acks(producer, conn)
        with contextlib.suppress(DeliveryError):  # reported per message above
            producer.raise_failures()
        missing = KafkaError(KafkaError._MSG_TIMED_OUT, "no delivery report")
        return [r if r is not None else _Result(missing) for r in results]

    def _produce_extra(self, producer: CheckedProducer, m: _Outgoing) -> None:
        """Queue one best-effort message on the raw client (no poll per message; the wait for the batch's
        acks serves its report)."""
        try:
            producer.queue(m.topic, m.value, key=m.key, on_delivery=self._extra_answered)
        except KafkaException as e:
            self._extra_answered(e.args[0] if e.args and isinstance(e.args[0], KafkaError)
                                 else KafkaError(KafkaError._FAIL), None)

    def _extra_answered(self, err: KafkaError | None, _msg: Message | None) -> None:
        if err is not None:
            self.status.queued_lost += 1
            log.warning("a status message was not delivered: %s", err)

    def _await_acks(self, producer: CheckedProducer, conn: psycopg.Connection) -> None:
        deadline = time.monotonic() + self.settings.flush_timeout_s
        while True:
            wait = max(0.0, min(self.settings.lock_check_s, deadline - time.monotonic()))
            remaining = producer.producer.flush(wait)
            if remaining == 0:
                return
            if time.monotonic() >= deadline:
                raise FlushTimeout(f"{remaining} message(s) still unacknowledged after "
                                   f"{self.settings.flush_timeout_s} s")
            self._confirm_lock(conn)

    def _warn_unmapped(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            if row.table_name not in self.index.by_table and row.table_name not in self._unmapped_seen:
                self._unmapped_seen.add(row.table_name)
                log.warning("outbox rows of table %s, which this relay's config does not map: sent with "
                            "object = table name (the processor maps or skips them)", row.table_name)


def run(cfg: SfsyncConfig, stop: threading.Event | None = None, settings: RelaySettings | None = None,
        health: Health | None = None) -> None:
    """Run the relay until ``stop`` is set (or, without one, until SIGTERM/SIGINT in the main thread)."""
    OutboxRelay(cfg, settings, health).run(stop if stop is not None else stop_on_signals())
