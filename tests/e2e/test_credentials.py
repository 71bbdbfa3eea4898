"""Credentials renewed without a restart, end to end (issue 12): roles as processes, real servers.

- PostgreSQL: the pipeline logs in as a dedicated role of its own (password-checked through a
  ``pg_hba.conf`` line for that role only, prepended for the module and removed after). Its password is
  changed with ``ALTER ROLE`` and the backends of the PostgreSQL sink and the outbox relay terminated, so
  both reconnect and are refused (SQLSTATE 28P01): one ``credential_failure`` alert naming postgres from
  each, the record written in Salesforce meanwhile does not arrive; the new password written into the
  config file's DSN: the same processes (same PIDs) resume, the record arrives, both alerts are resolved.
- Salesforce: the emulator's password changed and every session expired: one ``credential_failure`` alert
  for the Salesforce sink, the local change made meanwhile waits; the new password written into the
  config file (the emulator is NOT changed back): the same sink process resumes, the change arrives,
  resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from sfsync.config import build_config
from sfsync.devstack.emulator import PASSWORD
from sfsync.kafka.topics import TopicNames
from sfsync.operations.alerts import alert_cause, is_resolved
from sfsync.records import Alert, AlertKind
from sfsync.serde import Serde

ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 90.0  # how long something may take to ARRIVE (a hang guard, not a speed bound)
PG_CAUSE = "credential_failure:postgres"
SF_CAUSE = "credential_failure:salesforce"
RELAY_CAUSE = "credential_failure:postgres-producer:postgres"


def _credential_alerts(p: Any, cause: str) -> list[tuple[str, str, str]]:
    """(cause, open|resolved, message) of the credential alerts of ``cause`` on the alerts topic, in order."""
    names, serde = TopicNames(p.prefix), Serde.from_config(p.cfg.kafka)
    alerts = [serde.decode(m.value(), Alert) for m in p.read_topic(names.alerts)]
    return [(alert_cause(a), "resolved" if is_resolved(a) else "open", a.message) for a in alerts
            if a.kind is AlertKind.CREDENTIAL_FAILURE and alert_cause(a) == cause]


def _write_config(p: Any) -> None:
    """Write ``p.raw`` to the running roles' config file (what an operator or a secret rotation does)."""
    p.cfg = build_config(p.raw)
    tmp = p.config_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(p.raw))
    tmp.replace(p.config_path)  # atomically, as a mounted secret is swapped


class PasswordChecked:
    """A login role of the test's own whose password the server checks (``pg_hba.conf``, this role only)."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.role = f"sfsync_cred_{uuid.uuid4().hex[:8]}"
        self.hba_file = ""
        self.hba_before = ""

    def dsn(self, password: str) -> str:
        return make_conninfo(self.admin_dsn, user=self.role, password=password)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def create(self, password: str) -> None:
        with self.admin() as conn:
            # superuser: the pipeline creates and uses sfsync's tables like the fixture's user would
            conn.execute(f'CREATE ROLE "{self.role}" LOGIN SUPERUSER PASSWORD {_lit(password)}')
            row = conn.execute("SHOW hba_file").fetchone()
            assert row is not None
            self.hba_file = str(row[0])
            row = conn.execute("SELECT pg_read_file(%s)", (self.hba_file,)).fetchone()
            assert row is not None
            self.hba_before = str(row[0])
            lines = "".join(f"host all {self.role} {net} scram-sha-256\n" for net in ("127.0.0.1/32", "::1/128"))
            self._write_hba(conn, lines + self.hba_before)

    def _write_hba(self, conn: psycopg.Connection, text: str) -> None:
        row = conn.execute("SELECT lo_from_bytea(0, convert_to(%s, 'UTF8'))", (text,)).fetchone()
        assert row is not None
        conn.execute("SELECT lo_export(%s, %s)", (row[0], self.hba_file))
        conn.execute("SELECT lo_unlink(%s)", (row[0],))
        conn.execute("SELECT pg_reload_conf()")

    def set_password(self, password: str) -> None:
        with self.admin() as conn:
            conn.execute(f'ALTER ROLE "{self.role}" PASSWORD {_lit(password)}')

    def terminate(self, application_name: str) -> int:
        with self.admin() as conn:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s "
                                "AND application_name = %s", (self.role, application_name)).fetchall()
        return len(rows)

    def drop(self) -> None:
        with self.admin() as conn:
            if self.hba_file:
                self._write_hba(conn, self.hba_before)
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (self.role,))
            conn.execute(f'REASSIGN OWNED BY "{self.role}" TO CURRENT_USER')
            conn.execute(f'DROP OWNED BY "{self.role}"')
            conn.execute(f'DROP ROLE "{self.role}"')


def _lit(text: str) -> str:
    assert "'" not in text
    return f"'{text}'"


def _warm_up(p: Any) -> None:
    """One record each way, so both sinks' field version stores hold their connection before a password
    changes (they do not renew credentials themselves yet: only the sinks' own connections are tested)."""
    p.sf().Contact.create({"LastName": "warm-in"})
    with p.db() as conn:
        conn.execute("insert into contacts (first_name, last_name) values ('W', 'warm-out')")

    def both() -> bool:
        with p.db() as conn:
            local = conn.execute("select count(*) from contacts where last_name = 'warm-in' and sfid is not null"
                                 ).fetchone() == (1,)
        remote = p.sf().query_all("select Id from Contact where LastName = 'warm-out'")["totalSize"] == 1
        return local and remote

    p.wait_until(both, ARRIVE_S, "a warm-up record each way", interval=0.3)


@pytest.fixture(scope="module")
def running(pipeline_factory: Any, postgres_dsn: str) -> Iterator[tuple[Any, PasswordChecked]]:
    login = PasswordChecked(postgres_dsn)
    login.create("first-password")
    p = None
    try:
        p = pipeline_factory(overrides={"postgres": {"dsn": login.dsn("first-password")}})
        p.start(ROLES)
        p.wait_ready()
        _warm_up(p)
        yield p, login
    finally:
        with contextlib.suppress(Exception):
            p.emulator.control.config(password=PASSWORD)  # the session emulator, as it was
        if p is not None:
            p.stop()
        login.drop()


def test_postgres_password_changed_then_config_renewed(running: tuple[Any, PasswordChecked]) -> None:
    p, login = running
    sink_pid = p.roles.procs["postgres-sink"].pid
    relay_pid = p.roles.procs["postgres-producer"].pid
    login.set_password("second-password")
    assert login.terminate("sfsync-postgres-sink") >= 1  # the sink (and link-back's connection) reconnect
    assert login.terminate("sfsync-postgres-relay") == 1  # and the outbox relay
    p.sf().Contact.create({"LastName": "during-pg-outage"})

    p.wait_until(lambda: any(s == "open" for _, s, _ in _credential_alerts(p, PG_CAUSE)), ARRIVE_S,
                 "a postgres credential alert", interval=1.0)
    p.wait_until(lambda: any(s == "open" for _, s, _ in _credential_alerts(p, RELAY_CAUSE)), ARRIVE_S,
                 "the relay's credential alert", interval=1.0)
    with login.admin() as conn:
        conn.execute(f'set search_path to "{p.schema}"')
        assert conn.execute("select count(*) from contacts where last_name = 'during-pg-outage'").fetchone() == (0,)

    p.raw["postgres"]["dsn"] = login.dsn("second-password")
    _write_config(p)

    def arrived() -> bool:
        with p.db() as conn:
            return conn.execute("select count(*) from contacts where last_name = 'during-pg-outage'"
                                ).fetchone() == (1,)

    p.wait_until(arrived, ARRIVE_S, "the record written during the outage")
    p.wait_until(lambda: any(s == "resolved" for _, s, _ in _credential_alerts(p, PG_CAUSE)), ARRIVE_S,
                 "the postgres credential alert resolved", interval=1.0)
    alerts = _credential_alerts(p, PG_CAUSE)
    assert [s for _, s, _ in alerts] == ["open", "resolved"]
    assert "postgres" in alerts[0][2].lower() and "second-password" not in alerts[0][2]
    assert p.roles.procs["postgres-sink"].pid == sink_pid and p.roles.alive("postgres-sink")
    p.wait_until(lambda: any(s == "resolved" for _, s, _ in _credential_alerts(p, RELAY_CAUSE)), ARRIVE_S,
                 "the relay's credential alert resolved", interval=1.0)
    assert [s for _, s, _ in _credential_alerts(p, RELAY_CAUSE)] == ["open", "resolved"]
    assert p.roles.procs["postgres-producer"].pid == relay_pid and p.roles.alive("postgres-producer")
    log = p.roles.log_path("postgres-sink").read_text()
    assert "postgres credentials renewed" in log and "second-password" not in log


def test_salesforce_password_changed_then_config_renewed(running: tuple[Any, PasswordChecked]) -> None:
    p, _ = running
    sink_pid = p.roles.procs["salesforce-sink"].pid
    control = p.emulator.control
    control.config(password="rotated-in-salesforce")
    control.expire_sessions()
    with p.db() as conn:
        conn.execute("insert into contacts (first_name, last_name) values ('C', 'during-sf-outage')")

    p.wait_until(lambda: any(s == "open" for _, s, _ in _credential_alerts(p, SF_CAUSE)), ARRIVE_S,
                 "a salesforce credential alert", interval=1.0)
    rotated = dataclasses.replace(p.emulator, password="rotated-in-salesforce")

    def in_salesforce() -> int:
        soql = "select Id from Contact where LastName = 'during-sf-outage'"
        return len(rotated.salesforce().query_all(soql)["records"])

    assert in_salesforce() == 0
    p.raw["salesforce"]["auth"]["password"] = "rotated-in-salesforce"
    _write_config(p)

    p.wait_until(lambda: in_salesforce() == 1, ARRIVE_S, "the change made during the outage", interval=0.5)
    p.wait_until(lambda: any(s == "resolved" for _, s, _ in _credential_alerts(p, SF_CAUSE)), ARRIVE_S,
                 "the salesforce credential alert resolved", interval=1.0)
    assert [s for _, s, _ in _credential_alerts(p, SF_CAUSE)] == ["open", "resolved"]
    assert p.roles.procs["salesforce-sink"].pid == sink_pid and p.roles.alive("salesforce-sink")
    log = p.roles.log_path("salesforce-sink").read_text()
    assert "salesforce credentials renewed" in log and "rotated-in-salesforce" not in log
