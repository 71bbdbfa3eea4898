"""The one place that turns :class:`~sfsync.config.KafkaConfig` into librdkafka settings.

Every role builds its clients from these functions, so security settings
(TLS, SASL) and the dev/test tuning (session timeout, fetch wait) are applied
the same way everywhere. Passwords go straight into librdkafka's dict and are
never logged: :func:`redacted` is what may be printed.
"""

from __future__ import annotations

import logging
from typing import Any

from sfsync.config import KafkaConfig, SaslMechanism

_SECRET_KEYS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")


#: The logger librdkafka's log lines reach (level and handlers from the role's logging setup).
LIBRDKAFKA_LOG = logging.getLogger("sfsync.librdkafka")


def common_settings(cfg: KafkaConfig, client_suffix: str = "") -> dict[str, Any]:
    """Connection and security settings shared by producers, consumers and the admin client."""
    out: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "security.protocol": cfg.security_protocol.value,
        "client.id": f"{cfg.client_id}-{client_suffix}" if client_suffix else cfg.client_id,
        # librdkafka's own log lines go through Python logging (``sfsync.librdkafka``), never raw to stderr
        "logger": LIBRDKAFKA_LOG,
    }
    if cfg.ssl_ca_location:
        out["ssl.ca.location"] = str(cfg.ssl_ca_location)
    if cfg.ssl_certificate_location:
        out["ssl.certificate.location"] = str(cfg.ssl_certificate_location)
    if cfg.ssl_key_location:
        out["ssl.key.location"] = str(cfg.ssl_key_location)
    if cfg.ssl_key_password is not None:
        out["ssl.key.password"] = cfg.ssl_key_password.get_secret_value()
    if cfg.sasl_mechanism is not None:
        out["sasl.mechanism"] = cfg.sasl_mechanism.value
        if cfg.sasl_mechanism is SaslMechanism.OAUTHBEARER:
            out["sasl.oauthbearer.method"] = "oidc"
            out["sasl.oauthbearer.token.endpoint.url"] = cfg.oauthbearer_token_endpoint_url
            if cfg.oauthbearer_client_id:
                out["sasl.oauthbearer.client.id"] = cfg.oauthbearer_client_id
            if cfg.oauthbearer_client_secret is not None:
                out["sasl.oauthbearer.client.secret"] = cfg.oauthbearer_client_secret.get_secret_value()
        else:
            out["sasl.username"] = cfg.sasl_username
            if cfg.sasl_password is not None:
                out["sasl.password"] = cfg.sasl_password.get_secret_value()
    out.update(cfg.librdkafka)
    return out


#: librdkafka's name of the Java client's partitioner (murmur2 of the key; a null key goes to a random one)
PARTITIONER = "murmur2_random"


def producer_settings(
    cfg: KafkaConfig, client_suffix: str = "producer", transactional_id: str | None = None
) -> dict[str, Any]:
    """Idempotent, acks=all producer settings; transactional when an id is given."""
    out = common_settings(cfg, client_suffix)
    out.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 120_000,
            # murmur2 of the key, as the Java client and aiokafka (the processor's faust producer) do: one key
            # is on one partition number in every keyed topic, whoever wrote it (random for a null key)
            "partitioner": PARTITIONER,
        }
    )
    if transactional_id:
        out["transactional.id"] = transactional_id
        # librdkafka refuses a message timeout above the transaction timeout (default 60 s).
        out["transaction.timeout.ms"] = out["message.timeout.ms"]
    out.update(cfg.librdkafka)
    return out


def consumer_settings(cfg: KafkaConfig, group_id: str, client_suffix: str = "consumer") -> dict[str, Any]:
    """Manual-commit consumer settings: offsets are committed only after the work is durable."""
    out = common_settings(cfg, client_suffix)
    out.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": cfg.session_timeout_ms,
            "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
            "fetch.wait.max.ms": cfg.fetch_wait_max_ms,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    out.update(cfg.librdkafka)
    return out


def admin_settings(cfg: KafkaConfig) -> dict[str, Any]:
    return common_settings(cfg, "admin")


def redacted(settings: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secret values replaced by ``***``."""
    return {k: ("***" if k in _SECRET_KEYS else v) for k, v in settings.items()}
