"""The operations layer: what an operator (the CLI today, a web dashboard later) does with a running sync.

Use cases over sfsync's own topics, in small modules, each callable with a loaded
:class:`~sfsync.config.SfsyncConfig` and nothing else:

- :mod:`sfsync.operations.control`: pause / resume a direction or one object of it (compacted
  ``<prefix>.control``), and :class:`~sfsync.operations.control.ControlFollower`, how a sink learns it;
- :mod:`sfsync.operations.acks`: the sinks' acknowledgements of it (:class:`~sfsync.operations.acks.AckPublisher`),
  so ``sfsync pause`` / ``resume`` return once every running sink took the change;
- :mod:`sfsync.operations.status`: per-record state (``sfsync queue``) and the per-direction summary
  (``sfsync status``: paused or not, last process time, records waiting, today's counts, open alerts);
- :mod:`sfsync.operations.dlq`: list / show / replay / purge dead letters of every stage;
- :mod:`sfsync.operations.alerts`: what an alert is about (its cause), which are open, one delivery per
  cause per hour then "resolved", and the consecutive-failure counter the sinks keep;
- :mod:`sfsync.operations.notify`: the ``notifier`` role, which delivers alerts to a webhook and by email;
- :mod:`sfsync.operations.forcesync`: force sync (``sfsync sync``): push a record or every record of an
  object from one side through the running pipeline;
- :mod:`sfsync.operations.audit`: the losing changes and ambiguous matches kept in ``sfsync_audit``
  (``sfsync audit``).

Layering: this package is core. It imports no role. The roles use only the narrow pieces named in
``ROLE_API`` below (``tests/test_import_graph.py`` enforces it): the sinks follow the control topic (and acknowledge
it) and count consecutive failures, the roles time their connections' outages and the sinks watch the API budget
share (the pure watches of :mod:`sfsync.operations.alerts`); nothing else of this package is theirs to call.
"""

from __future__ import annotations

#: The only names a role (``producers``, ``processors``, ``consumers``) may import from this package.
ROLE_API: dict[str, frozenset[str]] = {
    "sfsync.operations.control": frozenset({"ControlFollower", "ControlState", "parse_suspension_key",
                                            "suspension_key"}),
    "sfsync.operations.acks": frozenset({"AckPublisher"}),
    "sfsync.operations.alerts": frozenset({"FailureStreak", "StreakEvent", "resolved_alert", "alert_cause",
                                           "DOWN_AFTER", "DownWatch", "ThresholdWatch", "connection_cause"}),
}
