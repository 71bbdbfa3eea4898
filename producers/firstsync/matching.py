"""Which unlinked records of a first sync are the same record. Pure functions, no I/O.

A first sync meets two datasets that grew apart: local rows with no Salesforce id and Salesforce records
with no local key in their external id field. Creating each on the other side would duplicate every record
both sides already hold, so they are matched on the object's ``match_key`` first.

Contract (:func:`plan_first_sync`):

- A record's match value is the tuple of its match-key fields, each compared case- and
  whitespace-insensitively (:func:`normalize`: every whitespace character removed, then casefolded). A
  record with any key field empty has no match value: it matches nothing and is created on the other side.
- Per match value with ``L`` local and ``R`` Salesforce candidates:

  - ``L == 1 and R == 1``: a **link** (each is the other's only candidate);
  - ``L >= 1 and R >= 1`` otherwise: **ambiguous** — none of them is linked or copied, the group is
    reported with every candidate (a silent pick could merge two people);
  - ``R == 0``: each local row is **local only** (created in Salesforce);
  - ``L == 0``: each Salesforce record is **Salesforce only** (created locally).

- The plan is deterministic: every list is ordered by match value, then key, whatever the input order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MatchValue = tuple[str, ...]


def normalize(value: Any) -> str:
    """The comparable form of one key field: no whitespace anywhere, casefolded (``" A@B.com "`` and
    ``"a@b.COM"`` are equal); ``""`` for ``None``."""
    if value is None:
        return ""
    return "".join(str(value).split()).casefold()


def match_value(values: Sequence[Any]) -> MatchValue | None:
    """The record's match value, or ``None`` when any key field is empty or there is no key (such a record
    matches nothing)."""
    out = tuple(normalize(v) for v in values)
    return None if not out or any(part == "" for part in out) else out


@dataclass(frozen=True, slots=True)
class Candidate:
    """One unlinked record on either side: its key (local key or Salesforce id) and its key field values."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Link:
    """A pair to link: the local row ``local_key`` is Salesforce record ``sfid``."""

    local_key: str
    sfid: str
    match: MatchValue


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """A match value with several candidates on at least one side: nothing of it is linked or copied."""

    match: MatchValue
    local_keys: tuple[str, ...]
    sfids: tuple[str, ...]

    def describe(self, fields: Sequence[str]) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self.match, strict=True))
        return (f"ambiguous match on {shown}: {len(self.local_keys)} local row(s) "
                f"[{', '.join(self.local_keys)}] and {len(self.sfids)} Salesforce record(s) "
                f"[{', '.join(self.sfids)}]; none is linked or copied until the key values are made unique")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a first sync does with each unlinked record (see the module docstring)."""

    links: list[Link] = field(default_factory=list)
    ambiguous: list[Ambiguous] = field(default_factory=list)
    local_only: list[str] = field(default_factory=list)
    salesforce_only: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "linked": len(self.links),
            "ambiguous_groups": len(self.ambiguous),
            "ambiguous_local": sum(len(a.local_keys) for a in self.ambiguous),
            "ambiguous_salesforce": sum(len(a.sfids) for a in self.ambiguous),
            "local_only": len(self.local_only),
            "salesforce_only": len(self.salesforce_only),
        }


def _group(candidates: Iterable[Candidate], loose: list[str]) -> Mapping[MatchValue, list[str]]:
    groups: dict[MatchValue, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for c in candidates:
        if c.key in seen:
            raise ValueError(f"candidate key {c.key!r} appears twice")
        seen.add(c.key)
        value = match_value(c.values)
        if value is None:
            loose.append(c.key)
        else:
            groups[value].append(c.key)
    return groups


def plan_first_sync(local: Iterable[Candidate], remote: Iterable[Candidate]) -> Plan:
    """The first-sync plan of one object's unlinked records (see the module docstring).

    Raises ``ValueError`` when a key appears twice on one side.
    """
    local_loose: list[str] = []
    remote_loose: list[str] = []
    by_local = _group(local, local_loose)
    by_remote = _group(remote, remote_loose)
    plan = Plan(local_only=local_loose, salesforce_only=remote_loose)
    for value in sorted(set(by_local) | set(by_remote)):
        here = sorted(by_local.get(value, ()))
        there = sorted(by_remote.get(value, ()))
        if not there:
            plan.local_only.extend(here)
        elif not here:
            plan.salesforce_only.extend(there)
        elif len(here) == 1 and len(there) == 1:
            plan.links.append(Link(here[0], there[0], value))
        else:
            plan.ambiguous.append(Ambiguous(value, tuple(here), tuple(there)))
    plan.local_only.sort()
    plan.salesforce_only.sort()
    return plan
