"""The one place that turns :class:`~sfsync.config.KafkaConfig` into faust's broker credentials.

:mod:`sfsync.kafka.settings` does the same for librdkafka; faust (aiokafka) takes an
``ssl.SSLContext`` and a credentials object instead of a settings dict, built here from the
same config keys (``security_protocol``, ``ssl_*``, ``sasl_*``). faust is imported inside
:func:`faust_credentials`, so importing this module does not import faust.

Secrets (``sasl_password``, ``ssl_key_password``) are revealed only into the objects handed
to faust; faust's credentials ``repr`` shows the username only, and no error raised here
carries a secret.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from sfsync.config import KafkaConfig, SaslMechanism, SecurityProtocol

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = ["faust_credentials", "faust_ssl_context"]


def faust_ssl_context(kafka_cfg: KafkaConfig) -> ssl.SSLContext:
    """A client TLS context: ``ssl_ca_location`` (else the system CAs) and, when set, the client
    certificate ``ssl_certificate_location`` with ``ssl_key_location`` / ``ssl_key_password``."""
    k = kafka_cfg
    context = ssl.create_default_context(cafile=str(k.ssl_ca_location) if k.ssl_ca_location else None)
    if k.ssl_certificate_location:
        password = k.ssl_key_password.get_secret_value() if k.ssl_key_password else None
        keyfile = str(k.ssl_key_location) if k.ssl_key_location else None
        try:
            context.load_cert_chain(str(k.ssl_certificate_location), keyfile, password)
        except (OSError, ssl.SSLError) as exc:
            # ssl's messages never hold the key password; drop the chain all the same
            raise ValueError(
                f"cannot load the Kafka client certificate {k.ssl_certificate_location}"
                + (f" / key {k.ssl_key_location}" if k.ssl_key_location else "")
                + f": {type(exc).__name__}: {exc}"
            ) from None
    return context


def faust_credentials(kafka_cfg: KafkaConfig) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``kafka_cfg``.

    ``PLAINTEXT`` -> ``None``; ``SSL`` -> ``faust.SSLCredentials``; ``SASL_PLAINTEXT`` /
    ``SASL_SSL`` with ``PLAIN`` or ``SCRAM-SHA-256/512`` -> ``faust.SASLCredentials`` (with the TLS
    context for ``SASL_SSL``). ``OAUTHBEARER`` raises ``NotImplementedError``: the processor has no
    OIDC token provider yet.
    """
    k = kafka_cfg
    if k.security_protocol is SecurityProtocol.PLAINTEXT:
        return None
    sasl = k.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
    if sasl and k.sasl_mechanism is SaslMechanism.OAUTHBEARER:
        raise NotImplementedError(
            "kafka.sasl_mechanism OAUTHBEARER is not supported by the processor (faust) yet; "
            "use SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
        )
    import faust

    context = None
    if k.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        context = faust_ssl_context(k)
    if k.security_protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(context)
    # KafkaConfig's validator guarantees a mechanism, username and password for SASL (not OAUTHBEARER)
    if k.sasl_username is None or k.sasl_password is None:
        raise ValueError(f"kafka.sasl_username and kafka.sasl_password are required for {k.security_protocol}")
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password.get_secret_value(),
        mechanism=k.sasl_mechanism.value if k.sasl_mechanism else SaslMechanism.PLAIN.value,
        ssl_context=context,
    )
