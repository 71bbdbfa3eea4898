"""One way to open a PostgreSQL connection for every sfsync role.

The DSN comes from ``postgres.dsn`` (a secret: never logged; use
:func:`sfsync.config.redact_dsn` to print it). Every connection carries an
``application_name`` naming the role, so operators can find sfsync's sessions
in ``pg_stat_activity``.
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
    )
