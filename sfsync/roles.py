"""The roles ``sfsync run <role>`` starts, each a separate process and Kafka consumer group.

Every role function takes the loaded config, a stop event set on
SIGINT/SIGTERM, and the role's :class:`~sfsync.health.Health` (which ``sfsync
run`` serves on ``/healthz`` and ``/readyz``), and returns once it has shut
down cleanly (producers flushed, offsets committed for durable work only). The
processor is a faust worker, which installs its own signal handling.

This is the one composition module: the only place the core reaches a role.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sfsync.config import SfsyncConfig
from sfsync.health import Health

log = logging.getLogger("sfsync.roles")

RoleFn = Callable[[SfsyncConfig, threading.Event, Health], None]

#: what each role's /readyz waits for (besides a turning loop)
READINESS: dict[str, tuple[str, ...]] = {
    "salesforce-producer": ("broker", "salesforce"),
    "postgres-producer": ("postgres", "broker"),
    "processor": ("group",),
    "postgres-sink": ("target", "group"),
    "salesforce-sink": ("target", "group"),
    "notifier": ("broker",),
}


def salesforce_producer(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    from producers.salesforce.cdc import run

    run(cfg, stop, health=health)


def postgres_producer(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    from producers.postgres.relay import run

    run(cfg, stop, health=health)


def processor(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    import logging

    from processors.app import run

    # the faust worker sets up the process's logging again: at the level ``sfsync run --log-level`` gave
    run(cfg, loglevel=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(), health=health)


def postgres_sink(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    from consumers.postgres.syncstate import run_postgres_sink  # the sink, plus the sync-state follower

    run_postgres_sink(cfg, stop, health)


def salesforce_sink(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    from consumers.postgres.sink import PostgresSink
    from consumers.runner import SinkRunner
    from consumers.salesforce.links import link_back
    from consumers.salesforce.sink import SalesforceSink

    sink = SalesforceSink(cfg)
    local = PostgresSink(cfg)
    try:
        SinkRunner(cfg, sink, after_write=link_back(sink, local), health=health).run(stop)
    finally:
        local.close()


def notifier(cfg: SfsyncConfig, stop: threading.Event, health: Health) -> None:
    from sfsync.operations.notify import run

    run(cfg, stop, health=health)


ROLES: dict[str, RoleFn] = {
    "salesforce-producer": salesforce_producer,
    "processor": processor,
    "postgres-sink": postgres_sink,
    "postgres-producer": postgres_producer,
    "salesforce-sink": salesforce_sink,
    "notifier": notifier,
}

#: The order ``sfsync dev`` starts them in (sinks before producers, so nothing waits on a consumer).
START_ORDER = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer",
               "notifier"]


class BackfillFailed(Exception):
    """``sfsync backfill`` could not go on; the message says why (and what was done already)."""


def backfill(cfg: SfsyncConfig, name: str, *, dry_run: bool = False) -> dict[str, object]:
    """The first sync of one object (:mod:`producers.firstsync.run`): its report as JSON data.

    Raises :class:`BackfillFailed` for the command's own refusals (unmapped object, spent API budget);
    connection errors of PostgreSQL, Salesforce or Kafka pass through.
    """
    from producers.firstsync.run import BackfillError
    from producers.firstsync.run import backfill as run_backfill

    try:
        return run_backfill(cfg, name, dry_run=dry_run).to_json()
    except BackfillError as e:
        raise BackfillFailed(str(e)) from None
