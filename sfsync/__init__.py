"""sfsync: two-way, near-real-time sync between Salesforce and PostgreSQL over Kafka."""

__version__ = "0.1.0"
