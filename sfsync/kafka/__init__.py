"""Kafka plumbing: client settings from config, the topic catalogue, producer/consumer wrappers."""
