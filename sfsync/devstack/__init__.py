"""Embedded services for development and tests: Kafka-protocol broker, PostgreSQL, the dev stack."""
