"""The faust-streaming processor: changes in, apply commands out (``sfsync run processor``).

Two agents, one per direction, each thin: decode, call the pure mapping
(:mod:`processors.mapping`), consult the record's last synced values, send.

- ``changes.inbound``  -> :func:`~processors.mapping.map_inbound`  -> ``apply.local``
- ``changes.outbound`` -> :func:`~processors.mapping.map_outbound` -> ``apply.salesforce``

Per-record last-synced values live in faust Tables keyed like the streams
(the record key), so state and events meet in one partition and a restarted
worker rebuilds them from the changelog. faust runs at-least-once here (the
embedded broker cannot run aiokafka's idempotent producer): a redelivered
change maps to values already synced and becomes a no-op, and the sinks are
idempotent. Undecodable or unmappable records go to the direction's DLQ with
the reason; the stream goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust

from processors.mapping import Failed, Mapped, MapResult, Skipped, map_inbound, map_outbound
from processors.state import dump_state, load_state, next_output
from sfsync.config import SfsyncConfig
from sfsync.eventloop import use_uvloop
from sfsync.failures import Failure, FailureKind, Origin, failure_headers
from sfsync.health import Health
from sfsync.kafka.faust_settings import faust_credentials
from sfsync.kafka.lineage import lineage_headers
from sfsync.kafka.topics import TopicNames
from sfsync.records import ChangeEvent
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.processor")


class ProcessorStats:
    """Counters the processor exposes (and logs periodically)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

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
        store="memory://",
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
    stats = ProcessorStats()

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    def table(name: str) -> Any:
        # faust declares the changelog topic <app-id>-<name>-changelog itself (compacted).
        return app.Table(name, default=None, partitions=cfg.kafka.partitions, key_type=bytes, value_type=bytes)

    def make_agent(
        direction: str, source: Any, target: Any, dlq: Any, state: Any,
        mapper: Callable[[ChangeEvent, SfsyncConfig], MapResult],
    ) -> None:
        async def process(stream: Any) -> None:
            async for event in stream.events():
                msg = event.message
                key: bytes | None = event.key
                origin = Origin(msg.topic, msg.partition, msg.offset)
                try:
                    change = serde.decode(event.value, ChangeEvent, msg.topic)
                except DecodeError as e:
                    stats.add(f"{direction}.decode_failed")
                    await _dead_letter(dlq, key, event.value, Failure(FailureKind.PERMANENT, "DecodeError", e.reason),
                                       origin)
                    continue
                result = mapper(change, cfg)
                if isinstance(result, Skipped):
                    stats.add(f"{direction}.skipped")
                    continue
                if isinstance(result, Failed):
                    stats.add(f"{direction}.mapping_failed")
                    log.warning("%s %s[%d]@%d %s: %s", direction, msg.topic, msg.partition, msg.offset,
                                change.key, result.reason)
                    await _dead_letter(dlq, key, event.value,
                                       Failure(FailureKind.PERMANENT, "CoercionError", result.reason), origin)
                    continue
                assert isinstance(result, Mapped)
                if result.unmapped_fields:
                    stats.add(f"{direction}.unmapped_fields", len(result.unmapped_fields))
                state_key = key or change.key.encode()
                command, synced = next_output(result.command, load_state(state.get(state_key)), change.event_id)
                state[state_key] = dump_state(synced)
                if command is None:
                    stats.add(f"{direction}.unchanged")
                    continue
                stats.add(f"{direction}.applied")
                await target.send(key=key or change.key.encode(), value=serde.encode(command, target.get_topic_name()),
                                  headers=lineage_headers(msg.partition, msg.offset))

        process.__name__ = f"{direction}_agent"
        app.agent(source, name=f"{direction}")(process)

    make_agent("inbound", topic(names.changes_inbound), topic(names.apply_local), topic(names.dlq("postgres")),
               table("synced-inbound"), map_inbound)
    make_agent("outbound", topic(names.changes_outbound), topic(names.apply_salesforce),
               topic(names.dlq("salesforce")), table("synced-outbound"), map_outbound)
    return app, stats


async def _dead_letter(dlq: Any, key: bytes | None, value: bytes, failure: Failure, origin: Origin) -> None:
    headers = failure_headers(failure, stage="processor", attempt=1, origin=origin, now=datetime.now(UTC))
    await dlq.send(key=key, value=value, headers=headers)


def watch_health(app: faust.App, health: Health) -> None:
    """Feed ``health`` from the worker: ready once a rebalance completed (tables recovered, streams
    resumed) with partitions assigned; alive while the event loop runs its timers."""
    assigned: set[Any] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust types receivers loosely
    async def _assigned(_app: Any, *args: Any, signal: Any = None, **_kw: Any) -> None:  # (sender, TPs)
        assigned.clear()
        assigned.update(args[0] if args else _kw.get("assigned", ()))
        health.mark("group", False, f"{len(assigned)} partition(s) assigned; recovering tables")

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        health.mark("group", False, "rebalancing")

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _complete(_app: Any, *_args: Any, signal: Any = None, **_kw: Any) -> None:
        health.mark("group", bool(assigned), f"joined; {len(assigned)} partition(s) assigned, tables recovered")

    @app.timer(interval=1.0)
    async def _beat() -> None:
        health.beat()


def run(cfg: SfsyncConfig, loglevel: str = "warn", health: Health | None = None) -> None:
    """Run one processor worker until SIGINT/SIGTERM (faust handles both)."""
    use_uvloop()
    app, stats = build_app(cfg)
    if health is not None:
        watch_health(app, health)

    @app.task
    async def quiet_libraries() -> None:
        # The worker's logging set-up leaves faust/aiokafka debug-enabled; their per-message debug
        # calls cost ~9% of the processor's CPU (py-spy, bench/inbound.py).
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @app.timer(interval=30.0)
    async def report() -> None:
        if stats.counts:
            log.info("processor counts: %s", dict(stats.counts))

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

