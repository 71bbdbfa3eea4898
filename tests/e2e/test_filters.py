"""Record filters end to end (issue 13), every role as its own process, both directions at once.

Acceptance: records outside the filter never reach the other side, ``sfsync status`` counts them as filtered
per direction, and a blacklisted domain is never created on either side. Also: each filtered record's status
names the rule that kept it out, and a linked record that stops matching is left alone on the other side (the
one behaviour there is, docs/mapping.md).

One module-scoped world: the Contact records are made once (:func:`world`) and waited for until every
arrival and every filtered status is there; the tests then read what arrived, by content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from sfsync.cli import app
from sfsync.operations.status import read_statuses
from sfsync.records import Direction, RecordStatus, SyncState

ROLES = ["salesforce-sink", "postgres-sink", "processor", "postgres-producer", "salesforce-producer"]
ARRIVE_S = 60.0  # how long to wait for an arrival at all (a hang guard, not a speed bound)
ZONE = "Asia/Kathmandu"  # UTC+05:45: "today" is this zone's day, not UTC's
FILTERS = {
    "to_local": "Email != null and not Email endswith '@example.org'",
    "to_salesforce": "email != null and not email endswith '@internal.test'",
    "exclude_domains": ["blocked.test"],
}
RULE = "objects.Contact.filters."

# Salesforce-created contacts: LastName -> (Email, the rule that keeps it out, or None when it syncs)
SF_CONTACTS: dict[str, tuple[str | None, str | None]] = {
    "In SF": ("in.sf@match.test", None),
    "Out SF": ("out.sf@example.org", "to_local"),
    "No email SF": (None, "to_local"),
    "Blocked SF": ("x@blocked.test", "exclude_domains"),
    "Blocked sub SF": ("y@Mail.Blocked.TEST", "exclude_domains"),  # a subdomain, any case
    "Leaves SF": ("leaves.sf@match.test", None),  # syncs, then stops matching (LEAVES)
    "Returns SF": ("returns.sf@match.test", None),  # syncs, stops matching, then matches again (RETURNS)
}
# local rows: last_name -> (email, rule or None)
LOCAL_CONTACTS: dict[str, tuple[str | None, str | None]] = {
    "In local": ("in.local@match.test", None),
    "Out local": ("out.local@internal.test", "to_salesforce"),
    "No email local": (None, "to_salesforce"),
    "Blocked local": ("z@blocked.test", "exclude_domains"),
    "Leaves local": ("leaves.local@match.test", None),
    "Returns local": ("returns.local@match.test", None),
}
# linked records that stop matching: name -> (its direction, new last name, new email, the rule)
LEAVES: dict[str, tuple[Direction, str, str | None, str]] = {
    "Leaves SF": (Direction.INBOUND, "Left SF", "leaves.sf@blocked.test", "exclude_domains"),
    "Returns SF": (Direction.INBOUND, "Gone SF", "returns.sf@blocked.test", "exclude_domains"),
    "Leaves local": (Direction.OUTBOUND, "Left local", None, "to_salesforce"),
    "Returns local": (Direction.OUTBOUND, "Gone local", None, "to_salesforce"),
}
# ... and then match again by a change of the email alone: name -> new email
RETURNS = {"Returns SF": "back.sf@match.test", "Returns local": "back.local@match.test"}


@dataclass
class World:
    p: Any
    sfids: dict[str, str] = field(default_factory=dict)  # Salesforce-created: LastName -> Id
    keys: dict[str, str] = field(default_factory=dict)  # locally created: last_name -> id
    decided: dict[tuple[Direction, str], RecordStatus] = field(default_factory=dict)  # (direction, name)


def local_contacts(p: Any) -> dict[str, tuple[Any, ...]]:
    """last_name -> (id, sfid, email) of every local contact."""
    with p.db() as conn:
        rows = conn.execute("select last_name, id, sfid, email from contacts").fetchall()
    assert len({r[0] for r in rows}) == len(rows), rows
    return {r[0]: (str(r[1]), r[2], r[3]) for r in rows}


def sf_contacts(p: Any) -> dict[str, dict[str, Any]]:
    """LastName -> record of every Salesforce contact."""
    records = p.sf().query_all("select Id, LastName, Email, Local_Id__c from Contact")["records"]
    assert len({r["LastName"] for r in records}) == len(records), records
    return {r["LastName"]: dict(r) for r in records}


DECIDED = (SyncState.FILTERED, SyncState.SUCCESS, SyncState.FAILED)


def decisions(w: World, wanted: dict[tuple[Direction, str], str], since: datetime | None
              ) -> dict[tuple[Direction, str], RecordStatus]:
    """(direction, name) -> the record's latest status in that direction once the pipeline decided it (filtered,
    or written by a sink), at or after ``since``; ``wanted``: (direction, name) -> the record's id."""
    out = {}
    for s in read_statuses(w.p.cfg, timeout=10):
        if s.object != "Contact" or s.state not in DECIDED or (since and (s.last_attempt_ts or since) < since):
            continue
        for (direction, name), ident in wanted.items():
            if s.direction is direction and (ident in (s.sfid, s.local_key) or s.key.endswith(f":{ident}")):
                out[(direction, name)] = s
    return out


def wait_decided(w: World, wanted: dict[tuple[Direction, str], str], what: str, since: datetime | None = None
                 ) -> None:
    """Until every record of ``wanted`` has a decided status (a hang guard; the tests say which is right)."""
    seen: dict[tuple[Direction, str], RecordStatus] = {}

    def complete() -> bool:
        seen.clear()
        seen.update(decisions(w, wanted, since))
        return len(seen) == len(wanted)

    try:
        w.p.wait_until(complete, ARRIVE_S, what, interval=0.5)
    except AssertionError as e:
        states = [(s.direction.value, s.key, s.state.value, s.last_error) for s in read_statuses(w.p.cfg)]
        raise AssertionError(f"undecided {sorted(set(wanted) - set(seen))}; statuses {states}") from e
    w.decided.update(seen)


@pytest.fixture(scope="module")
def world(pipeline_factory: Any) -> World:
    p = pipeline_factory(overrides={"operations": {"time_zone": ZONE}})
    p.raw["objects"]["Contact"]["filters"] = FILTERS
    p.rewrite_config()
    p.start(ROLES)
    p.wait_ready()
    w = World(p)
    sf = p.sf()
    for name, (email, _) in SF_CONTACTS.items():
        w.sfids[name] = sf.Contact.create({"LastName": name, **({"Email": email} if email else {})})["id"]
    with p.db() as conn:
        for name, (email, _) in LOCAL_CONTACTS.items():
            w.keys[name] = str(conn.execute("insert into contacts (last_name, email) values (%s, %s) returning id",
                                            [name, email]).fetchone()[0])
    # what syncs arrives (and is linked) ...
    p.wait_until(lambda: all(local_contacts(p).get(n, (None, None))[1] == w.sfids[n]
                             for n, (_, rule) in SF_CONTACTS.items() if rule is None), ARRIVE_S,
                 "the matching Salesforce contacts locally", interval=0.3)
    p.wait_until(lambda: all(local_contacts(p)[n][1] for n, (_, rule) in LOCAL_CONTACTS.items() if rule is None),
                 ARRIVE_S, "the matching local contacts in Salesforce (linked)", interval=0.3)
    # ... and every other record has the pipeline's decision on record
    wait_decided(w, {**{(Direction.INBOUND, n): w.sfids[n] for n, (_, r) in SF_CONTACTS.items() if r},
                     **{(Direction.OUTBOUND, n): w.keys[n] for n, (_, r) in LOCAL_CONTACTS.items() if r}},
                 "a status for every record outside the filters")
    # linked records on each side stop matching (the other side keeps them) ...
    since = datetime.now(UTC)
    for name, (direction, new_name, email, _) in LEAVES.items():
        if direction is Direction.INBOUND:
            sf.Contact.update(w.sfids[name], {"LastName": new_name, "Email": email})
        else:
            with p.db() as conn:
                conn.execute("update contacts set last_name = %s, email = %s where id = %s",
                             [new_name, email, w.keys[name]])
    wait_decided(w, {(d, n): w.sfids.get(n) or w.keys[n] for n, (d, *_) in LEAVES.items()},
                 "a new status for each linked record that stopped matching", since)
    # ... and two of them match again
    since = datetime.now(UTC)
    sf.Contact.update(w.sfids["Returns SF"], {"Email": RETURNS["Returns SF"]})
    with p.db() as conn:
        conn.execute("update contacts set email = %s where id = %s",
                     [RETURNS["Returns local"], w.keys["Returns local"]])
    p.wait_until(lambda: local_contacts(p)["Returns SF"][2] == RETURNS["Returns SF"], ARRIVE_S,
                 "the Salesforce contact that matches again, locally", interval=0.3)
    p.wait_until(lambda: sf_contacts(p)["Returns local"]["Email"] == RETURNS["Returns local"], ARRIVE_S,
                 "the local row that matches again, in Salesforce", interval=0.3)
    wait_decided(w, {(LEAVES[n][0], n): w.sfids.get(n) or w.keys[n] for n in RETURNS},
                 "a new status for each record that matches again", since)
    return w


def cli_json(w: World, *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--json", "--config", str(w.p.config_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_records_outside_the_filters_never_reach_the_other_side(world: World) -> None:
    local, remote = local_contacts(world.p), sf_contacts(world.p)
    # local: every row created here (as it is now), plus exactly the Salesforce contacts that matched
    assert set(local) == {"In SF", "Leaves SF", "Returns SF",
                          "In local", "Out local", "No email local", "Blocked local", "Left local", "Gone local"}
    assert local["In SF"][1:] == (world.sfids["In SF"], "in.sf@match.test")
    # Salesforce: every contact created there (as it is now), plus exactly the local rows that matched
    assert set(remote) == {"In SF", "Out SF", "No email SF", "Blocked SF", "Blocked sub SF", "Left SF", "Gone SF",
                           "In local", "Leaves local", "Returns local"}
    assert (remote["In local"]["Email"], remote["In local"]["Local_Id__c"]) == ("in.local@match.test",
                                                                               world.keys["In local"])
    # rows created locally and kept out were never linked to anything
    assert all(local[n][1] is None for n in ("No email local", "Out local", "Blocked local"))


def test_a_blacklisted_domain_is_on_neither_side_except_where_it_was_written(world: World) -> None:
    blocked_local = {n for n, (_, _, email) in local_contacts(world.p).items() if email and "blocked.test" in email}
    blocked_sf = {n for n, r in sf_contacts(world.p).items() if r["Email"] and "blocked.test" in r["Email"].lower()}
    assert blocked_local == {"Blocked local"}
    assert blocked_sf == {"Blocked SF", "Blocked sub SF", "Left SF"}


def test_a_linked_record_that_stops_matching_is_left_alone_on_the_other_side(world: World) -> None:
    local, remote = local_contacts(world.p), sf_contacts(world.p)
    # the local copy of the Salesforce contact keeps its last synced values and its link: not deleted, not unlinked
    assert local["Leaves SF"][1:] == (world.sfids["Leaves SF"], "leaves.sf@match.test")
    # the Salesforce copy of the local row likewise
    leaves = remote["Leaves local"]
    assert (leaves["Email"], leaves["Local_Id__c"]) == ("leaves.local@match.test", world.keys["Leaves local"])
    assert local["Left local"][1] == leaves["Id"]


def test_a_record_that_matches_again_sends_that_change_only(world: World) -> None:
    local, remote = local_contacts(world.p), sf_contacts(world.p)
    # the email change that made it match arrived; the name changed while it was out did not (docs/mapping.md)
    assert local["Returns SF"][1:] == (world.sfids["Returns SF"], RETURNS["Returns SF"]) and "Gone SF" not in local
    back = remote["Returns local"]
    assert (back["Email"], back["Local_Id__c"]) == (RETURNS["Returns local"], world.keys["Returns local"])
    assert local["Gone local"][1] == back["Id"] and "Gone local" not in remote
    assert world.decided[(Direction.INBOUND, "Returns SF")].state is SyncState.SUCCESS
    assert world.decided[(Direction.OUTBOUND, "Returns local")].state is SyncState.SUCCESS


def expected_rules() -> dict[tuple[Direction, str], str]:
    """(direction, name) -> the rule of every record whose latest state is filtered."""
    rules = {(d, n): rule for d, contacts in ((Direction.INBOUND, SF_CONTACTS), (Direction.OUTBOUND, LOCAL_CONTACTS))
             for n, (_, rule) in contacts.items() if rule}
    rules.update({(d, n): rule for n, (d, _, _, rule) in LEAVES.items() if n not in RETURNS})
    return rules


def test_status_counts_the_filtered_records_per_direction(world: World) -> None:
    summary = {d["direction"]: d for d in cli_json(world, "status")["directions"]}
    today = datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date().isoformat()
    rules = expected_rules()
    for direction in Direction:
        counts = summary[direction.value]["today"]
        want = sum(1 for d, _ in rules if d is direction)
        assert (counts["day"], counts["time_zone"], counts["filtered"]) == (today, ZONE, want), summary
        assert counts["success"] >= 1 and counts["failed"] == 0, summary
    text = CliRunner().invoke(app, ["status", "--config", str(world.p.config_path)], env={"COLUMNS": "300"})
    assert text.exit_code == 0 and "today filtered" in text.output, text.output


def test_each_filtered_record_names_the_rule_that_kept_it_out(world: World) -> None:
    rules = expected_rules()
    rows = cli_json(world, "queue", "--state", "filtered", "--object", "Contact", "--limit", "1000")
    by_id = {(r["direction"], r["record_id"]): r for r in rows}
    assert len(rows) == len(rules), rows
    for (direction, name), rule in rules.items():
        status = world.decided[(direction, name)]
        assert status.state is SyncState.FILTERED, (name, status)
        row = by_id[(direction.value, status.sfid or status.local_key or status.key)]
        assert row["sync_status"] == "filtered" and row["last_error"].endswith(f"({RULE}{rule})"), row
