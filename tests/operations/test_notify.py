"""The notifier role delivers alerts to a local webhook receiver and a local SMTP server (STARTTLS, login).

Acceptance (issue 12): the credential alert and the consecutive-failure alert arrive exactly once per cause
(a repeat of a cause within the hour is held back), then "resolved"; webhook bodies are signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from sfsync.devstack.emulator import PASSWORD
from sfsync.devstack.process import free_port
from sfsync.kafka.clients import make_producer
from sfsync.kafka.topics import TopicNames
from sfsync.records import Alert, AlertKind, AlertSeverity
from sfsync.serde import Serde

ARRIVE_S = 120.0
SECRET = "hmac-key-for-the-test"
SMTP_PASSWORD = "smtp-pass-for-the-test"


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.bodies]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert session.ssl is not None  # STARTTLS happened before the message
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def smtp(tmp_path: Any) -> Iterator[tuple[Mailbox, int, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_path = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    box = Mailbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.login == b"sfsync" and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_require_tls=True)
    controller.start()
    yield box, port, str(ca_path)
    controller.stop()


def test_credential_and_streak_alerts_reach_webhook_and_email_once_per_cause_then_resolved(
        pipeline_factory: Any, webhook: Receiver, smtp: tuple[Mailbox, int, str]) -> None:
    box, port, ca = smtp
    p = pipeline_factory(overrides={"alerts": {
        "webhook_url": webhook.url, "webhook_secret": SECRET, "consecutive_failures": 3,
        "email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "sfsync@example.com",
                  "recipients": ["ops@example.com"], "username": "sfsync", "password": SMTP_PASSWORD,
                  "ca_bundle": ca}}})
    p.start(["salesforce-sink", "processor", "postgres-producer", "notifier"])
    p.wait_ready()
    control = p.emulator.control

    def causes() -> list[tuple[str, str]]:
        return [(d["cause"], d["state"]) for d in webhook.documents()]

    try:
        control.config(password="changed-in-salesforce")
        control.expire_sessions()
        with p.db() as conn:
            conn.execute("insert into contacts (first_name, last_name) values ('C', 'during-outage')")
        p.wait_until(lambda: ("credential_failure:salesforce", "open") in causes(), ARRIVE_S, "credential alert")
        # a second report of the same cause within the hour (e.g. from another replica) is held back
        names = TopicNames(p.prefix)
        repeat = Alert(kind=AlertKind.CREDENTIAL_FAILURE, severity=AlertSeverity.CRITICAL, message="again",
                       details={"sink": "salesforce", "cause": "credential_failure:salesforce"})
        producer = make_producer(p.cfg.kafka, "test")
        producer.produce(names.alerts, Serde().encode(repeat, names.alerts), key="test")
        producer.flush(30)
    finally:
        control.config(password=PASSWORD)
    p.wait_until(lambda: ("credential_failure:salesforce", "resolved") in causes(), ARRIVE_S, "credential resolved")

    control.add_validation_rule(object="Contact", field="LastName", regex="^streak-")
    try:
        with p.db() as conn, conn.transaction():
            conn.execute("insert into contacts (first_name, last_name) select 'S', 'streak-' || g "
                         "from generate_series(1, 4) g")
        p.wait_until(lambda: ("consecutive_failures:outbound", "open") in causes(), ARRIVE_S, "streak alert")
    finally:
        control.clear_validation_rules()
    with p.db() as conn:
        conn.execute("insert into contacts (first_name, last_name) values ('C', 'after-streak')")
    p.wait_until(lambda: ("consecutive_failures:outbound", "resolved") in causes(), ARRIVE_S, "streak resolved")
    p.wait_until(lambda: len(box.messages) >= 4, ARRIVE_S, "4 emails")

    assert causes() == [("credential_failure:salesforce", "open"), ("credential_failure:salesforce", "resolved"),
                        ("consecutive_failures:outbound", "open"), ("consecutive_failures:outbound", "resolved")]
    for headers, body in webhook.bodies:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Sfsync-Signature"] == expected and headers["Content-Type"] == "application/json"
    subjects = [m["Subject"] for m in box.messages]
    assert len(subjects) == 4 and subjects[0].startswith("[sfsync CRITICAL] credential_failure")
    assert subjects[1].startswith("[sfsync RESOLVED] credential_failure")
    assert subjects[2].startswith("[sfsync CRITICAL] consecutive_failures")
    assert subjects[3].startswith("[sfsync RESOLVED] consecutive_failures")
    assert all(m["To"] == "ops@example.com" for m in box.messages)
    log = p.roles.log_path("notifier").read_text()
    assert webhook.url not in log and SMTP_PASSWORD not in log and SECRET not in log
    p.stop()
