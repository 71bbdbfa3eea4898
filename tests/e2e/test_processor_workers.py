"""Two processor workers share the records; one is killed mid-stream; every record arrives once.

Issue 14: the processor must scale out on any broker, the embedded one included. Both workers run in
one consumer group over both change topics; faust assigns each the same partition numbers of both (the
topics are co-partitioned: one partitioner, one partition count), and each output goes to the partition
number of its key, which is the input's: so every output partition has one writer at a time. While 150
contacts are created on each side (in chunks, for about 1.5 s), one of the two workers is killed with
SIGKILL and not restarted: the
survivor takes its partitions over (from their committed offsets and the changelog of the ``records``
table). Once quiet, each side holds all 300 contacts, each exactly once, linked and equal.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from typing import Any

import pytest

ROLES = ["postgres-sink", "salesforce-sink", "processor", "processor#2", "postgres-producer",
         "salesforce-producer"]
PER_SIDE = 150
CHUNK = 25  # records per call/transaction; a pause between chunks keeps changes flowing past the kill
QUIET_S = 180.0  # a hang guard, not a speed check


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: Any) -> Any:
    p = pipeline_factory()
    p.start(ROLES)
    p.wait_ready()
    return p


def assigned(p: Any, worker: str) -> int:
    """How many partitions the worker's ``/readyz`` says it holds (changes and changelog topics)."""
    report = p.roles.readiness(worker)
    found = re.search(r"(\d+) partition", report["checks"]["group"]["detail"]) if report else None
    return int(found.group(1)) if found else 0


def create_both_sides(p: Any) -> None:
    sf = p.sf()
    for start in range(0, PER_SIDE, CHUNK):  # ~1.5 s of changes: the kill lands while they flow
        time.sleep(0.25)
        records = [{"attributes": {"type": "Contact"}, "LastName": f"remote-{i}", "Title": f"t-remote-{i}"}
                   for i in range(start, start + CHUNK)]
        answer = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
        assert all(r["success"] for r in answer), answer
        with p.db() as conn, conn.transaction():
            for i in range(start, start + CHUNK):
                conn.execute("insert into contacts (last_name, title) values (%s, %s)", [f"local-{i}", f"t-local-{i}"])


def both_sides(p: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str | None, str, str]]]:
    remote = [(r["Id"], r["LastName"], r["Title"])
              for r in p.sf().query_all("select Id, LastName, Title from Contact")["records"]]
    with p.db() as conn:
        local = [(r[0], r[1], r[2]) for r in conn.execute("select sfid, last_name, title from contacts")]
    return remote, local


def test_two_workers_one_killed_mid_stream_deliver_every_record_once(pipeline: Any) -> None:
    p = pipeline
    shares = {w: assigned(p, w) for w in ("processor", "processor#2")}
    assert all(shares.values()), f"both workers must hold partitions before the kill: {shares}"
    victim = random.choice(sorted(shares))
    writer = threading.Thread(target=create_both_sides, args=(p,))
    writer.start()
    time.sleep(random.uniform(0.2, 0.8))
    p.roles.kill(victim, signal.SIGKILL)
    assert writer.is_alive(), "the kill came after the last change: nothing would be taken over"
    writer.join(120)
    assert not writer.is_alive()

    want = sorted([f"remote-{i}" for i in range(PER_SIDE)] + [f"local-{i}" for i in range(PER_SIDE)])
    deadline = time.monotonic() + QUIET_S
    while True:
        remote, local = both_sides(p)
        done = (sorted(r[1] for r in remote) == want and sorted(r[1] for r in local) == want
                and all(r[0] for r in local))
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    # every record once on each side (a duplicate shows as a repeated name), linked, with its values
    assert sorted(r[1] for r in remote) == want, f"Salesforce after killing {victim}\n{p.logs()}"
    assert sorted(r[1] for r in local) == want, f"PostgreSQL after killing {victim}\n{p.logs()}"
    assert sorted(local) == sorted(remote), f"the two sides differ after killing {victim}"
    assert all(title == f"t-{name}" for _id, name, title in remote)
    survivor = "processor#2" if victim == "processor" else "processor"
    assert not p.roles.alive(victim) and assigned(p, survivor) > shares[survivor], "the survivor took nothing over"
