"""The bare faust relay: the baseline the processor is measured against (issue 14).

The raw broker pass-through says what the broker can carry; it does not say what faust itself costs
on this machine. This relay is faust with nothing of sfsync's work in it: one agent that forwards each
message of a source topic to a target topic, unchanged. Its rate, measured in the same run as the
pipeline, is what the processor would reach if deciding, mapping, the records Table and its changelog
cost nothing; pipeline / relay is therefore the share of faust's own rate the pipeline keeps.

To make the comparison fair the relay takes the processor's own faust settings: it builds the
processor's app (:func:`processors.app.build_app`, never started) from the stack's config and copies
its broker, commit, producer and stream settings and its fetch wait, so a change to the processor's
settings moves the baseline with it. It runs on uvloop like the processor (:func:`sfsync.eventloop.use_uvloop`),
as its own process (``python bench/faust_relay.py ...``, started by :func:`stack.faust_relay`).

faust fixes aiokafka's fetch wait at 1.5 s; on the embedded broker (answers a waiting fetch only when the
wait runs out) that would make the relay crawl for a reason the processor does not have. The processor's
transport (``sfsync://``) sets the wait; this relay registers a transport of its own, ``benchrelay://``,
that does only that (and times each offset commit), so the baseline is stock faust plus the one knob.

The relay writes its counters (messages forwarded, the duration of every offset commit, the settings
it used) to ``--stats`` as JSON once a second, and stops itself after ``--max-seconds`` (besides
dying with its parent, :func:`sfsync.devstack.process.spawn`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

import faust
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

#: faust settings copied from the processor's app (everything that shapes fetching, committing, producing)
COPIED_SETTINGS = (
    "broker_session_timeout",
    "broker_heartbeat_interval",
    "broker_request_timeout",
    "broker_commit_interval",
    "broker_max_poll_records",
    "broker_max_poll_interval",
    "consumer_auto_offset_reset",
    "producer_acks",
    "producer_linger",
    "producer_max_batch_size",
    "stream_wait_empty",
    "stream_buffer_maxsize",
    "topic_replication_factor",
)

#: the processor app's attribute its transport reads the fetch wait from (processors/transport.py)
FETCH_WAIT_ATTRIBUTE = "sfsync_fetch_max_wait_ms"


class RelayCounters:
    """What the relay reports (one per process, class attributes): messages forwarded and how long each
    offset commit took (seconds)."""

    forwarded: ClassVar[int] = 0
    commits: ClassVar[list[float]] = []


class RelayConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Sets the worker consumer's fetch wait, exactly as the processor's transport does."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, FETCH_WAIT_ATTRIBUTE, 1500))
        return consumer


class RelayConsumer(faust_aiokafka.Consumer):
    """Times every commit faust makes (its commit timer, and commits at a rebalance): the processor's
    log shows only commits slower than the commit interval ("Timer commit is overlapping"), this shows
    them all, for faust alone."""

    def _new_consumer_thread(self) -> RelayConsumerThread:
        return RelayConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        did = bool(await super().commit(*args, **kwargs))
        if did:
            RelayCounters.commits.append(time.perf_counter() - started)
        return did


class RelayTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`RelayConsumer`."""

    Consumer: ClassVar[Any] = RelayConsumer


def processor_settings(config_path: Path) -> tuple[dict[str, Any], int]:
    """The processor's faust settings (:data:`COPIED_SETTINGS`) and fetch wait (ms), read off its app."""
    from processors.app import build_app
    from sfsync.config import load_config

    cfg = load_config(config_path)
    app, _stats = build_app(cfg)
    settings = {name: getattr(app.conf, name) for name in COPIED_SETTINGS}
    return settings, int(getattr(app, FETCH_WAIT_ATTRIBUTE, 1500))


def build_relay(app_id: str, bootstrap: str, source: str, target: str, partitions: int,
                settings: dict[str, Any], fetch_wait_ms: int, datadir: Path | None = None) -> faust.App:
    """The relay app: one agent, ``source`` -> ``target``, keys and values as raw bytes. ``datadir``: faust's
    data directory (its default is ``<app id>-data`` in the working directory)."""
    drivers.TRANSPORTS.aliases["benchrelay"] = f"{__name__}:RelayTransport"
    app = faust.App(
        app_id,
        broker=f"benchrelay://{bootstrap}",
        topic_partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        web_enabled=False,
        **({"datadir": str(datadir)} if datadir is not None else {}),
        **settings,
    )
    setattr(app, FETCH_WAIT_ATTRIBUTE, fetch_wait_ms)
    src = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    dst = app.topic(target, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def relay(stream: Any) -> None:
        async for event in stream.events():
            await dst.send(key=event.key, value=event.value)
            RelayCounters.forwarded += 1

    relay.__name__ = "relay"
    app.agent(src, name="relay")(relay)
    return app


def main() -> None:
    """Run the relay until SIGTERM, its parent's death or ``--max-seconds``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="the stack's sfsync.yaml (processor settings)")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--app-id", required=True)
    ap.add_argument("--stats", type=Path, required=True)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()

    from sfsync.eventloop import use_uvloop

    uvloop = use_uvloop()
    settings, fetch_wait_ms = processor_settings(args.config)
    app = build_relay(args.app_id, args.bootstrap, args.source, args.target, args.partitions, settings,
                      fetch_wait_ms, args.stats.parent / f"{args.app_id}-data")  # in the run's state directory
    used = {**{k: repr(v) for k, v in settings.items()}, "fetch_max_wait_ms": fetch_wait_ms, "uvloop": uvloop}

    def write_stats() -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps({"forwarded": RelayCounters.forwarded, "commits": RelayCounters.commits,
                                   "settings": used}))
        os.replace(tmp, args.stats)

    @app.task
    async def quiet_libraries() -> None:
        # as the processor does (processors/app.py): faust's per-message debug logging costs CPU
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @app.timer(interval=1.0)
    async def report() -> None:
        write_stats()

    @app.task
    async def lifetime() -> None:
        await asyncio.sleep(args.max_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    write_stats()
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
