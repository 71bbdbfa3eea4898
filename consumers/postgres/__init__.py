"""The PostgreSQL sink (``sfsync run postgres-sink``).

:mod:`consumers.postgres.plan` (pure batch planning), :mod:`consumers.postgres.statements`
(pure SQL), :mod:`consumers.postgres.sink` (:class:`~consumers.postgres.sink.PostgresSink`).
"""
