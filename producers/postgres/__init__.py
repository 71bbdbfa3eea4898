"""PostgreSQL change capture: the outbox relay (``sfsync run postgres-producer``).

:mod:`producers.postgres.convert` turns outbox rows into change events (pure);
:mod:`producers.postgres.relay` moves them to Kafka with at-least-once delivery.
"""
