"""Serde.from_config against a real HTTP Schema Registry stand-in that demands basic auth.

The stand-in (http.server on 127.0.0.1, a free port, in a thread) answers the two endpoints the
serde uses - ``POST /subjects/<subject>/versions`` on encode and ``GET /schemas/ids/<id>`` on
decode - and records the ``Authorization`` header of every request.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sfsync import serde as serde_mod
from sfsync.config import SchemaRegistryConfig, SfsyncConfig, build_config
from sfsync.records import Alert, AlertKind, AlertSeverity, ChangeEvent, Operation, Source
from sfsync.serde import DecodeError, RegistryError, Serde, registry_settings

USER = "svc-sfsync"
PASSWORD = "pa55-w0rd-s3cret"
TOPIC = "sfsync.changes.inbound"


@dataclass
class Registry:
    """State of the stand-in: registered schemas, and what each request carried."""

    url: str = ""
    user_info: str = f"{USER}:{PASSWORD}"
    echo_auth: bool = False  # answer 400 quoting the Authorization header (a careless registry)
    schemas: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def expected_header(self) -> str:
        return "Basic " + base64.b64encode(self.user_info.encode()).decode()


def _handler(reg: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization")
            path = self.path.split("?", 1)[0]
            with reg.lock:
                reg.requests.append((self.command, path, auth))
            if reg.echo_auth:
                self._reply(400, {"error_code": 40001, "message": f"bad request, you sent {auth} "
                                  f"({base64.b64decode(auth.split()[-1]).decode() if auth else None})"})
                return False
            if auth != reg.expected_header:
                self._reply(401, {"error_code": 40101, "message": "Unauthorized"})
                return False
            return True

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self._authorized():
                return
            m = re.fullmatch(r"/subjects/([^/]+)/versions", self.path.split("?", 1)[0])
            if m is None:
                self._reply(404, {"error_code": 404, "message": "not found"})
                return
            with reg.lock:
                schema = body["schema"]
                schema_id = reg.ids.setdefault(schema, len(reg.ids) + 1)
                reg.schemas[schema_id] = schema
            self._reply(200, {"id": schema_id})

        def do_GET(self) -> None:
            if not self._authorized():
                return
            m = re.fullmatch(r"/schemas/ids/(\d+)", self.path.split("?", 1)[0])
            schema = reg.schemas.get(int(m.group(1))) if m else None
            if schema is None:
                self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                return
            self._reply(200, {"schema": schema})

    return Handler


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    reg.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reg
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def config(url: str, user_info: str | None = f"{USER}:{PASSWORD}") -> SfsyncConfig:
    reg: dict[str, Any] = {"url": url}
    if user_info is not None:
        reg["basic_auth_user_info"] = user_info
    return build_config({"kafka": {"schema_registry": reg}})


def event() -> ChangeEvent:
    return ChangeEvent(source=Source.SALESFORCE, object="Account", operation=Operation.CREATE,
                       commit_ts=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), source_position="7",
                       sfid="001000000000001AAA", changed_fields=["Name"])


def secret_forms(user_info: str = f"{USER}:{PASSWORD}") -> list[str]:
    password = user_info.partition(":")[2]
    return [password, user_info, base64.b64encode(user_info.encode()).decode()]


def assert_no_secret(text: str, *secrets: str) -> None:
    for s in secrets or secret_forms():
        assert s not in text, f"secret leaked into: {text!r}"


def exception_texts(exc: BaseException) -> str:
    """The full traceback as logged (``log.exception``), chained exceptions included, plus every args."""
    out = ["".join(traceback.format_exception(exc))]
    current: BaseException | None = exc
    while current is not None:
        out.append(repr(current.args))
        current = current.__cause__ if current.__suppress_context__ else (current.__cause__ or current.__context__)
    return "\n".join(out)


# --------------------------------------------------------------------------- settings


def test_every_registry_setting_of_the_config_model_reaches_the_client() -> None:
    missing = set(SchemaRegistryConfig.model_fields) - set(serde_mod._REGISTRY_SETTINGS)
    assert not missing, f"kafka.schema_registry fields not passed to SchemaRegistryClient: {missing}"


def test_registry_settings_reveal_the_secret_only_into_the_client_conf() -> None:
    cfg = config("https://registry.example:8081")
    assert cfg.kafka.schema_registry is not None
    assert registry_settings(cfg.kafka.schema_registry) == {
        "url": "https://registry.example:8081",
        "basic.auth.user.info": f"{USER}:{PASSWORD}",
    }
    assert registry_settings(SchemaRegistryConfig(url="http://r:8081")) == {"url": "http://r:8081"}
    assert_no_secret(repr(cfg.kafka))


def test_no_registry_configured_means_single_object_encoding() -> None:
    serde = Serde.from_config(build_config({}).kafka)
    assert serde.wire_format == "single-object" and serde.registry is None
    assert repr(serde) == "Serde(wire_format='single-object')"


# --------------------------------------------------------------------------- against the stand-in


def test_round_trip_through_an_authenticated_registry(registry: Registry) -> None:
    cfg = config(registry.url)
    writer = Serde.from_config(cfg.kafka)
    assert writer.wire_format == "confluent"
    record = event()
    data = writer.encode(record, TOPIC)
    assert data[:1] == b"\x00" and struct.unpack(">I", data[1:5]) == (1,)
    alert = Alert(kind=AlertKind.REPLAY_GAP, severity=AlertSeverity.WARNING, message="gap")
    alert_data = writer.encode(alert, "sfsync.alerts")
    assert struct.unpack(">I", alert_data[1:5]) == (2,)

    reader = Serde.from_config(cfg.kafka)  # a fresh serde: must fetch the writer schemas by id
    assert reader.decode(data, ChangeEvent, TOPIC) == record
    assert reader.decode_any(alert_data) == alert

    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert [(m, p) for m, p, _ in registry.requests] == [
        ("POST", f"/subjects/{TOPIC}-value/versions"),
        ("POST", "/subjects/sfsync.alerts-value/versions"),
        ("GET", "/schemas/ids/1"),
        ("GET", "/schemas/ids/2"),
    ]
    assert {auth for _, _, auth in registry.requests} == {expected}
    for serde in (writer, reader):
        assert repr(serde) == f"Serde(wire_format='confluent', registry={registry.url!r})"
        assert_no_secret(repr(serde))


def test_unknown_schema_id_is_a_decode_error(registry: Registry) -> None:
    serde = Serde.from_config(config(registry.url).kafka)
    with pytest.raises(DecodeError, match="unknown schema id 42"):
        serde.decode(b"\x00" + struct.pack(">I", 42) + b"\x00", ChangeEvent)


@pytest.mark.parametrize("user_info", [f"{USER}:wrong-{PASSWORD}", None], ids=["wrong", "missing"])
def test_refused_credentials_are_a_clear_error_without_the_password(registry: Registry, user_info: str | None) -> None:
    good = Serde.from_config(config(registry.url).kafka)
    payload = good.encode(event(), TOPIC)
    registry.requests.clear()

    bad = Serde.from_config(config(registry.url, user_info).kafka)
    with pytest.raises(RegistryError) as enc:
        bad.encode(event(), TOPIC)
    assert str(enc.value) == (
        f"schema registry rejected the credentials (HTTP 401) registering subject {TOPIC}-value: "
        "check kafka.schema_registry.basic_auth_user_info"
    )
    with pytest.raises(RegistryError) as dec:
        bad.decode(payload, ChangeEvent, TOPIC)
    assert "rejected the credentials (HTTP 401) fetching schema id 1" in str(dec.value)

    sent = {auth for _, _, auth in registry.requests}
    if user_info is None:
        assert sent == {None}
    else:
        assert sent == {"Basic " + base64.b64encode(user_info.encode()).decode()}
    secrets = [*secret_forms(), *(secret_forms(user_info) if user_info else [])]
    for info in (enc, dec):
        assert_no_secret(exception_texts(info.value), *secrets)
    assert_no_secret(repr(bad), *secrets)


def test_a_registry_quoting_the_credentials_back_does_not_leak_them(registry: Registry) -> None:
    registry.echo_auth = True
    serde = Serde.from_config(config(registry.url).kafka)
    with pytest.raises(RegistryError) as enc:
        serde.encode(event(), TOPIC)
    assert "schema registry failed for subject" in str(enc.value) and "***" in str(enc.value)
    with pytest.raises(RegistryError) as dec:
        serde.decode(b"\x00" + struct.pack(">I", 1) + b"\x00", ChangeEvent)
    assert "***" in str(dec.value)
    for info in (enc, dec):
        assert_no_secret(exception_texts(info.value))


def test_credentials_in_the_url_are_sent_and_redacted(registry: Registry) -> None:
    host = registry.url.removeprefix("http://")
    serde = Serde.from_config(config(f"http://{USER}:{PASSWORD}@{host}", None).kafka)
    serde.encode(event(), TOPIC)
    assert registry.requests[-1][2] == registry.expected_header
    assert repr(serde) == f"Serde(wire_format='confluent', registry='http://***@{host}')"
    assert_no_secret(repr(serde))


def test_invalid_registry_settings_do_not_echo_the_secret() -> None:
    with pytest.raises(ValueError, match="invalid schema registry settings") as info:
        Serde(registry_config={"url": f"ftp://{USER}:{PASSWORD}@registry.example"})
    assert_no_secret(exception_texts(info.value))
