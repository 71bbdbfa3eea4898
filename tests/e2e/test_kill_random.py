"""Randomized kill test: both directions at once, ``kill -9`` of a random role at a random moment, nothing lost.

200 records per object (Account, Contact), half created in Salesforce and half locally. Then ROUNDS
rounds: every record is changed on several fields, on one side each (picked at random per record and
round, so a field is never written on both sides at once: conflicts are another test's subject); a
random role (processor, either sink, either producer) is killed with SIGKILL at a random moment while
the changes flow, and started again. After each round, once the pipeline is quiet: every mapped field
is equal on both sides and equal to its last write, neither side holds a duplicate, the outbox is empty.

It runs on a broker of its own (the ``kafka_bootstrap`` fixture below; a named or Docker broker is shared
as usual): the embedded broker's cost per transaction grows with what a topic holds (docs/performance.md),
and after this test the session's broker slowed the processor-worker restart tests after it until one
hung in faust's group rejoin (since then a stuck join also restarts the worker: ``kafka.join_timeout_ms``).
The seed is printed (and in every failure
message, with the
history of the record that differs); ``SFSYNC_KILL_SEED=<seed>`` replays a run, e.g.
``SFSYNC_KILL_SEED=2028258776 python -m pytest -s tests/e2e/test_kill_random.py`` (the seed that found the
processor deciding changes out of order after a restart, and a replay re-sending an old value under a newer
version). A seed replays the writes, not the timing: a failure may need a few runs to come back.
Every value written is unique, so an old value coming back can never pass for the last write.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka_helpers import running_broker

ALL_ROLES = ["postgres-sink", "salesforce-sink", "processor", "postgres-producer", "salesforce-producer"]
PER_OBJECT = 200
ROUNDS = 5
QUIET_S = 180.0  # how long a round may take to converge at all (a hang guard, not a speed check)
#: object -> (table, {Salesforce field: local column}) of the fields the test changes
CHANGED = {
    "Account": ("accounts", {"Name": "name", "Phone": "phone", "Website": "website"}),
    "Contact": ("contacts", {"FirstName": "first_name", "Phone": "phone", "Title": "title"}),
}


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, docker_available: bool) -> Iterator[str]:
    """This module's own embedded broker (overrides the session's; ``pipeline_factory`` takes it): what the
    kill test leaves in the broker must not slow the tests after it (a broker named by
    ``SFSYNC_TEST_KAFKA`` is shared as usual)."""
    with running_broker(tmp_path_factory, docker_available, "kill-broker") as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(ALL_ROLES)
    p.wait_ready()
    return p


def sf_records(p: Any, obj: str) -> dict[str, dict[str, Any]]:
    fields = ", ".join(["Id", "LastName" if obj == "Contact" else "Name", *CHANGED[obj][1]])
    fields = ", ".join(dict.fromkeys(f.strip() for f in fields.split(",")))
    return {r["Id"]: r for r in p.sf().query_all(f"select {fields} from {obj}")["records"]}


def local_records(p: Any, obj: str) -> dict[str | None, dict[str, Any]]:
    table, columns = CHANGED[obj]
    with p.db() as conn:
        cur = conn.execute(f"select id, sfid, {', '.join(columns.values())} from {table}")
        names = [d.name for d in cur.description]
        return {row[1]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def create_initial(p: Any, rng: random.Random) -> None:
    sf = p.sf()
    for obj, (table, columns) in CHANGED.items():
        half = PER_OBJECT // 2
        for start in range(0, half, 200):
            records = [{"attributes": {"type": obj}, **({"LastName": f"sf-{i}"} if obj == "Contact" else {}),
                        **{f: f"{f}-init-sf-{i}" for f in columns}} for i in range(start, min(start + 200, half))]
            answer = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
            assert all(r["success"] for r in answer), answer
        cols = list(columns.values()) + (["last_name"] if obj == "Contact" else [])
        with p.db() as conn, conn.transaction():
            for i in range(half):
                values = [f"{f}-init-local-{i}" for f in columns] + ([f"local-{i}"] if obj == "Contact" else [])
                conn.execute(f"insert into {table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})",
                             values)


def converged(p: Any, expected: dict[str, dict[str, dict[str, str]]] | None) -> str | None:
    """``None`` when both sides hold exactly ``expected`` (or, with ``None``, when every record is linked and
    equal on both sides); else what still differs."""
    with p.db() as conn:
        pending = conn.execute(f"select count(*) from {p.cfg.postgres.outbox_table}").fetchone()[0]
    if pending:
        return f"{pending} outbox rows pending"
    for obj, (_table, columns) in CHANGED.items():
        remote, local = sf_records(p, obj), local_records(p, obj)
        if len(remote) != PER_OBJECT or len(local) != PER_OBJECT or None in local:
            return f"{obj}: {len(remote)} in Salesforce, {len(local)} local ({int(None in local)} unlinked)"
        if set(remote) != set(local):
            return f"{obj}: different ids on the two sides ({len(set(remote) ^ set(local))})"
        for sfid, rec in remote.items():
            for field, column in columns.items():
                want = expected[obj][sfid][field] if expected else rec[field]
                if rec[field] != want or local[sfid][column] != want:
                    return f"{obj} {sfid}.{field}: Salesforce {rec[field]!r}, local {local[sfid][column]!r}, " \
                           f"last write {want!r}"
    return None


def wait_quiet(p: Any, expected: Any, what: str, seed: int) -> None:
    deadline = time.monotonic() + QUIET_S
    diff = converged(p, expected)
    while diff is not None and time.monotonic() < deadline:
        time.sleep(1.0)
        p.roles.restart_dead()  # a supervisor's job (Kubernetes, sfsync dev): a role that stopped itself
        diff = converged(p, expected)
    assert diff is None, f"seed {seed}: {what} never converged: {diff}\n{history(p, diff)}\n{p.logs()}"


def history(p: Any, diff: str) -> str:
    """Every message about the record ``diff`` names, per topic in offset order: what to read first when a
    seed fails (the change events, the commands, the processor's state entries, dead letters)."""
    import re

    from sfsync.kafka.topics import TopicNames
    from sfsync.records import ApplyCommand, ChangeEvent
    from sfsync.serde import Serde

    found = re.match(r"(\w+) (\w{18})\.", diff)
    if not found:
        return ""
    obj, sfid = found.groups()
    table = CHANGED[obj][0]
    with p.db() as conn:
        row = conn.execute(f"select id from {table} where sfid = %s", [sfid]).fetchone()
    keys = {f"{obj}:{sfid}".encode()} | ({f"{obj}:local:{row[0]}".encode()} if row else set())
    names, serde = TopicNames(p.cfg.kafka.topic_prefix), Serde()
    topics = [(names.changes_inbound, ChangeEvent), (names.changes_outbound, ChangeEvent),
              (names.apply_local, ApplyCommand), (names.apply_salesforce, ApplyCommand),
              (f"{names.processor_group}-records-changelog", None),
              (names.dlq("postgres"), None), (names.dlq("salesforce"), None)]
    lines = [f"history of {sorted(keys)}:"]
    for topic, kind in topics:
        for m in p.read_topic(topic):
            if m.key() not in keys:
                continue
            value: Any = m.value()
            if kind is not None and value:
                value = {k: v for k, v in serde.decode(value, kind, topic).to_avro().items() if v not in (None, [], {})}
            lines.append(f"  {topic}[{m.partition()}]@{m.offset()} {m.key()!r}: {value}")
    return "\n".join(lines)


def write_round(p: Any, rnd: int, rng: random.Random, expected: dict[str, dict[str, dict[str, str]]]) -> None:
    sf = p.sf()
    for obj, (table, columns) in CHANGED.items():
        remote_updates: list[dict[str, Any]] = []
        local_updates: list[tuple[str, dict[str, str]]] = []
        for sfid in sorted(expected[obj]):
            fields = rng.sample(sorted(columns), rng.randint(2, len(columns)))
            values = {f: f"{f}-r{rnd}-{rng.getrandbits(32):08x}" for f in fields}
            expected[obj][sfid].update(values)
            if rng.random() < 0.5:
                remote_updates.append({"attributes": {"type": obj}, "id": sfid, **values})
            else:
                local_updates.append((sfid, {columns[f]: v for f, v in values.items()}))
        for start in range(0, len(remote_updates), 200):
            answer = sf.restful("composite/sobjects", method="PATCH",
                                json={"allOrNone": True, "records": remote_updates[start:start + 200]})
            assert all(r["success"] for r in answer), answer
        with p.db() as conn:
            for sfid, values in local_updates:
                sets = ", ".join(f"{c} = %s" for c in values)
                conn.execute(f"update {table} set {sets} where sfid = %s", [*values.values(), sfid])


def test_random_kills_lose_nothing_in_either_direction(pipeline: Any) -> None:
    seed = int(os.environ.get("SFSYNC_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"randomized kill test: SFSYNC_KILL_SEED={seed}")
    rng = random.Random(seed)
    create_initial(pipeline, rng)
    wait_quiet(pipeline, None, "the initial 2 x 200 records", seed)
    expected = {obj: {sfid: {f: rec[f] for f in CHANGED[obj][1]} for sfid, rec in sf_records(pipeline, obj).items()}
                for obj in CHANGED}
    kills: list[str] = []
    for rnd in range(1, ROUNDS + 1):
        victim = rng.choice(ALL_ROLES)
        delay = rng.uniform(0.0, 0.6)  # a round's changes flow for about a second: kill while they do
        kills.append(f"round {rnd}: {victim} after {delay:.2f} s")

        # the writes run in a thread; the kill and the restart in this one: a child started from a thread
        # gets its parent-death signal when that thread ends (PR_SET_PDEATHSIG follows the thread)
        changes = rng.getrandbits(64)
        writer = threading.Thread(target=write_round, args=(pipeline, rnd, random.Random(changes), expected))
        writer.start()
        time.sleep(delay)
        pipeline.roles.kill(victim, signal.SIGKILL)
        pipeline.roles.start(victim)
        writer.join(120)
        assert not writer.is_alive()
        wait_quiet(pipeline, expected, f"round {rnd} ({'; '.join(kills)})", seed)
