"""The ``notifier`` role: alerts from ``<prefix>.alerts`` to people (a webhook, email).

Contract:
- One consumer group ``<prefix>-notifier`` (run one replica; the topic has one partition). Offsets are
  committed after an alert was handled (delivered, given up, or held back as a repeat): a restart
  neither loses nor repeats a delivery, except the alert being handled when it was killed.
- Which alerts are delivered is :class:`sfsync.operations.alerts.Deduper`'s decision (one per cause
  per hour, then "resolved"). Its state is rebuilt at start by replaying the alerts before the committed
  offset (no delivery), so a restart does not send repeats within the hour again. A notifier with no
  committed offset delivers only alerts of the last hour.
- Webhook: ``POST alerts.webhook_url`` with the alert as JSON; with ``alerts.webhook_secret`` the header
  ``X-Sfsync-Signature: sha256=<hex HMAC-SHA256 of the exact body>``. A 2xx answer is delivered; any
  other answer or a network error is retried ``alerts.delivery_attempts`` times with doubling waits
  (:class:`sfsync.backoff.Backoff`), then given up (logged, never the URL).
- Email: SMTP to ``alerts.email.smtp_host:port``, STARTTLS (the certificate checked) before login and
  before the message; retried the same way.
- Secrets (webhook URL, HMAC key, SMTP password) are never in a log line, a repr or an exception text.
- DLQ age ("a record in the DLQ for more than a day"): every ``dlq_check_s`` (10 min), once it has caught
  up with the alerts topic, the notifier reads every ``<prefix>.dlq.<sink>`` and writes to
  ``<prefix>.alerts`` one ``dlq_age`` alert per DLQ topic holding letters still dead (not replayed, not
  purged) that entered it more than a day ago, and one "resolved" once none is left; it then delivers
  them like any alert. Why here: the notifier is the one long-running singleton that follows the alerts
  topic (so it knows, after a restart too, which of these causes are open: :class:`DlqAgeWatch`); a sink
  has replicas and forgets on restart, and ``sfsync alerts`` only runs when a person runs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

import requests
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaException, TopicPartition

from sfsync.backoff import Backoff
from sfsync.config import EmailAlerts, SfsyncConfig
from sfsync.health import Health
from sfsync.kafka.clients import CheckedProducer, make_consumer, make_producer
from sfsync.kafka.topics import SINKS, TopicNames
from sfsync.operations.alerts import (
    DLQ_MAX_AGE,
    WINDOW,
    Deduper,
    DlqAgeWatch,
    StaleLetters,
    StreakEvent,
    alert_cause,
    dlq_age_cause,
    is_resolved,
    resolved_alert,
    stale_dead_letters,
)
from sfsync.operations.dlq import DlqFilter, LetterState, list_dead_letters
from sfsync.records import Alert, AlertKind, AlertSeverity
from sfsync.serde import DecodeError, Serde

log = logging.getLogger("sfsync.notifier")

SIGNATURE_HEADER = "X-Sfsync-Signature"
#: how often the notifier reads the DLQ topics for letters older than a day
DLQ_CHECK_S = 600.0

__all__ = ["SIGNATURE_HEADER", "EmailChannel", "Notifier", "WebhookChannel", "alert_document", "channels_of",
           "run", "sign"]


class DeliveryFailed(Exception):
    """One delivery attempt failed; the message never contains a secret."""


def alert_document(alert: Alert) -> dict[str, Any]:
    """The JSON every channel sends: the alert plus its cause and state."""
    return {"alert_id": alert.alert_id, "kind": alert.kind.value, "severity": alert.severity.value,
            "state": "resolved" if is_resolved(alert) else "open", "cause": alert_cause(alert),
            "message": alert.message, "object": alert.object, "details": dict(alert.details),
            "ts": alert.ts.isoformat()}


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver once or raise :class:`DeliveryFailed`."""


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float) -> None:
        self._url = url
        self._secret = secret.encode() if secret else None
        self._timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"WebhookChannel(url=***, signed={self._secret is not None})"

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert_document(alert), sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "sfsync-notifier"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        try:
            answer = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout)
        except requests.RequestException as e:
            raise DeliveryFailed(f"webhook not reachable: {type(e).__name__}") from None
        if not 200 <= answer.status_code < 300:
            raise DeliveryFailed(f"webhook answered HTTP {answer.status_code}")


class EmailChannel:
    name = "email"

    def __init__(self, cfg: EmailAlerts) -> None:
        self._cfg = cfg

    def __repr__(self) -> str:
        return f"EmailChannel({self._cfg.smtp_host}:{self._cfg.smtp_port}, to {len(self._cfg.recipients)})"

    def message(self, alert: Alert) -> EmailMessage:
        doc = alert_document(alert)
        msg = EmailMessage()
        state = "RESOLVED" if is_resolved(alert) else alert.severity.value.upper()
        msg["Subject"] = f"[sfsync {state}] {alert.kind.value}: {alert.message[:120]}"
        msg["From"] = self._cfg.sender
        msg["To"] = ", ".join(self._cfg.recipients)
        lines = [alert.message, "", *(f"{k}: {v}" for k, v in doc.items() if k not in ("message", "details")),
                 *(f"details.{k}: {v}" for k, v in sorted(alert.details.items()))]
        msg.set_content("\n".join(lines) + "\n\nWhat to do: docs/runbook.md, section Alerts.\n")
        return msg

    def send(self, alert: Alert) -> None:
        c = self._cfg
        try:
            with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.timeout_s) as smtp:
                smtp.ehlo()
                if c.starttls:
                    context = ssl.create_default_context(cafile=c.ca_bundle)
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if c.username:
                    smtp.login(c.username, c.password.get_secret_value() if c.password else "")
                smtp.send_message(self.message(alert))
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryFailed(f"SMTP server refused the login (code {e.smtp_code})") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
            raise DeliveryFailed(f"SMTP delivery to {c.smtp_host}:{c.smtp_port} failed: {type(e).__name__}") from None


def channels_of(cfg: SfsyncConfig) -> list[Channel]:
    a = cfg.alerts
    out: list[Channel] = []
    if a.webhook_url is not None:
        out.append(WebhookChannel(a.webhook_url.get_secret_value(),
                                  a.webhook_secret.get_secret_value() if a.webhook_secret else None,
                                  a.webhook_timeout_s))
    if a.email is not None:
        out.append(EmailChannel(a.email))
    return out


class Notifier:
    """Consumes the alerts topic and delivers (see the module contract)."""

    def __init__(self, cfg: SfsyncConfig, channels: list[Channel] | None = None, health: Health | None = None,
                 first_wait_s: float = 1.0, *, dlq_check_s: float = DLQ_CHECK_S,
                 dlq_max_age: timedelta = DLQ_MAX_AGE,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.cfg = cfg
        self.names = TopicNames(cfg.kafka.topic_prefix)
        self.serde = Serde.from_config(cfg.kafka)
        self.channels = channels if channels is not None else channels_of(cfg)
        self.health = health or Health("notifier", checks=("broker",))
        self.deduper = Deduper(WINDOW)
        self.first_wait_s = first_wait_s
        self.delivered: list[tuple[str, Alert]] = []  # (channel, alert), for tests and logs
        self.consumer = make_consumer(cfg.kafka, f"{cfg.kafka.topic_prefix}-notifier", "notifier")
        self.dlq_watch = DlqAgeWatch()
        self.dlq_check_s = dlq_check_s
        self.dlq_max_age = dlq_max_age
        self.now = now
        self._producer: CheckedProducer | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            partitions = self._assign(stop)
            if partitions is None:
                return
            committed = {tp.partition: tp.offset for tp in self.consumer.committed(partitions, timeout=30)}
            # the end of the topic at start: the DLQ watch knows which causes are open once read up to it
            ends = {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=30) for tp in partitions}
            pending = {tp.partition: hi for tp in partitions for low, hi in [ends[tp.partition]] if hi > low}
            self.health.mark("broker", True, f"following {self.names.alerts}")
            log.info("notifier: delivering to %s", ", ".join(c.name for c in self.channels) or "nothing (no "
                     "alerts.webhook_url / alerts.email configured: alerts are only on the topic)")
            recent = datetime.now(UTC) - WINDOW
            next_scan = 0.0
            while not stop.is_set():
                self.health.beat()
                messages = self.consumer.consume(100, 0.5)
                if not messages and pending:  # positions count transaction markers too, unlike messages
                    for tp in self.consumer.position([TopicPartition(self.names.alerts, p) for p in pending]):
                        if tp.offset >= pending[tp.partition]:
                            pending.pop(tp.partition)
                if not messages and not pending and time.monotonic() >= next_scan:
                    self.check_dead_letters()
                    next_scan = time.monotonic() + self.dlq_check_s
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    p, offset = msg.partition() or 0, msg.offset() or 0
                    try:
                        alert = self.serde.decode(msg.value() or b"", Alert, self.names.alerts)
                    except DecodeError as e:
                        log.warning("alert at %s[%d]@%d skipped: %s", self.names.alerts, p, offset, e)
                        continue
                    start = committed.get(p, OFFSET_INVALID)
                    replaying = offset < start if start >= 0 else alert.ts < recent
                    self.dlq_watch.note(alert)
                    decision = self.deduper.decide(alert)
                    if decision is not None and not replaying:
                        self._deliver(decision, stop)
                    if not replaying:
                        self._commit(p, offset + 1)
        finally:
            self.consumer.close()
            if self._producer is not None:
                self._producer.flush(10)

    def check_dead_letters(self) -> list[Alert]:
        """One DLQ scan: the ``dlq_age`` alerts it wrote to the alerts topic (see the module contract).
        A scan that cannot read the DLQ topics is logged and tried again at the next interval."""
        topics = [self.names.dlq(sink) for sink in SINKS]
        try:
            letters = list_dead_letters(self.cfg, DlqFilter(states=frozenset({LetterState.DEAD})), timeout=60)
        except (KafkaException, TimeoutError) as e:
            log.warning("notifier: dead letters not checked (%s); trying again in %.0f s", e, self.dlq_check_s)
            return []
        stale = stale_dead_letters(((x.topic, x.id, x.written) for x in letters), self.now(), self.dlq_max_age)
        out = [self._dlq_alert(topic, event, found) for topic, event, found in self.dlq_watch.decide(topics, stale)]
        if out:
            if self._producer is None:
                self._producer = make_producer(self.cfg.kafka, "notifier")
            for alert in out:
                self._producer.produce(self.names.alerts, self.serde.encode(alert, self.names.alerts), key="notifier")
            self._producer.flush(30)
        return out

    def _dlq_alert(self, topic: str, event: StreakEvent, found: StaleLetters | None) -> Alert:
        hours = self.dlq_max_age.total_seconds() / 3600
        if event is StreakEvent.RESOLVED or found is None:
            return resolved_alert(dlq_age_cause(topic), AlertKind.DLQ_AGE,
                                  f"no dead letter in {topic} is older than {hours:.0f} h any more",
                                  {"dlq": topic})
        return Alert(kind=AlertKind.DLQ_AGE, severity=AlertSeverity.WARNING,
                     message=f"{found.count} dead letter(s) in {topic} waiting for more than {hours:.0f} h "
                             f"(oldest since {found.oldest.isoformat(timespec='seconds')}): replay or purge them",
                     details={"dlq": topic, "count": str(found.count), "oldest": found.oldest.isoformat(),
                              "ids": ",".join(found.ids[:20]), "cause": dlq_age_cause(topic)})

    def _assign(self, stop: threading.Event) -> list[TopicPartition] | None:
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            self.health.beat()
            try:
                info = self.consumer.list_topics(self.names.alerts, timeout=10).topics.get(self.names.alerts)
                if info is not None and info.error is None and info.partitions:
                    partitions = [TopicPartition(self.names.alerts, p) for p in sorted(info.partitions)]
                    # from the beginning: what lies before the committed offset rebuilds the deduper
                    self.consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
                                          for tp in partitions])
                    return partitions
                detail = f"topic {self.names.alerts} missing (run `sfsync topics apply`)"
            except KafkaException as e:
                detail = f"broker: {e}"
            self.health.mark("broker", False, detail)
            log.warning("notifier: %s; retrying", detail)
            stop.wait(backoff.next())
        return None

    def _commit(self, partition: int, offset: int) -> None:
        try:
            self.consumer.commit(offsets=[TopicPartition(self.names.alerts, partition, offset)], asynchronous=False)
        except KafkaException as e:
            log.warning("notifier: offset not committed (%s); the alert may be handled again after a restart", e)

    def _deliver(self, alert: Alert, stop: threading.Event) -> None:
        for channel in self.channels:
            backoff = Backoff(self.first_wait_s, 60.0)
            for attempt in range(1, self.cfg.alerts.delivery_attempts + 1):
                try:
                    channel.send(alert)
                except DeliveryFailed as e:
                    if attempt == self.cfg.alerts.delivery_attempts or stop.is_set():
                        log.error("notifier: %s delivery of alert %s (%s) given up after %d attempt(s): %s",
                                  channel.name, alert.alert_id, alert_cause(alert), attempt, e)
                        break
                    wait = backoff.next()
                    log.warning("notifier: %s delivery of alert %s failed (%s); retrying in %.1f s",
                                channel.name, alert.alert_id, e, wait)
                    stop.wait(wait)
                    continue
                log.info("notifier: %s delivered alert %s (%s, %s)", channel.name, alert.alert_id, alert_cause(alert),
                         "resolved" if is_resolved(alert) else "open")
                self.delivered.append((channel.name, alert))
                break


def run(cfg: SfsyncConfig, stop: threading.Event, health: Health | None = None) -> None:
    """The ``notifier`` role (``sfsync run notifier``)."""
    Notifier(cfg, health=health).run(stop)

