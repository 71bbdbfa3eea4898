"""Parent fields inbound: a mapped field ``Owner.Name`` reads the ``Name`` of the record ``OwnerId`` points to.

Why here: a CDC event carries the reference (``OwnerId``), never the parent's values, and Salesforce sends no
event on a child when its parent changes. The producer is the one place that sees both the child's change and
(when the parent object is captured too) the parent's, and already talks to Salesforce; so it resolves the
path and the envelope carries ``Owner.Name`` like any other field. The processor maps it as it maps any field
(the key is the dotted path); it flows one way, Salesforce to local (``direction: to_local``, enforced by the
config).

Contract:

- :func:`parent_paths` reads each mapped object's describe: a field ``Rel.Field`` of object ``C`` names the
  relationship ``Rel`` (the describe's ``relationshipName``, case-insensitive) of a reference field with one
  ``referenceTo`` object. Paths it cannot resolve (unknown or polymorphic relationship) are left out:
  ``mapping check`` reports them and every role refuses to start on them.
- :func:`needs_parent` decides which envelopes are resolved: ``create``, ``undelete`` and ``snapshot`` (the
  record is read whole: gap repair, catch-up) always, an ``update`` when it changes the reference field;
  a ``delete`` never. :func:`parent_ids` lists the parent ids they point to; :func:`merge` adds the paths'
  values (``None`` for an empty reference or a parent Salesforce does not return) to ``values`` and
  ``changed_fields``.
- :class:`ParentCache` holds the looked-up fields per parent id (bounded LRU): a parent seen once is not
  queried again until it changes (an event of the captured parent object) or falls out of the cache.
- When the parent object is captured too (an ``objects`` entry), :func:`touched_paths` says which paths a
  parent ``update`` may have changed (the field itself, or a component such as ``LastName`` of ``Name``);
  the producer re-reads those parents, and for each whose value differs from the cache re-emits an
  ``update`` of the path for every child that points to it (:func:`child_updates`; one query per 200 changed
  parents, at most ``max_children`` children each; more are logged and left for the next change or re-read).
- The queries (:func:`parent_query`, :func:`children_query`) quote every id with
  :func:`~sfsync.salesforce.soql.soql_string` and read at most :data:`IDS_PER_QUERY` ids each.
- :class:`ParentFields` is the thin adapter the CDC producer calls; everything above is pure.

Limits (docs/mapping.md, "Parent fields"): one level (``Account.Owner.Name`` is refused by the config);
polymorphic relationships (``Owner`` on Case and Lead in a real org: User or Group, ``What``/``Who``) are
refused by ``mapping check``; a parent that is not captured is re-read only when the child's reference
changes or the child is re-read, so its later changes reach the child's column on the child's next
resolving event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sfsync.config import ObjectMapping
from sfsync.records import ChangeEvent, FieldPyValue, Operation, Source
from sfsync.salesforce.soql import soql_string
from sfsync.salesforce.values import ObjectTypes, canonical_sfid, typed_value

log = logging.getLogger("sfsync.producers.salesforce.parents")

#: Ids per ``IN (...)`` list (as :data:`producers.salesforce.events.IDS_PER_QUERY`: URLs stay short).
IDS_PER_QUERY = 200
#: Parents whose looked-up fields are remembered.
CACHE_SIZE = 10_000
#: Children re-emitted per parent event at most (a user owning 100,000 contacts must not flood the topic).
MAX_CHILDREN = 2_000
#: Components of a person's ``Name`` (CDC reports ``Name.LastName``, flattened to ``LastName``).
NAME_PARTS = frozenset({"FirstName", "LastName", "MiddleName", "Salutation", "Suffix"})
#: Operations that carry the whole record: its parent fields are resolved whatever changed.
WHOLE = frozenset({Operation.CREATE, Operation.UNDELETE, Operation.SNAPSHOT})


def split_path(name: str) -> tuple[str, str] | None:
    """``Owner.Name`` -> ``("Owner", "Name")``; ``None`` for a plain field name."""
    rel, dot, field = name.partition(".")
    return (rel, field) if dot and rel and field else None


def reference_field_guess(relationship: str) -> str:
    """The reference field Salesforce's naming gives a relationship: ``Owner`` -> ``OwnerId``,
    ``Region__r`` -> ``Region__c`` (what gap and catch-up queries read when no describe says otherwise)."""
    return relationship[:-3] + "__c" if relationship.endswith("__r") else relationship + "Id"


@dataclass(frozen=True, slots=True)
class ParentPath:
    """One mapped parent field: ``child.path`` = ``parent.parent_field`` of the record ``reference_field`` names."""

    child: str
    path: str
    reference_field: str
    parent: str
    parent_field: str


def parent_paths(objects: Mapping[str, ObjectMapping],
                 describes: Mapping[str, Mapping[str, Any]]) -> dict[str, list[ParentPath]]:
    """The resolvable parent paths per mapped object (see module contract); objects without one are absent."""
    out: dict[str, list[ParentPath]] = {}
    for child, mapping in objects.items():
        doc = describes.get(child)
        if doc is None:
            continue
        by_rel = {str(f["relationshipName"]).lower(): f for f in doc.get("fields") or ()
                  if f.get("relationshipName")}
        for fm in mapping.fields:
            split = split_path(fm.field)
            if split is None:
                continue
            ref = by_rel.get(split[0].lower())
            targets = list((ref or {}).get("referenceTo") or ())
            if ref is None or len(targets) != 1:
                continue
            out.setdefault(child, []).append(ParentPath(child, fm.field, str(ref["name"]), str(targets[0]),
                                                        split[1]))
    return out


def needs_parent(event: ChangeEvent, path: ParentPath) -> bool:
    """Whether ``event`` gets ``path`` resolved: a whole record, or an update of the reference field."""
    if event.object != path.child or event.sfid is None:
        return False
    if event.operation in WHOLE:
        return True
    return event.operation is Operation.UPDATE and path.reference_field in event.changed_fields


def _ref(event: ChangeEvent, path: ParentPath) -> str | None:
    value = event.values.get(path.reference_field)
    return canonical_sfid(str(value)) if value not in (None, "") else None


def parent_ids(events: Iterable[ChangeEvent], paths: Sequence[ParentPath]) -> dict[str, set[str]]:
    """The parent ids each parent object must be known for, to resolve ``events`` (empty references left out)."""
    out: dict[str, set[str]] = {}
    for ev in events:
        for p in paths:
            if needs_parent(ev, p) and (ref := _ref(ev, p)) is not None:
                out.setdefault(p.parent, set()).add(ref)
    return out


ParentValues = Mapping[str, FieldPyValue]


def merge(events: Sequence[ChangeEvent], paths: Sequence[ParentPath],
          known: Mapping[tuple[str, str], ParentValues]) -> list[ChangeEvent]:
    """``events`` with the values of the paths they need (``known``: (parent object, id) -> field -> value;
    a missing parent or empty reference gives ``None``); the others unchanged."""
    out: list[ChangeEvent] = []
    for ev in events:
        added: dict[str, FieldPyValue] = {}
        for p in paths:
            if not needs_parent(ev, p):
                continue
            ref = _ref(ev, p)
            found = known.get((p.parent, ref)) if ref is not None else None
            added[p.path] = None if found is None else found.get(p.parent_field)
        if not added:
            out.append(ev)
            continue
        changed = list(ev.changed_fields) + [k for k in added if k not in ev.changed_fields]
        out.append(replace(ev, values={**ev.values, **added}, changed_fields=changed))
    return out


def touched_paths(event: ChangeEvent, paths: Iterable[ParentPath],
                  types: ObjectTypes | None = None) -> list[ParentPath]:
    """The paths whose parent field an update of a parent record may have changed: the field itself or one
    of its components (a compound's members by the describe; a person ``Name``'s parts)."""
    if event.operation is not Operation.UPDATE:
        return []
    changed = set(event.changed_fields)
    out: list[ParentPath] = []
    for p in paths:
        if p.parent != event.object:
            continue
        parts = {p.parent_field}
        if types is not None:
            parts |= set(types.compounds.get(p.parent_field, {}).values())
        if p.parent_field == "Name":
            parts |= NAME_PARTS
        if parts & changed:
            out.append(p)
    return out


def parent_query(parent: str, fields: Iterable[str], ids: Sequence[str]) -> str:
    """``SELECT Id, <fields> FROM <parent> WHERE Id IN (...)`` (ids quoted)."""
    if not ids:
        raise ValueError("parent_query needs at least one id")
    names = ["Id", *sorted(set(fields) - {"Id"})]
    return f"SELECT {', '.join(names)} FROM {parent} WHERE Id IN ({', '.join(soql_string(i) for i in ids)})"


def children_query(path: ParentPath, ids: Sequence[str], limit: int) -> str:
    """The children pointing to ``ids`` through ``path``'s reference field, at most ``limit``, by Id."""
    if not ids:
        raise ValueError("children_query needs at least one id")
    return (f"SELECT Id, {path.reference_field} FROM {path.child} WHERE {path.reference_field} IN "
            f"({', '.join(soql_string(i) for i in ids)}) ORDER BY Id LIMIT {int(limit)}")


def parent_rows(rows: Iterable[Mapping[str, Any]], fields: Iterable[str],
                types: ObjectTypes | None = None) -> dict[str, dict[str, FieldPyValue]]:
    """Query rows -> id -> field -> typed value (typed by the parent's describe when known)."""
    wanted = list(fields)
    out: dict[str, dict[str, FieldPyValue]] = {}
    for row in rows:
        sfid = canonical_sfid(str(row.get("Id") or ""))
        if not sfid:
            continue
        out[sfid] = {f: types.typed_value(f, row.get(f)) if types is not None else typed_value(None, row.get(f))
                     for f in wanted}
    return out


def child_updates(path: ParentPath, rows: Iterable[Mapping[str, Any]],
                  parents: Mapping[str, tuple[ChangeEvent, ParentValues]],
                  event_id: Callable[[ChangeEvent, str, str], str]) -> list[ChangeEvent]:
    """One ``update`` of ``path`` per child row (``Id``, reference field) whose parent is in ``parents``
    (parent id -> the parent's event, its fresh values).

    Commit time and position are the parent event's (the change that caused it); ``event_id(parent event,
    path, child sfid)`` gives each a deterministic id, so a replayed parent event re-emits the same envelopes."""
    out: list[ChangeEvent] = []
    for row in rows:
        sfid = canonical_sfid(str(row.get("Id") or ""))
        ref = canonical_sfid(str(row.get(path.reference_field) or ""))
        if not sfid or not ref or ref not in parents:
            continue
        parent_event, values = parents[ref]
        out.append(ChangeEvent(
            source=Source.SALESFORCE, object=path.child, entity=path.child, operation=Operation.UPDATE,
            commit_ts=parent_event.commit_ts, source_position=parent_event.source_position, sfid=sfid,
            changed_fields=[path.path], values={path.path: values.get(path.parent_field)},
            event_id=event_id(parent_event, path.path, sfid),
        ))
    return out


def chunked(ids: Iterable[str], size: int = IDS_PER_QUERY) -> list[list[str]]:
    items = sorted(ids)
    return [items[i:i + size] for i in range(0, len(items), size)]


class ParentCache:
    """(parent object, id) -> looked-up fields, least recently used dropped beyond ``size``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], dict[str, FieldPyValue]] = OrderedDict()

    def get(self, key: tuple[str, str], fields: Iterable[str]) -> dict[str, FieldPyValue] | None:
        """The entry when it holds every one of ``fields`` (marked recently used), else ``None``."""
        found = self._data.get(key)
        if found is None or any(f not in found for f in fields):
            return None
        self._data.move_to_end(key)
        return found

    def peek(self, key: tuple[str, str]) -> dict[str, FieldPyValue] | None:
        return self._data.get(key)

    def put(self, key: tuple[str, str], values: Mapping[str, FieldPyValue]) -> None:
        self._data[key] = {**self._data.get(key, {}), **values}
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ParentFields:
    """The CDC producer's adapter: resolves parent paths of envelopes, refreshes children when a captured parent
    changes. ``query(soql)`` runs a query (blocking; run in a thread), ``describe(name)`` describes a parent once
    (to type its values). Counts its queries in ``queries``."""

    def __init__(self, objects: Mapping[str, ObjectMapping], query: Callable[[str], list[dict[str, Any]]],
                 describe: Callable[[str], Mapping[str, Any]] | None = None, *, cache_size: int = CACHE_SIZE,
                 max_children: int = MAX_CHILDREN) -> None:
        self.objects = objects
        self.query = query
        self.describe = describe
        self.cache = ParentCache(cache_size)
        self.max_children = max_children
        self.paths: dict[str, list[ParentPath]] = {}
        self.parent_types: dict[str, ObjectTypes | None] = {}
        self._describes: dict[str, Mapping[str, Any]] = {}
        self.queries = 0

    def learn(self, name: str, describe: Mapping[str, Any]) -> None:
        """Take one mapped object's describe (the producer describes each at start)."""
        self._describes[name] = describe
        self.paths = parent_paths(self.objects, self._describes)
        if name in self.objects:
            self.parent_types[name] = ObjectTypes.from_describe(describe)

    @property
    def active(self) -> bool:
        return bool(self.paths)

    def _fields(self, parent: str) -> set[str]:
        return {p.parent_field for paths in self.paths.values() for p in paths if p.parent == parent}

    def _types(self, parent: str) -> ObjectTypes | None:
        if parent not in self.parent_types:
            types = None
            if self.describe is not None:
                try:
                    types = ObjectTypes.from_describe(self.describe(parent))
                except Exception as e:  # untyped values still work: text, numbers, booleans as JSON gives them
                    log.warning("cannot describe %s to type its parent fields: %s", parent, type(e).__name__)
            self.parent_types[parent] = types
        return self.parent_types[parent]

    def _lookup(self, parent: str, ids: Iterable[str]) -> dict[str, dict[str, FieldPyValue]]:
        fields = self._fields(parent)
        types = self._types(parent)
        found: dict[str, dict[str, FieldPyValue]] = {}
        for chunk in chunked(ids):
            self.queries += 1
            found.update(parent_rows(self.query(parent_query(parent, fields, chunk)), fields, types))
        return found

    def _resolve(self, sobject: str, events: list[ChangeEvent]) -> list[ChangeEvent]:
        paths = self.paths.get(sobject)
        if not paths:
            return events
        known: dict[tuple[str, str], ParentValues] = {}
        for parent, ids in parent_ids(events, paths).items():
            fields = self._fields(parent)
            missing = []
            for i in ids:
                hit = self.cache.get((parent, i), fields)
                if hit is None:
                    missing.append(i)
                else:
                    known[(parent, i)] = hit
            if missing:
                for sfid, values in self._lookup(parent, missing).items():
                    self.cache.put((parent, sfid), values)
                    known[(parent, sfid)] = values
        return merge(events, paths, known)

    def _children(self, sobject: str, events: list[ChangeEvent],
                  event_id: Callable[[ChangeEvent, str, str], str]) -> list[tuple[str, list[ChangeEvent]]]:
        paths = [p for ps in self.paths.values() for p in ps if p.parent == sobject]
        types = self._types(sobject)
        touched: dict[str, tuple[ChangeEvent, list[ParentPath]]] = {}
        for ev in events:
            hit = touched_paths(ev, paths, types)
            if hit and ev.sfid is not None:
                touched[ev.sfid] = (ev, hit)
        if not touched:
            return []
        fields = self._fields(sobject)
        found = self._lookup(sobject, touched)  # one query for the whole event (200 ids per query)
        changed: dict[ParentPath, dict[str, tuple[ChangeEvent, ParentValues]]] = {}
        for sfid, (ev, hit) in touched.items():
            fresh = found.get(sfid, dict.fromkeys(fields))
            before = self.cache.peek((sobject, sfid))
            self.cache.put((sobject, sfid), fresh)
            for p in hit:
                if before is None or before.get(p.parent_field) != fresh.get(p.parent_field):
                    changed.setdefault(p, {})[sfid] = (ev, fresh)  # else the children hold it already
        out: list[tuple[str, list[ChangeEvent]]] = []
        for p, parents in changed.items():
            updates: list[ChangeEvent] = []
            for chunk in chunked(parents):
                self.queries += 1
                rows = self.query(children_query(p, chunk, self.max_children))
                if len(rows) >= self.max_children:
                    log.warning("%d or more %s records point to %d changed %s record(s): only the first %d get "
                                "%s re-sent", self.max_children, p.child, len(chunk), sobject, self.max_children,
                                p.path)
                updates += child_updates(p, rows, parents, event_id)
            if updates:
                out.append((p.child, updates))
        return out

    async def resolve(self, sobject: str, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """``events`` of ``sobject`` with their parent paths resolved (unchanged when it maps none)."""
        if not self.paths.get(sobject):
            return events
        return await asyncio.to_thread(self._resolve, sobject, events)

    async def children(self, sobject: str, channel: str,
                       events: list[ChangeEvent]) -> list[tuple[str, list[ChangeEvent]]]:
        """For events (read on ``channel``) of a captured parent object that changed a looked-up field:
        (child object, its updates), each update named by :func:`child_event_id`."""
        if not any(p.parent == sobject for ps in self.paths.values() for p in ps):
            return []
        return await asyncio.to_thread(self._children, sobject, events, partial(child_event_id, channel))


_CHILD_NS = uuid.UUID("3f1d9a52-8c4e-4f0b-a6d2-7e5b9c1a0f34")


def child_event_id(channel: str, parent_event: ChangeEvent, path: str, sfid: str) -> str:
    """Deterministic id of a child update re-emitted for a parent event: the same parent event (replayed after a
    crash) re-emits the same envelopes."""
    return str(uuid.uuid5(_CHILD_NS, f"{channel}|{parent_event.source_position}|{parent_event.sfid}|{path}|{sfid}"))
