"""sfsync.kafka.faust_settings: config -> faust broker credentials (no broker needed)."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.types.auth import AuthProtocol, SASLMechanism

from sfsync.config import KafkaConfig, build_config
from sfsync.kafka.faust_settings import faust_credentials

SASL_PASSWORD = "sasl-pa55-s3cret"
KEY_PASSWORD = "key-pa55-s3cret"
OAUTH_SECRET = "oauth-client-s3cret"


def kafka(**kw: Any) -> KafkaConfig:
    return build_config({"kafka": kw}).kafka


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA (also the client certificate) and its key, encrypted with KEY_PASSWORD."""
    tmp = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfsync-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    paths = {"ca": tmp / "ca.pem", "cert": tmp / "client.pem", "key": tmp / "client.key"}
    pem = cert.public_bytes(serialization.Encoding.PEM)
    paths["ca"].write_bytes(pem)
    paths["cert"].write_bytes(pem)
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return paths


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (SASL_PASSWORD, KEY_PASSWORD, OAUTH_SECRET):
            assert secret not in text, f"secret leaked into {text!r}"


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials(kafka()) is None


def test_ssl_with_system_cas() -> None:
    creds = faust_credentials(kafka(security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol is AuthProtocol.SSL
    assert creds.context.verify_mode is ssl.CERT_REQUIRED and creds.context.check_hostname


def test_ssl_with_ca_and_client_certificate(tls_files: dict[str, Path]) -> None:
    cfg = kafka(security_protocol="SSL", ssl_ca_location=str(tls_files["ca"]),
                ssl_certificate_location=str(tls_files["cert"]), ssl_key_location=str(tls_files["key"]),
                ssl_key_password=KEY_PASSWORD)
    creds = faust_credentials(cfg)
    assert isinstance(creds, faust.SSLCredentials)
    subjects = [str(c.get("subject")) for c in creds.context.get_ca_certs()]
    assert any("'commonName', 'sfsync-test-ca'" in s for s in subjects), subjects
    assert_no_secret(repr(creds), repr(cfg))


def test_a_wrong_key_password_is_a_clear_error_without_it(tls_files: dict[str, Path]) -> None:
    cfg = kafka(security_protocol="SSL", ssl_certificate_location=str(tls_files["cert"]),
                ssl_key_location=str(tls_files["key"]), ssl_key_password="not-" + KEY_PASSWORD)
    with pytest.raises(ValueError, match=r"cannot load the Kafka client certificate .*client\.pem / key .*client\.key"
                       ) as info:
        faust_credentials(cfg)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_no_secret(str(info.value), repr(info.value.args))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_scram(tls_files: dict[str, Path], mechanism: str) -> None:
    cfg = kafka(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="svc",
                sasl_password=SASL_PASSWORD, ssl_ca_location=str(tls_files["ca"]))
    creds = faust_credentials(cfg)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism is SASLMechanism(mechanism)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.username == "svc" and creds.password == SASL_PASSWORD  # revealed only to faust
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert_no_secret(repr(creds), str(creds), repr(cfg))


def test_sasl_plaintext_plain_has_no_tls() -> None:
    creds = faust_credentials(kafka(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                    sasl_username="svc", sasl_password=SASL_PASSWORD))
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.mechanism is SASLMechanism.PLAIN and creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.ssl_context is None
    assert_no_secret(repr(creds))


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_oauthbearer_is_refused_by_name(protocol: str) -> None:
    cfg = kafka(security_protocol=protocol, sasl_mechanism="OAUTHBEARER",
                oauthbearer_token_endpoint_url="https://idp.example/token", oauthbearer_client_id="sfsync",
                oauthbearer_client_secret=OAUTH_SECRET)
    with pytest.raises(NotImplementedError, match="OAUTHBEARER") as info:
        faust_credentials(cfg)
    assert_no_secret(str(info.value), repr(info.value.args))


def test_the_processor_app_takes_its_credentials_from_here() -> None:
    from processors.app import build_app

    cfg = build_config({"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                                  "sasl_username": "svc", "sasl_password": SASL_PASSWORD}})
    app, _ = build_app(cfg)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials) and creds.mechanism is SASLMechanism.SCRAM_SHA_256
    assert_no_secret(repr(creds))


def test_importing_the_module_does_not_import_faust() -> None:
    code = ("import sys, sfsync.kafka.faust_settings, sfsync.kafka.settings; "
            "sys.exit(1 if 'faust' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
