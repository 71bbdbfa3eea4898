"""The outbox relay (``sfsync run postgres-producer``): outbox rows -> ``<prefix>.changes.outbound``.

Contract:

- **One active relay per outbox.** The relay holds a session-level advisory
  lock (``pg_try_advisory_lock(hashtextextended('sfsync.relay:<schema>.<outbox>', 0))``)
  on the connection it reads and deletes with. Other replicas are hot
  standbys: they retry the lock every ``standby_check_s`` and take over as
  soon as the active relay's session ends (process killed, connection
  terminated, host gone). A relay whose connection dies stops relaying at
  once (its deletes would fail anyway) and goes back to standby.
- **At-least-once, in order.** Rows are read in id order in batches; each
  batch is produced with the idempotent producer and ``flush()``-ed; only
  after the broker acknowledged every message of the batch are those rows
  deleted by id (or moved to the archive table). Kill -9 at any moment:
  rows not yet deleted are sent again on restart (duplicates possible, loss
  not). A failed delivery deletes nothing: the batch is sent again after a
  backoff, with a fresh producer.
- **Wake-ups.** The relay LISTENs on the outbox channel (the trigger's
  ``pg_notify``) and also polls every ``poll_interval_s``, so a missed
  notification costs at most one poll interval.
- Rows are deleted by explicit id, never by range: a row of a transaction
  that commits late (lower id, visible later) is sent when it appears.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

import psycopg
from confluent_kafka import KafkaException
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from producers.postgres.convert import OutboxRow, TableIndex, event_key, row_from_db, row_to_event
from sfsync.backoff import Backoff
from sfsync.config import SfsyncConfig
from sfsync.database.connect import connect
from sfsync.database.schema import archive_table_name, notify_channel, relay_lock_name
from sfsync.health import Health
from sfsync.kafka.clients import CheckedProducer, DeliveryError, FlushTimeout, make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.serde import Serde
from sfsync.signals import stop_on_signals

log = logging.getLogger("sfsync.relay")

APPLICATION_NAME = "sfsync-postgres-relay"
_COLUMNS = "id, table_name, local_key, operation, changed_columns, new_values, txid, committed_at, origin"


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
    relayed: int = 0
    batches: int = 0
    takeovers: int = 0
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class OutboxRelay:
    """The relay loop; :meth:`run` returns when ``stop`` is set (after finishing the batch in hand)."""

    def __init__(self, cfg: SfsyncConfig, settings: RelaySettings | None = None, health: Health | None = None) -> None:
        self.cfg = cfg
        self.health = health or Health("postgres-producer", checks=("postgres", "broker"))
        self.settings = settings or RelaySettings.from_config(cfg)
        self.status = RelayStatus()
        self.topic = TopicNames(cfg.kafka.topic_prefix).changes_outbound
        self.index = TableIndex.from_config(cfg)
        self.serde = Serde.from_config(cfg.kafka)
        self._producer: CheckedProducer | None = None
        self._last_prune = 0.0
        self._unmapped_seen: set[str] = set()
        schema = cfg.postgres.schema_name
        self._outbox = sql.Identifier(schema, cfg.postgres.outbox_table)
        self._archive = sql.Identifier(schema, archive_table_name(cfg.postgres.outbox_table))

    # ----------------------------------------------------------------- lifecycle

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; survives database and broker outages (retrying with backoff)."""
        backoff = Backoff(self.settings.backoff_s, self.settings.max_backoff_s)
        try:
            while not stop.is_set():
                try:
                    with connect(self.cfg, APPLICATION_NAME, autocommit=True) as conn:
                        set_json_loads(partial(json.loads, parse_float=Decimal), conn)
                        self.status.backend_pid = conn.info.backend_pid
                        if not self._acquire(conn, stop):
                            break
                        self.status.state = "active"
                        self.status.takeovers += 1
                        log.info("relay active (backend %s)", conn.info.backend_pid)
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(self.cfg))))
                        self.health.mark("postgres", True, "active: listening for outbox rows")
                        self._check_broker()
                        backoff.reset()
                        self._pump(conn, stop)
                except psycopg.Error as e:
                    self._error(f"database: {type(e).__name__}: {e}".strip())
                    self.health.mark("postgres", False, f"database: {type(e).__name__}")
                    self.status.state = "standby"
                    stop.wait(backoff.next())
        finally:
            self.status.state = "stopped"
            if self._producer is not None:
                self._drop_producer()

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
            self.status.state = "standby"
            stop.wait(self.settings.standby_check_s)
        return False

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
            rows = self._fetch(conn)
            if rows:
                if not self._send(rows, stop):
                    return  # stopped before the broker acknowledged: the rows stay for the next run
                self._remove(conn, [r.id for r in rows])
                self.status.relayed += len(rows)
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

    def _send(self, rows: list[OutboxRow], stop: threading.Event) -> bool:
        """Produce the rows and wait for the broker's acks; True once acknowledged, False if stopped first."""
        messages: list[tuple[str, bytes]] = []
        for row in rows:
            if row.table_name not in self.index.by_table and row.table_name not in self._unmapped_seen:
                self._unmapped_seen.add(row.table_name)
                log.warning("outbox rows of table %s, which this relay's config does not map: sent with "
                            "object = table name (the processor maps or skips them)", row.table_name)
            event = row_to_event(row, self.index)
            messages.append((event_key(event), self.serde.encode(event, self.topic)))
        backoff = Backoff(self.settings.backoff_s, self.settings.max_backoff_s)
        while True:
            producer = self._producer_()
            try:
                for key, value in messages:
                    producer.produce(self.topic, value, key=key)
                producer.flush(self.settings.flush_timeout_s)
                return True
            except (DeliveryError, FlushTimeout, KafkaException, BufferError) as e:
                self._error(f"kafka: {type(e).__name__}: {e}")
                self._drop_producer()
            if stop.wait(backoff.next()):
                return False


def run(cfg: SfsyncConfig, stop: threading.Event | None = None, settings: RelaySettings | None = None,
        health: Health | None = None) -> None:
    """Run the relay until ``stop`` is set (or, without one, until SIGTERM/SIGINT in the main thread)."""
    OutboxRelay(cfg, settings, health).run(stop if stop is not None else stop_on_signals())
