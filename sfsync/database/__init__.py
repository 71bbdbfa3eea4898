"""sfsync's PostgreSQL side: schema management (outbox, capture triggers, demo tables) and connections.

- :mod:`sfsync.database.capture` renders the per-table capture trigger (pure).
- :mod:`sfsync.database.schema` renders sfsync's own DDL (pure) and applies it
  (:func:`~sfsync.database.schema.init_schema`, :func:`~sfsync.database.schema.drop_schema`).
- :mod:`sfsync.database.connect` opens connections the same way for every role.
"""

from sfsync.database.capture import ORIGIN_MARKER, ORIGIN_SETTING, TRIGGER_NAME
from sfsync.database.schema import SchemaError, drop_schema, init_schema

__all__ = ["ORIGIN_MARKER", "ORIGIN_SETTING", "TRIGGER_NAME", "SchemaError", "drop_schema", "init_schema"]
