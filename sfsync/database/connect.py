"""One way to open a PostgreSQL connection for every sfsync role.

The DSN comes from ``postgres.dsn`` (a secret: never logged; use
:func:`sfsync.config.redact_dsn` to print it). Every connection carries an
``application_name`` naming the role, so operators can find sfsync's sessions
in ``pg_stat_activity``, and sfsync's timeouts (``postgres.lock_timeout_ms``,
``postgres.statement_timeout_ms``): a sink blocked on a user's row lock gives up
(SQLSTATE 55P03 / 57014: the target is unavailable, the batch is retried) long
before the broker's ``max.poll.interval.ms`` would take its partitions away.
"""

from __future__ import annotations

import psycopg

from sfsync.config import SfsyncConfig

CONNECT_TIMEOUT_S = 5


def connect(
    cfg: SfsyncConfig, application_name: str, *, autocommit: bool = False, connect_timeout: int = CONNECT_TIMEOUT_S
) -> psycopg.Connection:
    """Open a connection to ``cfg.postgres.dsn``.

    Raises :class:`psycopg.OperationalError` when the server cannot be reached
    within ``connect_timeout`` seconds.
    """
    return psycopg.connect(
        cfg.postgres.dsn.get_secret_value(),
        autocommit=autocommit,
        application_name=application_name,
        connect_timeout=connect_timeout,
        options=(f"-c lock_timeout={cfg.postgres.lock_timeout_ms} "
                 f"-c statement_timeout={cfg.postgres.statement_timeout_ms}"),
    )
